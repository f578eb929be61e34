"""RAViT: Resolution-Adaptive Vision Transformer.

A multi-branch ViT that classifies an image coarse to fine, one resolution
per branch, hands the CLS token from branch to branch, and stops at the first
early exit whose prediction is confident enough.
"""

from ravit.checkpoint import load_model, save_checkpoint
from ravit.config import PRESETS, BranchConfig, ModelConfig, model_config, parse_layers
from ravit.cost import ModelCost, format_flops, layer_macs, model_cost
from ravit.models import EarlyExitOutput, RAViT, RAViTOutput

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "BranchConfig",
    "EarlyExitOutput",
    "ModelConfig",
    "ModelCost",
    "RAViT",
    "RAViTOutput",
    "format_flops",
    "layer_macs",
    "load_model",
    "model_config",
    "model_cost",
    "parse_layers",
    "save_checkpoint",
]
