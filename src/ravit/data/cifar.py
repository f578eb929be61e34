"""CIFAR-10 and CIFAR-100 in the official "python version" format.

Each batch file is a pickled dict: ``data`` a uint8 (N, 3072) array of rows
R(1024) G(1024) B(1024), row-major 32x32, and the labels as a list of ints.
N is taken from the arrays, never from the meta file's ``num_cases_per_batch``
(subsets keep the official meta file unchanged). Pickles are read with the
restricted unpickler of `safe_pickle`: no code from a file ever runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ravit.data.base import InMemoryDataset
from ravit.data.safe_pickle import load_pickle

PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarFormat:
    name: str
    folder: str  # the folder the official archive unpacks to
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    meta_file: str
    names_key: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


CIFAR10 = CifarFormat(
    name="cifar10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    label_key="labels",
    meta_file="batches.meta",
    names_key="label_names",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)
CIFAR100 = CifarFormat(
    name="cifar100",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    label_key="fine_labels",
    meta_file="meta",
    names_key="fine_label_names",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
)


def read_cifar(root: str | Path, split: str, fmt: CifarFormat) -> InMemoryDataset:
    """The `split` ("train" or "test") of a CIFAR data set under `root`."""
    folder = find_cifar_folder(root, fmt)
    files = fmt.train_files if split == "train" else fmt.test_files
    missing = [f for f in (*files, fmt.meta_file) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder}: missing {missing}; expected the official {fmt.name} python-version "
            f"files {[*files, fmt.meta_file]}"
        )
    classes = read_class_names(folder / fmt.meta_file, fmt)
    parts = [read_batch(folder / f, fmt) for f in files]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return InMemoryDataset(
        torch.from_numpy(data).reshape(-1, 3, 32, 32),  # rows are R, G, B planes
        torch.from_numpy(labels),
        classes=classes,
        mean=fmt.mean,
        std=fmt.std,
        augment="crop-flip",
        name=fmt.name,
        source=str(folder),
    )


def find_cifar_folder(root: str | Path, fmt: CifarFormat) -> Path:
    """`root/<official folder>` if it exists, else `root` itself if it holds the files."""
    root = Path(root)
    for folder in (root / fmt.folder, root):
        names = (*fmt.train_files, *fmt.test_files, fmt.meta_file)
        if any((folder / name).is_file() for name in names):
            return folder
    raise FileNotFoundError(
        f"{root}: no {fmt.name} files; expected {root / fmt.folder} (the official python "
        f"version, unpacked) or {root} itself holding {fmt.meta_file}, "
        f"{', '.join(fmt.train_files[:2])}{', ...' if len(fmt.train_files) > 2 else ''}"
    )


def read_batch(path: Path, fmt: CifarFormat) -> tuple[np.ndarray, np.ndarray]:
    """(data uint8 (N, 3072), labels int64 (N,)) of one batch file, checked."""
    expected = (
        f"a {fmt.name} python batch: a dict with 'data' (an N x {PIXELS} uint8 array) "
        f"and '{fmt.label_key}' (N ints)"
    )
    batch = _as_dict(load_pickle(path, expected), path, expected)
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(f"{path}: 'data' is {_describe(data)}; expected {expected}")
    if data.shape[1] != PIXELS:
        raise ValueError(
            f"{path}: 'data' is {data.shape[0]} x {data.shape[1]}; expected N x {PIXELS} "
            "(32 x 32 pixels, 3 channels)"
        )
    labels = _int_array(batch.get(fmt.label_key), path, f"'{fmt.label_key}'", expected)
    if len(labels) != len(data):
        raise ValueError(
            f"{path}: {len(labels)} labels for {len(data)} images; expected one label per image"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= fmt.num_classes):
        raise ValueError(
            f"{path}: labels span [{labels.min()}, {labels.max()}]; expected "
            f"[0, {fmt.num_classes - 1}]"
        )
    return data, labels


def read_class_names(path: Path, fmt: CifarFormat) -> list[str]:
    expected = f"a dict whose '{fmt.names_key}' lists {fmt.num_classes} class names"
    meta = _as_dict(load_pickle(path, expected), path, expected)
    names = meta.get(fmt.names_key)
    if not isinstance(names, list) or len(names) != fmt.num_classes:
        raise ValueError(f"{path}: '{fmt.names_key}' is {_describe(names)}; expected {expected}")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _as_dict(obj: Any, path: Path, expected: str) -> dict[str, Any]:
    """The unpickled dict with str keys (Python 2 pickles load with bytes keys)."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}; expected {expected}")
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _int_array(value: Any, path: Path, what: str, expected: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise ValueError(f"{path}: {what} is {_describe(value)}; expected {expected}")
    return array.astype(np.int64)


def _describe(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return f"a {type(value).__name__}"
