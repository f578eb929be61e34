"""The run folder: its layout and every file in it, in one part.

- `folder`: the layout (config, env, split, metrics, thresholds, distillation
  record), run discovery, and loading a run's trained model.
- `checkpoint`: the checkpoint format (the model config travels with the weights).
- `cache`: the cached exit logits of evaluations.
- `io`: atomic writes and JSON files.

Training, evaluation, the runtimes, export, reports and the CLI import this
part; it imports none of them.
"""

from ravit.runs.cache import ExitLogits
from ravit.runs.checkpoint import load_checkpoint, load_model, model_from_state, save_checkpoint
from ravit.runs.folder import find_runs, load_run_model, read_config, saved_calibration
from ravit.runs.io import atomic_write

__all__ = [
    "ExitLogits",
    "atomic_write",
    "find_runs",
    "load_checkpoint",
    "load_model",
    "load_run_model",
    "model_from_state",
    "read_config",
    "save_checkpoint",
    "saved_calibration",
]
