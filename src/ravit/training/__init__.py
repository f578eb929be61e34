"""Training: run config, loss, schedule, the loop and the run folder."""

from ravit.training.config import RunConfig, resolve_config
from ravit.training.loop import fit, select_device

__all__ = ["RunConfig", "fit", "resolve_config", "select_device"]
