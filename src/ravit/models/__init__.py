"""The RAViT model: branches, exit heads and the output types."""

from ravit.models.branch import Branch
from ravit.models.heads import LinearHead
from ravit.models.ravit import EarlyExitOutput, RAViT, RAViTOutput

__all__ = ["Branch", "EarlyExitOutput", "LinearHead", "RAViT", "RAViTOutput"]
