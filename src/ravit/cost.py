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

import math
from collections.abc import Callable, Sequence
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


@dataclass(frozen=True)
class HeadSpec:
    """What a head needs to know about its branch: widths, classes and the patch grid."""

    dim: int  # D
    num_classes: int  # C
    grid: int  # g: the patch tokens form a g x g grid
    mlp_dim: int  # H, the encoder's MLP width
    num_heads: int
    dropout: float = 0.0
    fused_attention: bool = True
    layer_norm_eps: float = 1e-5

    @classmethod
    def of(cls, cfg: ModelConfig, branch: int) -> HeadSpec:
        """The spec of the head of branch `branch` (0-based, among all branches)."""
        return cls(
            dim=cfg.embed_dim,
            num_classes=cfg.num_classes,
            grid=cfg.branches[branch].resolution // cfg.patch_size,
            mlp_dim=cfg.mlp_dim,
            num_heads=cfg.num_heads,
            dropout=cfg.dropout,
            fused_attention=cfg.fused_attention,
            layer_norm_eps=cfg.layer_norm_eps,
        )

    @property
    def tokens(self) -> int:
        """T = 1 + g^2: the CLS token and the patch tokens."""
        return 1 + self.grid * self.grid

    @property
    def conv_channels(self) -> int:
        """K, the convolutional heads' width: D / 4 (a quarter of the tokens' width)."""
        return max(1, self.dim // 4)

    @property
    def pooled(self) -> int:
        """p = ceil(g / 2): the side of the grid after the 2 x 2 max pool."""
        return math.ceil(self.grid / 2)

    @property
    def token_hidden(self) -> int:
        """S = D / 2, the mixer head's token-MLP width (Mixer-B's 384 for D = 768)."""
        return max(1, self.dim // 2)


def _conv_head_macs(spec: HeadSpec, extra_channels: int = 0) -> int:
    """The convolutional heads: a 3 x 3 convolution (C_in = D + extra -> K), counted at every
    output position, padding included, and the classifier on the pooled p x p grid."""
    g, k = spec.grid, spec.conv_channels
    conv = 9 * (spec.dim + extra_channels) * k * g * g
    return conv + k * spec.pooled * spec.pooled * spec.num_classes


# MACs per image of every exit head (ravit.models.heads defines them, docs/exit-heads.md
# derives these counts; tests hold each to torch's FLOP counter). T tokens, D wide,
# H the MLP width, C classes, g x g patch grid.
HEAD_MACS: dict[str, Callable[[HeadSpec], int]] = {
    "linear": lambda s: s.dim * s.num_classes,
    "mlp": lambda s: s.dim * s.mlp_dim + s.mlp_dim * s.num_classes,
    # token mixing T x T across D channels, the D -> H -> D MLP on T tokens, the classifier
    "resmlp": lambda s: (
        s.tokens**2 * s.dim + 2 * s.tokens * s.dim * s.mlp_dim + s.dim * s.num_classes
    ),
    "cnn-ignore": _conv_head_macs,
    "cnn-add": _conv_head_macs,
    # the CLS token projected to a g x g map (D -> g^2), one more input channel
    "cnn-project": lambda s: s.dim * s.grid**2 + _conv_head_macs(s, extra_channels=1),
    "vit": lambda s: layer_macs(s.tokens, s.dim, s.mlp_dim) + s.dim * s.num_classes,
    # the token MLP (T -> S -> T on D channels), the channel MLP, the classifier
    "mixer": lambda s: (
        2 * s.dim * s.tokens * s.token_hidden
        + 2 * s.tokens * s.dim * s.mlp_dim
        + s.dim * s.num_classes
    ),
}


def head_macs(name: str, spec: HeadSpec) -> int:
    """Analytic MACs per image of the head `name` on a branch described by `spec`."""
    if name not in HEAD_MACS:
        raise ValueError(f"unknown exit head {name!r}; expected one of {', '.join(HEAD_MACS)}")
    return HEAD_MACS[name](spec)


def head_flops(cfg: ModelConfig, branch: int) -> int:
    """FLOPs of the exit head of branch `branch` (0-based) as the cost model counts them.

    2 x the head's analytic MACs, except for the paper's linear head, which
    the paper neglects (D x classes MACs): counting it as 0 keeps the paper's
    figures exact.
    """
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
