"""The data set types: uint8 images in memory, or image files decoded per batch.

Every data set hands out square uint8 batches (B, C, S, S) with int64 labels;
augmentation and normalisation happen later, batched, in `transforms.py`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image

from ravit.errors import describe_error  # also imported from here by the data readers

# Decoding errors Pillow raises for a file that is not a (complete) image.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
AUGMENTATIONS = ("crop-flip", "crop", "rrc-flip", "none")


class BadImageError(ValueError):
    """An image file that does not decode; `path` names it."""

    def __init__(self, message: str, path: str | os.PathLike = ""):
        self.path = str(path)  # (the DataLoader re-raises a worker's error from its message)
        super().__init__(message)


class ImageDataset:
    """Labels and metadata shared by every data set; subclasses supply the pixels.

    Attributes: ``labels`` (N,) int64, ``classes``, ``channels``, ``image_size``
    (native side of the square images), ``mean``/``std`` (one per channel, in
    [0, 1] units), ``augment`` (default train augmentation), ``name``, ``source``.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        *,
        classes: Sequence[str],
        channels: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: str,
        name: str,
        source: str,
    ) -> None:
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        classes = [str(c) for c in classes]
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise ValueError(
                f"{source}: labels span [{int(labels.min())}, {int(labels.max())}], "
                f"expected [0, {len(classes) - 1}] for {len(classes)} classes"
            )
        if channels not in (1, 3):
            raise ValueError(f"{source}: channels must be 1 or 3, got {channels}")
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise ValueError(
                f"{source}: mean {tuple(mean)} / std {tuple(std)} must have {channels} "
                "entries each, std > 0"
            )
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
        self.labels = labels
        self.classes = classes
        self.channels = int(channels)
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.augment = augment
        self.name = name
        self.source = source

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.labels.numel())

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        images, labels = self.get_batch(torch.tensor([i]))
        return images[0], int(labels[0])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n={len(self)}, "
            f"classes={self.num_classes}, shape=({self.channels}, {self.image_size}, "
            f"{self.image_size}), source={self.source!r})"
        )

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B, C, S, S) and int64 labels (B,) at `indices`."""
        raise NotImplementedError

    def subset(self, indices: torch.Tensor) -> ImageDataset:
        """A data set of the images at `indices`, with the same metadata."""
        raise NotImplementedError

    def _index(self, indices: Any) -> torch.Tensor:
        """`indices` as a (B,) int64 CPU tensor, negative ones wrapped, bounds checked."""
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1).cpu()
        n = len(self)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(
                f"indices span [{int(idx.min())}, {int(idx.max())}], "
                f"expected [-{n}, {n - 1}] for a data set of {n} images"
            )
        return torch.where(idx < 0, idx + n, idx)

    def _meta(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "mean": self.mean,
            "std": self.std,
            "augment": self.augment,
            "name": self.name,
            "source": self.source,
        }


class InMemoryDataset(ImageDataset):
    """All images in one uint8 (N, C, S, S) CPU tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, **meta: Any) -> None:
        source = meta.get("source", "images")
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[2] != images.shape[3]:
            raise ValueError(
                f"{source}: images must be a uint8 (N, C, S, S) tensor, got "
                f"{images.dtype} {tuple(images.shape)}"
            )
        if images.shape[0] != torch.as_tensor(labels).numel():
            raise ValueError(
                f"{source}: {images.shape[0]} images but {torch.as_tensor(labels).numel()} labels"
            )
        super().__init__(labels, channels=images.shape[1], image_size=images.shape[2], **meta)
        self.images = images.contiguous()

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self._index(indices)
        return self.images[idx], self.labels[idx]

    def subset(self, indices: torch.Tensor) -> InMemoryDataset:
        idx = self._index(indices)
        return InMemoryDataset(self.images[idx], self.labels[idx], **self._meta())


class FolderDataset(ImageDataset):
    """Image files decoded with Pillow when a batch is asked for.

    Each file is converted to RGB (or L for one channel), its shorter side
    resized to `image_size` (antialiased bilinear) and centre cropped. A batch
    decodes on a small thread pool (Pillow releases the GIL while decoding);
    `__getitem__` decodes one image, for a torch DataLoader with workers.
    A file that does not decode raises `BadImageError` (a ValueError) naming
    it; with ``skip_bad=True`` it is left out of its batch instead (the batch
    is smaller) and recorded in `failed` as "path: reason" (`__getitem__`
    then returns the reason string in place of the image, for the loader's
    collate to drop). `dropped` lists the files the reader left out at
    indexing time (``skip_bad=1``), as "path: reason".
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        labels: torch.Tensor,
        *,
        channels: int = 3,
        image_size: int,
        skip_bad: bool = False,
        dropped: Sequence[str] = (),
        **meta: Any,
    ) -> None:
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        if len(paths) != labels.numel():
            raise ValueError(
                f"{meta.get('source', 'files')}: {len(paths)} files but {labels.numel()} labels"
            )
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        super().__init__(labels, channels=channels, image_size=image_size, **meta)
        self.paths = [str(p) for p in paths]
        self.skip_bad = bool(skip_bad)
        self.dropped = list(dropped)
        self.failed: list[str] = []  # "path: reason" of files that failed to decode (skip_bad)

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self._index(indices)
        paths = [self.paths[i] for i in idx.tolist()]
        if len(paths) > 1:
            arrays = list(_pool().map(self._decode, paths))
        else:
            arrays = [self._decode(p) for p in paths]
        labels = self.labels[idx]
        if self.skip_bad:
            keep = [i for i, a in enumerate(arrays) if not isinstance(a, str)]
            self.failed += [a for a in arrays if isinstance(a, str)]
            arrays, labels = [arrays[i] for i in keep], labels[keep]
        images = torch.from_numpy(np.stack(arrays)) if arrays else self.empty_batch()
        return images, labels

    def empty_batch(self) -> torch.Tensor:
        return torch.empty((0, self.channels, self.image_size, self.image_size), dtype=torch.uint8)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | str, int]:
        (j,) = self._index([i]).tolist()
        array = self._decode(self.paths[j])
        image = array if isinstance(array, str) else torch.from_numpy(array)
        return image, int(self.labels[j])

    def subset(self, indices: torch.Tensor) -> FolderDataset:
        idx = self._index(indices)
        return FolderDataset(
            [self.paths[i] for i in idx.tolist()],
            self.labels[idx],
            channels=self.channels,
            image_size=self.image_size,
            skip_bad=self.skip_bad,
            dropped=self.dropped,
            **self._meta(),
        )

    def _decode(self, path: str) -> np.ndarray | str:
        """The image, or (skip_bad) "path: reason" when it does not decode."""
        try:
            return decode_image(path, self.channels, self.image_size)
        except BadImageError as err:
            if not self.skip_bad:
                raise
            return str(err)


def decode_image(path: str | os.PathLike, channels: int, size: int) -> np.ndarray:
    """One image file as a uint8 (C, size, size) array: shorter side resize + centre crop."""
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            w, h = im.size
            if (w, h) != (size, size):
                scale = size / min(w, h)
                new = (max(size, round(w * scale)), max(size, round(h * scale)))
                # Pillow's resize widens the filter when shrinking: antialiased.
                im = im.resize(new, Image.Resampling.BILINEAR)
                left, top = (new[0] - size) // 2, (new[1] - size) // 2
                im = im.crop((left, top, left + size, top + size))
            array = np.array(im, dtype=np.uint8)  # a writable copy
    except _PIL_ERRORS as err:
        raise BadImageError(
            f"{path}: not a readable image ({describe_error(err)}); "
            "expected a JPEG, PNG, BMP or WebP file",
            path,
        ) from None
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


def find_bad_images(paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """{path: "path: not an image (reason)"} of every file whose header Pillow does not
    recognise, in order.

    Only the header is read (cheap), so a file truncated after its header is
    found later, when its batch is decoded.
    """
    bad = {}
    for path in paths:
        try:
            with Image.open(path):
                pass
        except _PIL_ERRORS as err:
            bad[str(path)] = f"{path}: not an image ({type(err).__name__})"
    return bad


def check_image_headers(paths: Sequence[str | os.PathLike]) -> None:
    """Raise ValueError naming every file whose header Pillow does not recognise, and the count."""
    bad = find_bad_images(paths)
    if bad:
        raise ValueError(bad_images_message(list(bad.values()), len(paths)))


def bad_images_message(bad: Sequence[str], total: int) -> str:
    """One line naming every bad file ("path: reason"), the count, and the way out."""
    return (
        f"{len(bad)} of {total} image files do not read: {'; '.join(bad)}; expected JPEG, "
        "PNG, BMP or WebP files: replace or remove them, or add skip_bad=1 to the data spec "
        "to leave them out"
    )


_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """A process-wide decoding pool, rebuilt after a fork (threads do not survive one)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            workers = min(8, os.cpu_count() or 1)
            _POOL = (os.getpid(), ThreadPoolExecutor(workers, thread_name_prefix="ravit-decode"))
        return _POOL[1]


def train_val_split(
    n: int, val_size: int | float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split range(n) into sorted (train, val) index tensors, deterministically.

    `val_size` is a count (int, 0 <= val_size < n) or a fraction (float in
    [0, 1), rounded to the nearest count). The same (n, val_size, seed) gives
    the same split on every machine (a seeded torch.Generator).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise TypeError(f"val_size must be an int count or a float fraction, got {val_size!r}")
    if isinstance(val_size, float):
        if not 0.0 <= val_size < 1.0:
            raise ValueError(f"val_size fraction must be in [0, 1), got {val_size}")
        count = round(val_size * n)
    else:
        count = val_size
    if not 0 <= count < n:
        raise ValueError(f"val_size must leave at least one training image: {count} of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return perm[count:].sort().values, perm[:count].sort().values


def split_indices(n: int, val_size: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`train_val_split` for a run config's data.val_size: >= 1 a count, below 1 a fraction."""
    return train_val_split(n, int(val_size) if val_size >= 1 else float(val_size), seed)


def data_info(data: ImageDataset, spec: str) -> dict:
    """What a run records of its data (the checkpoint's data section): enough to read images
    as it did (classes, channels, size, normalisation) without the data set."""
    return {
        "spec": spec,
        "name": data.name,
        "classes": list(data.classes),
        "channels": data.channels,
        "image_size": data.image_size,
        "mean": list(data.mean),
        "std": list(data.std),
        "augment": data.augment,
    }
