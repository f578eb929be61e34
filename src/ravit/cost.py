"""The analytic cost model of the RAViT paper (SPEC.md, paper Eq. 2).

MACs of one pre-norm transformer layer on N tokens of width D with an MLP of
hidden size H:

    q, k, v and output projections   4 N D^2
    attention q k^T and attn @ v     2 N^2 D
    MLP                              2 N D H          (= 8 N D^2 for H = 4D)

    MAC_layer = 4 N D^2 + 2 N D H + 2 N^2 D = 12 N D^2 + 2 N^2 D   (H = 4D)

with N = patches + 1 (the CLS token). FLOPs = 2 x MACs. Like the paper, the
model cost is sum_i L_i MAC_layer(N_i, D): the patch embedding, the exit heads,
LayerNorm, GELU and softmax are neglected. `measured_extra_flops` gives what a
FLOP counter sees on top (patch embedding and heads), see docs/cost-model.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ravit.config import ModelConfig


def layer_macs(num_tokens: int, dim: int, mlp_dim: int | None = None) -> int:
    """MACs of one transformer layer (paper Eq. 2; general MLP width)."""
    n, d = num_tokens, dim
    h = 4 * d if mlp_dim is None else mlp_dim
    return 4 * n * d * d + 2 * n * d * h + 2 * n * n * d


@dataclass(frozen=True)
class ExitCost:
    exit: int  # 0-based index among present exits
    branch: int  # 0-based index among all branches
    resolution: int
    layers: int
    tokens: int  # patches + CLS
    branch_flops: int  # this branch's layers alone
    cumulative_flops: int  # everything up to and including this exit


@dataclass(frozen=True)
class ModelCost:
    exits: tuple[ExitCost, ...]

    @property
    def total_flops(self) -> int:
        """The full path: every present branch, no early exit."""
        return self.exits[-1].cumulative_flops

    @property
    def cumulative_flops(self) -> list[int]:
        return [e.cumulative_flops for e in self.exits]

    def early_exit_flops(self, exit_counts: Sequence[int]) -> float:
        """Average FLOPs per image, C_EE = (1/n) sum_i n_i C_i."""
        if len(exit_counts) != len(self.exits):
            raise ValueError(
                f"got {len(exit_counts)} exit counts for {len(self.exits)} exits: "
                "expected one count per exit"
            )
        if any(c < 0 for c in exit_counts):
            raise ValueError(f"exit counts must be >= 0, got {list(exit_counts)}")
        n = sum(exit_counts)
        if n == 0:
            raise ValueError("exit counts are all zero: no image to average over")
        return sum(c * e.cumulative_flops for c, e in zip(exit_counts, self.exits)) / n

    def to_dict(self) -> dict:
        return {
            "total_flops": self.total_flops,
            "exits": [
                {
                    "exit": e.exit,
                    "branch": e.branch,
                    "resolution": e.resolution,
                    "layers": e.layers,
                    "tokens": e.tokens,
                    "branch_flops": e.branch_flops,
                    "cumulative_flops": e.cumulative_flops,
                }
                for e in self.exits
            ],
        }


def model_cost(cfg: ModelConfig) -> ModelCost:
    """Per-exit and cumulative FLOPs of a model (absent branches cost nothing)."""
    exits = []
    total = 0
    for e, i in enumerate(cfg.present):
        b = cfg.branches[i]
        tokens = cfg.num_patches(b.resolution) + 1
        flops = 2 * b.depth * layer_macs(tokens, cfg.embed_dim, cfg.mlp_dim)
        total += flops
        exits.append(ExitCost(e, i, b.resolution, b.depth, tokens, flops, total))
    return ModelCost(tuple(exits))


def measured_extra_flops(cfg: ModelConfig) -> int:
    """FLOPs a counter sees beyond the paper's formula, full path.

    Patch embedding (a P x P x C -> D projection per patch) and the linear
    exit heads (D -> classes), both counted as 2 x MACs. LayerNorm, GELU,
    softmax and the resize are not matmuls and are counted by neither.
    """
    d, p = cfg.embed_dim, cfg.patch_size
    extra = 0
    for i in cfg.present:
        n = cfg.num_patches(cfg.branches[i].resolution)
        extra += 2 * n * p * p * cfg.in_chans * d  # patch embedding
        extra += 2 * d * cfg.num_classes  # exit head
    return extra


def format_flops(flops: float) -> str:
    """The paper's way: M or G, *cut* (not rounded) to two decimals.

    89.999 M prints 89.99 M; 24.4379 G prints 24.43 G. Integer arithmetic for
    integer inputs, so no float error can tip a digit.
    """
    unit, name = (10**9, "G") if flops >= 10**9 else (10**6, "M")
    if isinstance(flops, int):
        hundredths = flops * 100 // unit
    else:
        hundredths = int(flops * 100 / unit + 1e-9)
    return f"{hundredths // 100}.{hundredths % 100:02d} {name}"
