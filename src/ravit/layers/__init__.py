"""Small building blocks of the transformer encoders."""

from ravit.layers.attention import Attention
from ravit.layers.block import Block
from ravit.layers.mlp import Mlp
from ravit.layers.patch_embed import PatchEmbed

__all__ = ["Attention", "Block", "Mlp", "PatchEmbed"]
