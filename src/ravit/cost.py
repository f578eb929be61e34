"""The analytic cost model of the RAViT paper (SPEC.md, paper Eq. 2).

MACs of one pre-norm transformer layer on N tokens of width D with an MLP of
hidden size H:

    q, k, v and output projections   4 N D^2
    attention q k^T and attn @ v     2 N^2 D
    MLP                              2 N D H          (= 8 N D^2 for H = 4D)

    MAC_layer = 4 N D^2 + 2 N D H + 2 N^2 D = 12 N D^2 + 2 N^2 D   (H = 4D)

with N = patches + 1 (the CLS token). FLOPs = 2 x MACs. Like the paper, the
model cost is sum_i L_i MAC_layer(N_i, D): the patch embedding, the linear
exit heads, LayerNorm, GELU and softmax are neglected. The richer exit heads
(docs/exit-heads.md) are not negligible: their MACs count, so the cumulative
cost of exit i is the backbone up to branch i plus the heads of exits 1..i
(all of them run before the image leaves at exit i). `measured_extra_flops`
gives what a FLOP counter sees on top (patch embedding and linear heads), see
docs/cost-model.md.
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
    cumulative_flops: int  # everything up to and including this exit, its head included
    head: str = "linear"  # the exit head (ravit.config.EXIT_HEADS)
    head_flops: int = 0  # this exit's head; 0 for the linear head, which the paper neglects


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
                    "head": e.head,
                    "head_flops": e.head_flops,
                    "cumulative_flops": e.cumulative_flops,
                }
                for e in self.exits
            ],
        }


def head_flops(cfg: ModelConfig, branch: int) -> int:
    """FLOPs of the exit head of branch `branch` (0-based) as the cost model counts them.

    2 x the head's analytic MACs (ravit.models.heads), except for the paper's
    linear head, which the paper neglects (D x classes MACs): counting it as 0
    keeps the paper's figures exact.
    """
    # Imported here: ravit.models imports ravit.exits, which imports this module.
    from ravit.models.heads import HeadSpec, head_macs

    name = cfg.branches[branch].head
    return 0 if name == "linear" else 2 * head_macs(name, HeadSpec.of(cfg, branch))


def model_cost(cfg: ModelConfig) -> ModelCost:
    """Per-exit and cumulative FLOPs of a model (absent branches cost nothing).

    C_i = the backbone's layers up to branch i + the heads of exits 1..i.
    """
    exits = []
    total = 0
    for e, i in enumerate(cfg.present):
        b = cfg.branches[i]
        tokens = cfg.num_patches(b.resolution) + 1
        flops = 2 * b.depth * layer_macs(tokens, cfg.embed_dim, cfg.mlp_dim)
        head = head_flops(cfg, i)
        total += flops + head
        exits.append(ExitCost(e, i, b.resolution, b.depth, tokens, flops, total, b.head, head))
    return ModelCost(tuple(exits))


def measured_extra_flops(cfg: ModelConfig) -> int:
    """FLOPs a counter sees beyond `model_cost`, full path.

    Patch embedding (a P x P x C -> D projection per patch) and the linear
    exit heads (D -> classes), both counted as 2 x MACs; the other heads are
    in `model_cost` already. LayerNorm, GELU, softmax, pooling and the resize
    are not matmuls and are counted by neither.
    """
    d, p = cfg.embed_dim, cfg.patch_size
    extra = 0
    for i in cfg.present:
        n = cfg.num_patches(cfg.branches[i].resolution)
        extra += 2 * n * p * p * cfg.in_chans * d  # patch embedding
        if cfg.branches[i].head == "linear":
            extra += 2 * d * cfg.num_classes  # the linear head the paper neglects
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
