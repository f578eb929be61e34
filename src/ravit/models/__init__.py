"""The RAViT model: branches, exit heads and the output types."""

from ravit.models.branch import Branch
from ravit.models.heads import HEADS, ExitHead, HeadSpec, LinearHead, build_head
from ravit.models.ravit import EarlyExitOutput, RAViT, RAViTOutput

__all__ = [
    "HEADS",
    "Branch",
    "EarlyExitOutput",
    "ExitHead",
    "HeadSpec",
    "LinearHead",
    "RAViT",
    "RAViTOutput",
    "build_head",
]
