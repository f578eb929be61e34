"""Typed model configuration and the named presets.

A RAViT is a list of branches; each branch has its own config object
(`BranchConfig`), so any number of branches works. Everything shared by all
branches (patch size, embedding dimension, heads, MLP size, classes) lives in
`ModelConfig`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# The exit heads a branch may end in (docs/exit-heads.md): the paper's linear
# head on the CLS token, and the exit branches of Bakhtiarnia, Zhang and
# Iosifidis (2021). ravit.models.heads builds them, ravit.cost counts them.
EXIT_HEADS = ("linear", "mlp", "resmlp", "cnn-ignore", "cnn-add", "cnn-project", "vit", "mixer")


@dataclass(frozen=True)
class BranchConfig:
    """One branch: the side of the square image it sees, its encoder depth and exit head.

    depth 0 means the branch is absent: it has no exit and costs nothing.
    `head` names the exit head (one of EXIT_HEADS); configs written before
    heads were configurable have none and get the paper's linear head.
    """

    resolution: int
    depth: int
    head: str = "linear"


@dataclass(frozen=True)
class ModelConfig:
    image_size: int
    patch_size: int
    embed_dim: int
    num_heads: int
    mlp_dim: int
    num_classes: int
    branches: tuple[BranchConfig, ...]
    in_chans: int = 3
    dropout: float = 0.0
    # True: attention through torch's scaled_dot_product_attention. False:
    # the same arithmetic as explicit matmul + softmax (exactly counted by
    # torch's FLOP counter; faster on CPU at very short sequences).
    fused_attention: bool = True

    def __post_init__(self) -> None:
        # Accept lists (from YAML / JSON) but store an immutable tuple.
        branches = tuple(
            b if isinstance(b, BranchConfig) else BranchConfig(**b) for b in self.branches
        )
        object.__setattr__(self, "branches", branches)
        self.validate()

    # -- derived ---------------------------------------------------------
    @property
    def layers(self) -> str:
        """The paper's layer string, e.g. "1-3" or "2-0-3"."""
        return "-".join(str(b.depth) for b in self.branches)

    @property
    def present(self) -> tuple[int, ...]:
        """Indices of the branches with at least one layer (one exit each)."""
        return tuple(i for i, b in enumerate(self.branches) if b.depth > 0)

    @property
    def num_exits(self) -> int:
        return len(self.present)

    @property
    def exit_heads(self) -> tuple[str, ...]:
        """The head of every exit (present branches only), coarse to fine."""
        return tuple(self.branches[i].head for i in self.present)

    def num_patches(self, resolution: int) -> int:
        return (resolution // self.patch_size) ** 2

    # -- checks ----------------------------------------------------------
    def validate(self) -> None:
        _positive(
            image_size=self.image_size,
            patch_size=self.patch_size,
            embed_dim=self.embed_dim,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            num_classes=self.num_classes,
            in_chans=self.in_chans,
        )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.branches:
            raise ValueError("a model needs at least one branch")
        resolutions = [b.resolution for b in self.branches]
        for i, b in enumerate(self.branches):
            if b.depth < 0:
                raise ValueError(f"branch {i + 1}: depth must be >= 0, got {b.depth}")
            if b.head not in EXIT_HEADS:
                raise ValueError(
                    f"branch {i + 1}: unknown exit head {b.head!r}; expected one of "
                    f"{', '.join(EXIT_HEADS)}"
                )
            if b.resolution <= 0 or b.resolution % self.patch_size:
                raise ValueError(
                    f"branch {i + 1}: resolution {b.resolution} is not a positive multiple "
                    f"of the patch size {self.patch_size}"
                )
        if any(a >= b for a, b in zip(resolutions, resolutions[1:])):
            raise ValueError(f"branch resolutions must strictly increase, got {resolutions}")
        if resolutions[-1] != self.image_size:
            raise ValueError(
                f"the last branch must see the full image: resolution {resolutions[-1]} "
                f"!= image_size {self.image_size}"
            )
        if not self.present:
            raise ValueError(f"layers {self.layers!r}: at least one branch needs a layer")

    # -- serialisation ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if not isinstance(data, dict):
            raise TypeError(f"model config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown model config keys {unknown}; expected some of {sorted(known)}"
            )
        return cls(**data)


def _positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


# ---------------------------------------------------------------------------
# Presets: the paper's three settings, plus small ones for the demo and tests.
# Heads: 4 for D=128 (head dim 32, as the usual CIFAR ViTs), 12 for D=768 (ViT-B).


@dataclass(frozen=True)
class Preset:
    name: str
    image_size: int
    patch_size: int
    embed_dim: int
    num_heads: int
    mlp_dim: int
    num_classes: int
    resolutions: tuple[int, ...]  # the paper's branch resolutions
    default_layers: str
    in_chans: int = 3
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("cifar10", 32, 4, 128, 4, 512, 10, (16, 32), "1-3",
               description="CIFAR-10 (paper Table I)"),
        Preset("tiny-imagenet", 64, 4, 768, 12, 3072, 200, (16, 32, 64), "2-0-3",
               description="Tiny ImageNet (paper Table II)"),
        Preset("imagenet", 224, 16, 768, 12, 3072, 1000, (64, 128, 224), "1-1-8",
               description="ImageNet, ViT-B width (paper Table III)"),
        Preset("digits", 8, 2, 64, 4, 128, 10, (4, 8), "1-2", in_chans=1,
               description="scikit-learn's 8x8 digits: the offline demo"),
        Preset("tiny", 16, 4, 32, 2, 64, 10, (8, 16), "1-1",
               description="a very small model for tests"),
    )
}  # fmt: skip


def parse_layers(layers: str) -> tuple[int, ...]:
    """Parse the paper's layer string ("1-3", "2-0-3", "0-0-12")."""
    if not isinstance(layers, str):
        raise TypeError(f"layers must be a string such as '1-3', got {type(layers).__name__}")
    parts = layers.strip().split("-")
    if not all(p.isdigit() for p in parts):
        raise ValueError(
            f"malformed layer string {layers!r}: expected depths joined by '-', "
            "e.g. '1-3' or '2-0-3'"
        )
    depths = tuple(int(p) for p in parts)
    if not any(depths):
        raise ValueError(f"layers {layers!r}: at least one branch needs a layer")
    return depths


def default_resolutions(
    preset: Preset, num_branches: int, image_size: int | None = None, patch_size: int | None = None
) -> tuple[int, ...]:
    """The paper's resolutions when the branch count and image match, else halving.

    Halving from the full image, each side rounded down to a multiple of the
    patch size (the validation then rejects a pyramid that collapses).
    """
    size = image_size or preset.image_size
    p = patch_size or preset.patch_size
    if num_branches == len(preset.resolutions) and (size, p) == (
        preset.image_size,
        preset.patch_size,
    ):
        return preset.resolutions
    sides = [size >> (num_branches - 1 - i) for i in range(num_branches)]
    return tuple(max(p, s // p * p) for s in sides[:-1]) + (size,)


def parse_exit_heads(heads: str | Sequence[str] | None, depths: Sequence[int]) -> tuple[str, ...]:
    """One head name per branch from a user's list ("mlp,linear", ["vit"], None).

    None gives every exit the linear head; one name applies to every exit;
    otherwise one name per exit (the branches with layers, coarse to fine).
    Absent branches have no exit and keep "linear". Names are checked by
    ModelConfig.validate.
    """
    if heads is None:
        return ("linear",) * len(depths)
    names = heads.split(",") if isinstance(heads, str) else list(heads)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"exit heads must be names such as 'mlp,linear', got {heads!r}")
    names = [n.strip() for n in names]
    exits = sum(1 for d in depths if d > 0)
    if len(names) == 1:
        names = names * exits
    if len(names) != exits:
        raise ValueError(
            f"exit heads {','.join(names)!r}: {len(names)} names for {exits} exits; expected "
            "one name for every exit or one per exit, e.g. 'mlp,linear'"
        )
    it = iter(names)
    return tuple(next(it) if d > 0 else "linear" for d in depths)


def model_config(
    preset: str,
    layers: str | None = None,
    *,
    resolutions: tuple[int, ...] | list[int] | None = None,
    exit_heads: str | Sequence[str] | None = None,
    **overrides: Any,
) -> ModelConfig:
    """Build a `ModelConfig` from a preset name and a layer string.

    `overrides` replace preset fields (num_heads, mlp_dim, num_classes,
    embed_dim, in_chans, dropout, ...); `resolutions` gives one side per branch;
    `exit_heads` one head per exit (or one for all, see `parse_exit_heads`).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    depths = parse_layers(layers or p.default_layers)
    if resolutions is None:
        resolutions = default_resolutions(
            p, len(depths), overrides.get("image_size"), overrides.get("patch_size")
        )
    resolutions = tuple(int(r) for r in resolutions)
    if len(resolutions) != len(depths):
        raise ValueError(
            f"{len(resolutions)} resolutions {list(resolutions)} for {len(depths)} branches "
            f"(layers {layers!r}): expected one resolution per branch"
        )
    fields = dict(
        image_size=resolutions[-1],
        patch_size=p.patch_size,
        embed_dim=p.embed_dim,
        num_heads=p.num_heads,
        mlp_dim=p.mlp_dim,
        num_classes=p.num_classes,
        in_chans=p.in_chans,
    )
    known = {f.name for f in dataclasses.fields(ModelConfig)} - {"branches"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown model settings {unknown}; expected some of {sorted(known)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "embed_dim" in overrides and "mlp_dim" not in overrides:
        overrides["mlp_dim"] = 4 * overrides["embed_dim"]  # the standard 4D MLP
    fields.update(overrides)
    heads = parse_exit_heads(exit_heads, depths)
    branches = tuple(BranchConfig(r, d, h) for r, d, h in zip(resolutions, depths, heads))
    return ModelConfig(branches=branches, **fields)
