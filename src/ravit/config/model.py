"""Typed model configuration and the named presets.

A RAViT is a list of branches; each branch has its own config object
(`BranchConfig`), so any number of branches works. Everything shared by all
branches (patch size, embedding dimension, heads, MLP size, classes) lives in
`ModelConfig`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The exit heads a branch may end in (docs/exit-heads.md): the paper's linear
# head on the CLS token, and the exit branches of Bakhtiarnia, Zhang and
# Iosifidis (2021). ravit.models.heads builds them (its table is checked
# against this list), ravit.cost counts them.
EXIT_HEADS = ("linear", "mlp", "resmlp", "cnn-ignore", "cnn-add", "cnn-project", "vit", "mixer")


@dataclass(frozen=True)
class Setting:
    """One model hyper-parameter as presets, run-config sections and CLI flags see it.

    Read off the metadata of `ModelConfig`'s fields (and `BRANCH_SETTINGS`)
    by `model_settings`: this is the one place a setting is declared.
    """

    name: str
    type: Any  # the field's type, e.g. int
    default: Any  # the run-config section's default (None: from the preset or the data)
    help: str
    flag: str | None = None  # the command-line flag, None: a config key only
    preset: bool = False  # every preset gives a value
    section: bool = True  # a key of the run config's model section


def setting(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A `ModelConfig` field declared as a `Setting` (help, flag, preset, section)."""
    return field(default=default, metadata={"setting": meta})


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
    image_size: int = setting(help="side of the input image", preset=True, section=False)
    patch_size: int = setting(help="side of a square patch", preset=True)
    embed_dim: int = setting(help="embedding dimension D", flag="--embed-dim", preset=True)
    num_heads: int = setting(help="attention heads", flag="--heads", preset=True)
    mlp_dim: int = setting(
        help="MLP hidden size (default 4 x embed dim)", flag="--mlp-dim", preset=True
    )
    num_classes: int = setting(help="number of classes", flag="--num-classes", preset=True)
    branches: tuple[BranchConfig, ...]
    in_chans: int = setting(3, help="input channels (default: the data's)", preset=True)
    dropout: float = setting(0.0, help="dropout rate in the encoders and heads")
    # LayerNorm's epsilon everywhere (torch's default; pretrained ViTs use 1e-6 in timm,
    # 1e-12 in Hugging Face, which `ravit convert` carries over).
    layer_norm_eps: float = setting(1e-5, help="LayerNorm epsilon")
    # True: attention through torch's scaled_dot_product_attention. False:
    # the same arithmetic as explicit matmul + softmax (exactly counted by
    # torch's FLOP counter; faster on CPU at very short sequences).
    fused_attention: bool = setting(True, help="attention through scaled_dot_product_attention")

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

    def precision(self, amp: str, device, images: int):
        """What `amp` means for this model on `device`, `images` per call (ravit.devices)."""
        from ravit.devices import resolve_precision

        tokens = 1 + self.num_patches(max(b.resolution for b in self.branches))
        return resolve_precision(amp, device, width=self.embed_dim, images=images, tokens=tokens)

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
        if not 0.0 < self.layer_norm_eps < 1.0:
            raise ValueError(f"layer_norm_eps must be in (0, 1), got {self.layer_norm_eps}")
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
# The settings: read off ModelConfig's fields once, plus the branch settings.

# The model section's keys that describe the branches rather than ModelConfig
# fields: model_config's arguments. Order: as the section lists them.
BRANCH_SETTINGS = (
    Setting("preset", str, "cifar10", "model preset", flag="--preset"),
    Setting("layers", str | None, None, "layers per branch, e.g. 1-3, 2-0-3, 0-4 (plain ViT)",
            flag="--layers"),
    Setting("resolutions", list[int] | None, None, "one side per branch, e.g. 16,32",
            flag="--resolutions"),
    Setting("exit_heads", list[str] | None, None,
            "exit head per exit (or one for all), e.g. mlp,linear", flag="--exit-heads"),
)  # fmt: skip


def model_settings() -> tuple[Setting, ...]:
    """ModelConfig's hyper-parameters, in field order, from their declarations."""
    hints = typing.get_type_hints(ModelConfig)
    out = []
    for f in dataclasses.fields(ModelConfig):
        meta = f.metadata.get("setting")
        if meta is None:
            continue
        preset = meta.get("preset", False)
        default = None if preset or f.default is dataclasses.MISSING else f.default
        kind = hints[f.name] | None if preset else hints[f.name]
        out.append(Setting(f.name, kind, default, **meta))
    return tuple(out)


def section_settings() -> tuple[Setting, ...]:
    """The keys of a run config's model section, in order: preset, layers, resolutions,
    the ModelConfig settings a run may set, exit_heads."""
    first, last = BRANCH_SETTINGS[:3], BRANCH_SETTINGS[3:]
    return first + tuple(s for s in model_settings() if s.section) + last


# ---------------------------------------------------------------------------
# Presets: the paper's three settings, plus small ones for the demo and tests.
# Heads: 4 for D=128 (head dim 32, as the usual CIFAR ViTs), 12 for D=768 (ViT-B).


@dataclass(frozen=True)
class Preset:
    """A named model: its ModelConfig settings, the paper's resolutions and layers."""

    name: str
    settings: dict[str, Any]  # every preset setting of ModelConfig (model_settings)
    resolutions: tuple[int, ...]  # the paper's branch resolutions
    default_layers: str
    description: str = ""

    def __post_init__(self) -> None:
        wanted = [s.name for s in model_settings() if s.preset]
        given = {"in_chans": 3, **self.settings}
        if set(given) != set(wanted):
            raise ValueError(
                f"preset {self.name!r} sets {sorted(given)}; expected exactly {sorted(wanted)}"
            )
        object.__setattr__(self, "settings", {k: given[k] for k in wanted})

    def to_dict(self) -> dict[str, Any]:
        """What `ravit presets --json` prints for it."""
        return {
            **self.settings,
            "resolutions": list(self.resolutions),
            "default_layers": self.default_layers,
            "description": self.description,
        }


def _preset(name, description, resolutions, layers, size, patch, dim, heads, mlp, classes,
            chans=3) -> Preset:  # fmt: skip
    settings = dict(image_size=size, patch_size=patch, embed_dim=dim, num_heads=heads,
                    mlp_dim=mlp, num_classes=classes, in_chans=chans)  # fmt: skip
    return Preset(name, settings, resolutions, layers, description)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _preset("cifar10", "CIFAR-10 (paper Table I)", (16, 32), "1-3",
                32, 4, 128, 4, 512, 10),
        _preset("tiny-imagenet", "Tiny ImageNet (paper Table II)", (16, 32, 64), "2-0-3",
                64, 4, 768, 12, 3072, 200),
        _preset("imagenet", "ImageNet, ViT-B width (paper Table III)", (64, 128, 224), "1-1-8",
                224, 16, 768, 12, 3072, 1000),
        _preset("digits", "scikit-learn's 8x8 digits: the offline demo", (4, 8), "1-2",
                8, 2, 64, 4, 128, 10, chans=1),
        _preset("tiny", "a very small model for tests", (8, 16), "1-1",
                16, 4, 32, 2, 64, 10),
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
    size = image_size or preset.settings["image_size"]
    p = patch_size or preset.settings["patch_size"]
    if num_branches == len(preset.resolutions) and (size, p) == (
        preset.settings["image_size"],
        preset.settings["patch_size"],
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
    fields = {**p.settings, "image_size": resolutions[-1]}
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


def model_config_from(values: Mapping[str, Any]) -> ModelConfig:
    """`model_config` from model-section keys (`section_settings`): a run config's model
    section or the command line's model flags. None (or a missing key) means the preset's."""
    values = dict(values)
    layers = values.pop("layers", None)
    return model_config(
        values.pop("preset"),
        None if layers is None else str(layers),
        resolutions=values.pop("resolutions", None),
        exit_heads=values.pop("exit_heads", None),
        **values,
    )
