from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _slow_fused(t: torch.Tensor) -> bool:
    """True where the fused kernel is the slow choice: bf16 on the CPU.

    torch 2.13's CPU flash-attention kernel runs its bf16 backward 4 to 6x
    slower than its fp32 one, while the explicit attention's two matmuls run
    3 to 5x faster in bf16 (AVX-512 BF16 / AMX). cifar10 ViT 0-4, batch 128,
    bf16 autocast, 2 threads: with the fused kernel its backward was 45 % of
    the step and the step ran 410 images/s; explicit, 847 images/s (fp32: 337;
    `benchmarks/profile_bf16_step.py [--before]`, issue 17). The softmax kernel
    computes in fp32 and rounds its output to bf16.
    """
    return t.dtype == torch.bfloat16 and t.device.type == "cpu"


class Attention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection.

    MACs on N tokens of width D: 4 N D^2 for the projections (q, k, v, out)
    and 2 N^2 D for the two attention matmuls (q k^T and attn v).
    """

    def __init__(self, *, dim: int, num_heads: int, dropout: float = 0.0, fused: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused = fused
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # (B, N, 3D) -> (B, N, 3, heads, head_dim)
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
        drop = self.dropout if self.training else 0.0
        if self.fused and not _slow_fused(qkv):
            # 3 x (B, N, heads, head_dim) -> 3 x (B, heads, N, head_dim): strided views,
            # which SDPA takes as they are. Unbinding dim 2 (not a permuted dim 0) lets the
            # backward stack the three gradients straight into the qkv output's layout:
            # one copy instead of a stack plus a permuted copy (about 3 % less time for
            # this layer's forward + backward at batch 256 on a 2-core CPU).
            q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:
            # (B, N, 3, heads, head_dim) -> 3 x (B, heads, N, head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
            attn = F.dropout(attn.softmax(dim=-1), p=drop, training=self.training)
            x = attn @ v  # (B, heads, N, head_dim)
        # (B, heads, N, head_dim) -> (B, N, D)
        x = x.transpose(1, 2).reshape(b, n, d)
        return self.proj_drop(self.proj(x))
