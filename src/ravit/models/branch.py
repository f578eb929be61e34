from __future__ import annotations

import torch
from torch import nn

from ravit.config import ModelConfig
from ravit.cost import HeadSpec
from ravit.layers import Block, PatchEmbed


def encoder_block(spec: HeadSpec) -> Block:
    """One transformer layer of a branch's encoder (the vit exit head adds one more)."""
    return Block(dim=spec.dim, num_heads=spec.num_heads, mlp_dim=spec.mlp_dim,
                 dropout=spec.dropout, fused_attention=spec.fused_attention,
                 eps=spec.layer_norm_eps)  # fmt: skip


class Branch(nn.Module):
    """One resolution's ViT encoder: patch + position embedding and L layers.

    The branch takes an incoming CLS token (B, D) instead of owning one: the
    model gives branch 1 its learned CLS token and every later branch the
    CLS token the previous branch produced.
    """

    def __init__(self, cfg: ModelConfig, index: int):
        super().__init__()
        branch = cfg.branches[index]
        self.index = index
        self.resolution = branch.resolution
        self.depth = branch.depth
        self.num_patches = cfg.num_patches(branch.resolution)
        self.patch_embed = PatchEmbed(
            patch_size=cfg.patch_size, in_chans=cfg.in_chans, dim=cfg.embed_dim
        )
        # One learned position per token, the CLS slot included (as in ViT).
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, cfg.embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.drop = nn.Dropout(cfg.dropout)
        spec = HeadSpec.of(cfg, index)
        self.blocks = nn.Sequential(*(encoder_block(spec) for _ in range(branch.depth)))

    def forward(self, image: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """image (B, C, s, s), cls (B, D) -> tokens (B, 1 + N, D), CLS first."""
        patches = self.patch_embed(image)  # (B, N, D)
        x = torch.cat([cls.unsqueeze(1), patches], dim=1) + self.pos_embed
        return self.blocks(self.drop(x))
