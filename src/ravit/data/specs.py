"""``--data`` specs: ``NAME[:PATH][?key=value&key=value]`` to a data set.

Options: ``augment`` (every data set) overrides the default train
augmentation; ``size``, ``channels``, ``verify`` and ``skip_bad`` apply to the
image-file readers (see `DATASETS` and docs/data.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ravit.data.base import AUGMENTATIONS, ImageDataset
from ravit.data.cifar import CIFAR10, CIFAR100, read_cifar
from ravit.data.digits import read_digits
from ravit.data.folders import read_imagefolder, read_tiny_imagenet
from ravit.data.idx import (
    FASHION_CLASSES,
    FASHION_STATS,
    MNIST_CLASSES,
    MNIST_STATS,
    read_idx_dataset,
)

SPLITS = ("train", "test")


@dataclass(frozen=True)
class _Reader:
    read: Callable[..., ImageDataset]  # (path, split, **options) -> data set
    expects: str  # what PATH must hold ("" for a data set without files)
    options: tuple[str, ...] = ()  # reader options beyond "augment"


def _idx(name: str, classes: tuple[str, ...], stats: Any, augment: str) -> Callable:
    def read(path: Path, split: str) -> ImageDataset:
        return read_idx_dataset(
            path, split, name=name, classes=classes, stats=stats, augment=augment
        )

    return read


_READERS: dict[str, _Reader] = {
    "cifar10": _Reader(
        lambda path, split: read_cifar(path, split, CIFAR10),
        "cifar-10-batches-py/ (the official python version), or be that folder",
    ),
    "cifar100": _Reader(
        lambda path, split: read_cifar(path, split, CIFAR100),
        "cifar-100-python/ (the official python version), or be that folder",
    ),
    "fashion-mnist": _Reader(
        _idx("fashion-mnist", FASHION_CLASSES, FASHION_STATS, "crop-flip"),
        "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
    ),
    "mnist": _Reader(
        _idx("mnist", MNIST_CLASSES, MNIST_STATS, "crop"),
        "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
    ),
    "tiny-imagenet": _Reader(
        read_tiny_imagenet,
        "tiny-imagenet-200/ (wnids.txt, train/<wnid>/images/, val/), or be that folder",
        ("size", "verify", "skip_bad"),
    ),
    "imagefolder": _Reader(
        read_imagefolder,
        "train/<class>/<image> and val/<class>/<image> (or test/)",
        ("size", "channels", "verify", "skip_bad"),
    ),
    "digits": _Reader(lambda path, split: read_digits(split), ""),
}
DATASETS: tuple[str, ...] = tuple(_READERS)


def parse_data_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """``"name:PATH?k=v&k=v"`` -> (name, PATH or None, typed options).

    The name is matched case-insensitively; PATH is everything between the
    first ":" and the last "?" (so it may itself contain ":").
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"data spec must be a non-empty string like 'cifar10:PATH', got {spec!r}")
    head, _, query = spec.strip().rpartition("?") if "?" in spec else (spec.strip(), "", "")
    name, _, path = head.partition(":")
    name = name.strip().lower()
    if name not in _READERS:
        raise ValueError(f"unknown data set {name!r} in {spec!r}; known: {', '.join(DATASETS)}")
    allowed = ("augment", *_READERS[name].options)
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in allowed:
            raise ValueError(
                f"bad option {item!r} in data spec {spec!r}; expected key=value with key "
                f"one of {', '.join(allowed)}"
            )
        options[key] = _convert_option(key, value.strip(), spec)
    return name, (path.strip() or None), options


def _convert_option(key: str, value: str, spec: str) -> Any:
    if key == "augment":
        if value not in AUGMENTATIONS:
            raise ValueError(f"augment={value!r} in {spec!r}; expected one of {AUGMENTATIONS}")
        return value
    if key in ("verify", "skip_bad"):
        if value.lower() not in ("0", "1", "true", "false", "yes", "no"):
            raise ValueError(f"{key}={value!r} in {spec!r}; expected 0/1/true/false/yes/no")
        return value.lower() in ("1", "true", "yes")
    allowed = {"size": None, "channels": (1, 3)}[key]
    if not value.isdigit() or int(value) <= 0 or (allowed and int(value) not in allowed):
        what = "a positive integer" if allowed is None else f"one of {allowed}"
        raise ValueError(f"{key}={value!r} in {spec!r}; expected {what}")
    return int(value)


def load_data(spec: str, split: str) -> ImageDataset:
    """The `split` ("train" or "test") of the data set named by `spec`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    name, path, options = parse_data_spec(spec)
    reader = _READERS[name]
    augment = options.pop("augment", None)
    if not reader.expects:
        if path is not None:
            raise ValueError(f"{name} is bundled and takes no path, got {spec!r}")
        dataset = reader.read(None, split, **options)
    else:
        if path is None:
            raise ValueError(
                f"{name} needs a path: '{name}:PATH' where PATH holds {reader.expects}"
            )
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder}: no such folder; {name}:PATH expects PATH to hold {reader.expects}"
            )
        dataset = reader.read(folder, split, **options)
    if augment is not None:
        dataset.augment = augment
    return dataset
