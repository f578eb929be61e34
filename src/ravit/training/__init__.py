"""Training: loss, schedule, the loop (alone or under torchrun), distillation.

`resolve_config` (from `ravit.config`) is here too: it and `fit` are all a
training script needs.
"""

from ravit.config import RunConfig, resolve_config
from ravit.training.loop import fit

__all__ = ["RunConfig", "fit", "resolve_config"]
