"""RAViT: Resolution-Adaptive Vision Transformer.

A multi-branch ViT that classifies an image coarse to fine, one resolution
per branch, hands the CLS token from branch to branch, and stops at the first
early exit whose prediction is confident enough.

The names below are imported on first use (`ravit._lazy`): `import ravit`
does not import torch, so that the exported-model runtime
(`ravit.runtime.exported`) imports on a device without it.
"""

from ravit._lazy import lazy_exports
from ravit._version import __version__ as __version__

__all__ = lazy_exports(
    __name__,
    {
        "runs.checkpoint": ["load_model", "save_checkpoint"],
        "config": ["PRESETS", "BranchConfig", "ModelConfig", "model_config", "parse_layers"],
        "cost": ["ModelCost", "format_flops", "layer_macs", "model_cost"],
        "models": ["EarlyExitOutput", "RAViT", "RAViTOutput"],
    },
)
