"""MNIST and Fashion-MNIST in the IDX format (gzipped or plain).

An IDX file is a 4-byte magic number (two zero bytes, a type code: 0x08 for
unsigned bytes, and the number of dimensions), then each dimension as a
big-endian uint32, then the payload. Both the header and the payload size are
checked against each other.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ravit.data.base import InMemoryDataset, describe_error

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(i) for i in range(10))
MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_STATS = ((0.2860,), (0.3530,))
_UBYTE = 0x08
_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """A uint8 IDX file with `ndim` dimensions as an array of that shape."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != _UBYTE or raw[3] != ndim:
        raise ValueError(
            f"{path}: IDX magic number is {raw[:4].hex() or 'missing'}; expected "
            f"000008{ndim:02x} (unsigned bytes, {ndim} dimensions)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, expected {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = math.prod(dims)
    if len(raw) - header != size:
        raise ValueError(
            f"{path}: IDX payload is {len(raw) - header} bytes; expected {size} for dimensions "
            f"{' x '.join(map(str, dims))}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":  # not gzip: a plain IDX file
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(
            f"{path}: truncated or corrupt gzip ({describe_error(err)}); expected a gzipped "
            "IDX file"
        ) from None


def find_idx_file(root: str | Path, stem: str) -> Path:
    """`stem`(.gz) in `root` or in `root/raw` (torchvision's layout)."""
    root = Path(root)
    for folder in (root, root / "raw"):
        for name in (f"{stem}.gz", stem):
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(f"{root}: no {stem}[.gz]; expected the IDX files in {root}")


def read_idx_dataset(
    root: str | Path,
    split: str,
    *,
    name: str,
    classes: tuple[str, ...],
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    augment: str,
) -> InMemoryDataset:
    """An MNIST-style data set: `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`."""
    prefix = _PREFIX[split]
    image_path = find_idx_file(root, f"{prefix}-images-idx3-ubyte")
    label_path = find_idx_file(root, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(image_path, 3)
    labels = read_idx(label_path, 1).astype(np.int64)
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"{image_path}: images are {images.shape[1:]}; expected square images")
    if len(labels) != len(images):
        raise ValueError(
            f"{label_path}: {len(labels)} labels for the {len(images)} images of {image_path}; "
            "expected one label per image"
        )
    if len(labels) and labels.max() >= len(classes):
        raise ValueError(
            f"{label_path}: label {labels.max()} found; expected 0 to {len(classes) - 1}"
        )
    return InMemoryDataset(
        torch.from_numpy(images).unsqueeze(1),  # (N, 1, S, S)
        torch.from_numpy(labels),
        classes=classes,
        mean=stats[0],
        std=stats[1],
        augment=augment,
        name=name,
        source=str(image_path.parent),
    )
