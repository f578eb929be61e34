"""Exit heads: what turns a branch's tokens into an exit's logits.

Every head takes the branch's output tokens (B, 1 + N, D), CLS first, the
N = g x g patch tokens row by row (g = resolution / patch size), and returns
logits (B, classes). The paper's head is `LinearHead`; the others are the
exit branches that Bakhtiarnia, Zhang and Iosifidis ("Multi-exit vision
transformer for dynamic inference", 2021) propose for ViT backbones, with the
sizes chosen in docs/exit-heads.md. Each head's analytic multiply-accumulate
count per image (matmuls and convolutions only, as the paper's layer
formula; LayerNorm, GELU, pooling and additions are not counted) is
`ravit.cost.HEAD_MACS`, which the cost model adds to the exit's cumulative
cost; `HeadSpec`, what a head knows of its branch, lives there too. Heads are
plain modules of the tokens alone, with every shape fixed at construction:
no data-dependent control flow, so that a branch and its head export as one
graph.
"""

from __future__ import annotations

import torch
from torch import nn

from ravit.config import EXIT_HEADS
from ravit.cost import HEAD_MACS, HeadSpec, head_macs
from ravit.layers import Mlp
from ravit.models.branch import encoder_block


class ExitHead(nn.Module):
    """Base of the exit heads: tokens (B, 1 + N, D) -> logits (B, C)."""

    name: str  # the head's name in ravit.config.EXIT_HEADS and ravit.cost.HEAD_MACS

    @classmethod
    def from_spec(cls, spec: HeadSpec) -> ExitHead:
        """Build the head for `spec`; heads whose constructor takes the spec need no override."""
        return cls(spec)


class LinearHead(ExitHead):
    """The paper's exit: one linear layer on the CLS token.

    The LayerNorm in front is the pre-norm encoder's final norm (as in ViT),
    kept in the head so that the CLS token handed to the next branch is the
    raw residual stream. Reads only token 0; MACs D x classes (neglected by
    the paper's cost model).
    """

    name = "linear"

    def __init__(self, *, dim: int, num_classes: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fc = nn.Linear(dim, num_classes)

    @classmethod
    def from_spec(cls, spec: HeadSpec) -> LinearHead:
        return cls(dim=spec.dim, num_classes=spec.num_classes, eps=spec.layer_norm_eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens: (B, 1 + N, D); the CLS token is token 0.
        return self.fc(self.norm(tokens[:, 0]))


class MlpHead(ExitHead):
    """MLP on the CLS token: LayerNorm, D -> H, GELU, H -> C (H the encoder's MLP width)."""

    name = "mlp"

    def __init__(self, spec: HeadSpec):
        super().__init__()
        self.norm = nn.LayerNorm(spec.dim, eps=spec.layer_norm_eps)
        self.fc1 = nn.Linear(spec.dim, spec.mlp_dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(spec.dropout)
        self.fc2 = nn.Linear(spec.mlp_dim, spec.num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(self.norm(tokens[:, 0])))))


class Affine(nn.Module):
    """ResMLP's per-channel normalisation: alpha * x + beta."""

    def __init__(self, dim: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * x + self.beta


class ResMlpHead(ExitHead):
    """One ResMLP layer (Touvron et al., 2021) over all T = 1 + N tokens, then average pooling.

    z = LN(tokens); z += s1 * (W_T Aff1(z)) with W_T a T x T linear map across
    tokens; z += s2 * MLP(Aff2(z)) with the D -> H -> D MLP; logits =
    Linear(mean over tokens of Aff3(z)). s1, s2: per-channel layer scales
    (initialised at 0.1, as in ResMLP).
    """

    name = "resmlp"

    def __init__(self, spec: HeadSpec):
        super().__init__()
        d = spec.dim
        self.norm = nn.LayerNorm(d, eps=spec.layer_norm_eps)
        self.aff1 = Affine(d)
        self.token_mix = nn.Linear(spec.tokens, spec.tokens)
        self.scale1 = nn.Parameter(torch.full((d,), 0.1))
        self.aff2 = Affine(d)
        self.mlp = Mlp(dim=d, hidden_dim=spec.mlp_dim, dropout=spec.dropout)
        self.scale2 = nn.Parameter(torch.full((d,), 0.1))
        self.aff3 = Affine(d)
        self.fc = nn.Linear(d, spec.num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        z = self.norm(tokens)  # (B, T, D)
        # (B, T, D) -> (B, D, T): mix across tokens -> back to (B, T, D)
        mixed = self.token_mix(self.aff1(z).transpose(1, 2)).transpose(1, 2)
        z = z + self.scale1 * mixed
        z = z + self.scale2 * self.mlp(self.aff2(z))
        return self.fc(self.aff3(z).mean(dim=1))


class _ConvHead(ExitHead):
    """The convolutional exits' shared stack on a g x g grid of C_in channels.

    3 x 3 convolution (C_in -> K, padding 1), GELU, 2 x 2 max pooling (ceil
    mode, so that odd grids keep their last row), flatten, Linear(K p^2 -> C).
    """

    extra_channels = 0  # channels added to the D of the patch grid

    def __init__(self, spec: HeadSpec):
        super().__init__()
        self.grid = spec.grid
        self.norm = nn.LayerNorm(spec.dim, eps=spec.layer_norm_eps)
        k = spec.conv_channels
        self.conv = nn.Conv2d(spec.dim + self.extra_channels, k, kernel_size=3, padding=1)
        self.act = nn.GELU()
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.fc = nn.Linear(k * spec.pooled * spec.pooled, spec.num_classes)

    def to_grid(self, patches: torch.Tensor) -> torch.Tensor:
        b, n, d = patches.shape
        # (B, N, D) -> (B, D, N) -> (B, D, g, g): token r * g + c is grid cell (r, c)
        return patches.transpose(1, 2).reshape(b, d, self.grid, self.grid)

    def classify(self, grid: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv(grid)))  # (B, K, p, p)
        return self.fc(x.flatten(1))  # (B, K p^2) -> (B, C)


class CnnIgnoreHead(_ConvHead):
    """Convolutions over the patch tokens reshaped to a g x g grid; the CLS token is ignored."""

    name = "cnn-ignore"

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        z = self.norm(tokens)
        return self.classify(self.to_grid(z[:, 1:]))


class CnnAddHead(_ConvHead):
    """Convolutions over the patch grid with the CLS token added to every patch token."""

    name = "cnn-add"

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        z = self.norm(tokens)
        return self.classify(self.to_grid(z[:, 1:] + z[:, :1]))  # (B, N, D) + (B, 1, D)


class CnnProjectHead(_ConvHead):
    """Convolutions over the patch grid plus one channel projected from the CLS token.

    The CLS token is mapped by a D -> g^2 linear layer to a g x g map and
    concatenated to the D channels of the grid, so the convolution reads
    D + 1 channels.
    """

    name = "cnn-project"

    extra_channels = 1

    def __init__(self, spec: HeadSpec):
        super().__init__(spec)
        self.project = nn.Linear(spec.dim, spec.grid * spec.grid)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        z = self.norm(tokens)
        b = z.shape[0]
        cls_map = self.project(z[:, 0]).reshape(b, 1, self.grid, self.grid)  # (B, 1, g, g)
        return self.classify(torch.cat([self.to_grid(z[:, 1:]), cls_map], dim=1))


class VitHead(ExitHead):
    """One more transformer layer (the encoder's own kind) over all tokens, then the linear
    head on its CLS token."""

    name = "vit"

    def __init__(self, spec: HeadSpec):
        super().__init__()
        self.block = encoder_block(spec)
        self.head = LinearHead.from_spec(spec)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(tokens))


class MixerHead(ExitHead):
    """One MLP-Mixer layer (Tolstikhin et al., 2021) over all T = 1 + N tokens, then average
    pooling.

    x += TokenMLP(LN(x)) across tokens (T -> S -> T, S = D / 2, as Mixer-B's
    384 for D = 768); x += ChannelMLP(LN(x)) (D -> H -> D); logits =
    Linear(mean over tokens of LN(x)).
    """

    name = "mixer"

    def __init__(self, spec: HeadSpec):
        super().__init__()
        d = spec.dim
        self.norm1 = nn.LayerNorm(d, eps=spec.layer_norm_eps)
        self.token_mlp = Mlp(dim=spec.tokens, hidden_dim=spec.token_hidden, dropout=spec.dropout)
        self.norm2 = nn.LayerNorm(d, eps=spec.layer_norm_eps)
        self.channel_mlp = Mlp(dim=d, hidden_dim=spec.mlp_dim, dropout=spec.dropout)
        self.norm = nn.LayerNorm(d, eps=spec.layer_norm_eps)
        self.fc = nn.Linear(d, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, D) -> (B, D, T): the token MLP mixes across tokens -> back to (B, T, D)
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        x = x + self.channel_mlp(self.norm2(x))
        return self.fc(self.norm(x).mean(dim=1))


# Name -> class, in the order of ravit.config.EXIT_HEADS (the torch-free list that
# configs are checked against; the import fails if the two ever part).
HEADS: dict[str, type[ExitHead]] = {
    cls.name: cls
    for cls in (LinearHead, MlpHead, ResMlpHead, CnnIgnoreHead, CnnAddHead, CnnProjectHead,
                VitHead, MixerHead)
}  # fmt: skip
if tuple(HEADS) != EXIT_HEADS or tuple(HEAD_MACS) != EXIT_HEADS:
    raise ImportError(f"exit heads {list(HEADS)} and their MACs {list(HEAD_MACS)} are not "
                      f"ravit.config.EXIT_HEADS {list(EXIT_HEADS)}")  # fmt: skip


def build_head(name: str, spec: HeadSpec) -> ExitHead:
    """The exit head called `name` (one of ravit.config.EXIT_HEADS) for a branch."""
    if name not in HEADS:
        raise ValueError(f"unknown exit head {name!r}; expected one of {', '.join(HEADS)}")
    return HEADS[name].from_spec(spec)


__all__ = ["HEADS", "ExitHead", "HeadSpec", "LinearHead", "build_head", "head_macs"]
