"""Run configuration: defaults < YAML file < key=value overrides.

A run is described by three sections, each a typed dataclass:

    model: which preset, layer string and overrides (becomes a ModelConfig)
    data:  the --data spec and the validation split
    train: optimiser, schedule, loss weights, precision, seed

Unknown keys are rejected at every level, with the known keys named.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ravit.config.model import ModelConfig, model_config_from, section_settings

# The model section: preset, layers, resolutions, exit heads and the ModelConfig
# settings a run may set, all read off their one declaration (config.model);
# None means the preset's value (or, for classes and channels, the data's).
ModelSection = dataclasses.make_dataclass(
    "ModelSection",
    [(s.name, s.type, field(default=s.default)) for s in section_settings()],
)
ModelSection.__module__ = __name__
ModelSection.__doc__ = "The run config's model section (see ravit.config.model.section_settings)."


@dataclass
class DataSection:
    spec: str = "digits"
    # Validation split carved from the training set: a count or a fraction.
    val_size: float = 0.1
    # Training images kept after carving val (a count or a fraction; None: all):
    # a seeded random subset, to scale a big data set to a small compute budget.
    train_size: float | None = None
    augment: str | None = None  # the data set's default when None
    eval_batch_size: int = 512
    # DataLoader worker processes decoding image files (file-backed data only;
    # None: one per CPU core of this process's share, at most 8, see docs/distributed.md).
    workers: int | None = None
    prefetch: int = 2  # batches each worker decodes ahead


@dataclass
class TrainSection:
    epochs: int = 10
    # The global batch of one optimiser step, over all processes and accumulation
    # steps: each process runs batch_size / (world size x grad_accum) images at once.
    batch_size: int = 256
    grad_accum: int = 1  # micro-batches accumulated per optimiser step (per process)
    lr: float = 1e-3
    # Linear LR scaling: when set, lr is the rate for a batch of this many images
    # and the run uses lr x batch_size / lr_base_batch (None: lr as given).
    lr_base_batch: int | None = None
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    # One weight per exit; None = 1.0 for every exit (see docs/training.md).
    exit_weights: list[float] | None = None
    label_smoothing: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    amp: str = "auto"  # auto | off | bf16 | fp16
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    compile: bool = False  # torch.compile the model for training
    # A run folder whose weights start the model (`ravit convert`, or any run of the same
    # model): fine-tuning. None: a fresh initialisation.
    init: str | None = None

    def peak_lr(self) -> float:
        """The learning rate after warm-up: lr, linearly scaled when lr_base_batch is set."""
        if self.lr_base_batch is None:
            return self.lr
        return self.lr * self.batch_size / self.lr_base_batch


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        t = self.train
        _check(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
        _check(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
        _check(t.lr > 0, f"train.lr must be > 0, got {t.lr}")
        _check(t.grad_accum >= 1, f"train.grad_accum must be >= 1, got {t.grad_accum}")
        base = t.lr_base_batch
        _check(base is None or base >= 1, f"train.lr_base_batch must be >= 1 (or null), got {base}")
        _check(
            0 <= t.min_lr <= t.peak_lr(),
            f"train.min_lr must be in [0, lr], got {t.min_lr} with lr {t.peak_lr():g}",
        )
        _check(t.warmup_epochs >= 0, f"train.warmup_epochs must be >= 0, got {t.warmup_epochs}")
        _check(0 <= t.label_smoothing < 1, "train.label_smoothing must be in [0, 1)")
        _check(t.grad_clip >= 0, f"train.grad_clip must be >= 0, got {t.grad_clip}")
        _check(len(t.betas) == 2, f"train.betas must hold two numbers, got {t.betas}")
        _check(t.amp in AMP_MODES, f"train.amp must be one of {AMP_MODES}, got {t.amp!r}")
        _check(self.data.val_size >= 0, f"data.val_size must be >= 0, got {self.data.val_size}")
        d = self.data
        _check(d.workers is None or d.workers >= 0, f"data.workers must be >= 0, got {d.workers}")
        _check(d.prefetch >= 1, f"data.prefetch must be >= 1, got {d.prefetch}")
        ts = self.data.train_size
        _check(ts is None or ts > 0, f"data.train_size must be > 0 (or null), got {ts}")
        if t.exit_weights is not None:
            _check(
                all(w >= 0 for w in t.exit_weights) and any(w > 0 for w in t.exit_weights),
                f"train.exit_weights must be >= 0 and not all 0, got {t.exit_weights}",
            )


AMP_MODES = ("auto", "off", "bf16", "fp16")
SECTIONS = {"model": ModelSection, "data": DataSection, "train": TrainSection}


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false; yes/no/on/off stay strings (train.amp=off)."""


_BOOL = "tag:yaml.org,2002:bool"
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader: builds no objects


def read_yaml_file(path: str | Path, what: str = "config file") -> Any:
    """A YAML file's content, read as run configs are (YAML 1.2); one-line errors name `what`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{what} {path} is not valid YAML: {err}") from None


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def parse_override(text: str) -> tuple[str, str, Any]:
    """'train.lr=3e-4' -> ('train', 'lr', 0.0003); values are parsed as YAML."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise ValueError(f"override {text!r}: expected section.key=value, e.g. train.lr=3e-4")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ValueError(f"override {text!r}: the value is not valid YAML") from None
    return section, name, value


def _coerce(cls: type, name: str, value: Any, origin: str) -> Any:
    """Give a YAML value its field's type: '5e-4' (a string to YAML 1.1) -> 0.0005."""
    hint = typing.get_type_hints(cls)[name]
    is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = typing.get_args(hint) if is_union else ()
    if value is None:
        if type(None) in args:
            return None
        raise ValueError(f"{origin}: {cls.__name__}.{name} may not be empty")
    base = next(a for a in args if a is not type(None)) if is_union else hint
    origin_type = typing.get_origin(base) or base
    try:
        if origin_type is list:
            (item,) = typing.get_args(base)
            items = value if isinstance(value, (list, tuple)) else str(value).split(",")
            return [item(v) for v in items]
        if origin_type is bool:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if origin_type is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return origin_type(value)
    except (TypeError, ValueError):
        expected = "list" if origin_type is list else getattr(base, "__name__", str(base))
        raise ValueError(f"{origin}: {name}={value!r} is not a valid {expected}") from None


def _merge(base: dict[str, dict], updates: dict, origin: str) -> None:
    if not isinstance(updates, dict):
        raise ValueError(f"{origin}: expected a mapping of sections, got {type(updates).__name__}")
    for section, values in updates.items():
        if section not in SECTIONS:
            raise ValueError(f"{origin}: unknown section {section!r}; expected {sorted(SECTIONS)}")
        if not isinstance(values, dict):
            raise ValueError(f"{origin}: section {section!r} must be a mapping")
        known = {f.name for f in dataclasses.fields(SECTIONS[section])}
        for name, value in values.items():
            if name not in known:
                raise ValueError(
                    f"{origin}: unknown key {section}.{name}; expected one of {sorted(known)}"
                )
            base[section][name] = _coerce(SECTIONS[section], name, value, origin)


def resolve_config(
    yaml_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict | None = None,
    flags: dict | None = None,
) -> RunConfig:
    """Layer defaults (or `base`, a saved run's config) < YAML file < flags < overrides.

    `flags` are command-line shorthands ({"train": {"epochs": 3}}) and
    `overrides` "section.key=value" strings; both are checked like the file.
    """
    layered = RunConfig().to_dict()
    if base is not None:
        _merge(layered, base, "saved config")
    if yaml_file is not None:
        _merge(layered, read_yaml_file(yaml_file) or {}, str(yaml_file))
    if flags:
        _merge(layered, flags, "command line")
    for text in overrides:
        section, name, value = parse_override(text)
        _merge(layered, {section: {name: value}}, f"override {text!r}")
    try:
        cfg = RunConfig(**{name: SECTIONS[name](**vals) for name, vals in layered.items()})
    except TypeError as err:
        raise ValueError(f"bad run config: {err}") from None
    cfg.validate()
    return cfg


def build_model_config(section, *, num_classes: int, in_chans: int) -> ModelConfig:
    """The ModelConfig of a run: preset + layers + overrides, classes/channels from the data."""
    if section.num_classes is not None and section.num_classes != num_classes:
        raise ValueError(
            f"model.num_classes is {section.num_classes} but the data has {num_classes} classes"
        )
    values = dataclasses.asdict(section)
    values.update(num_classes=num_classes, in_chans=section.in_chans or in_chans)
    return model_config_from(values)
