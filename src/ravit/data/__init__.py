"""Data sets (uint8 images + labels) and batched torch transforms.

Contract used by the trainer and evaluation (the helpers below implement it):

- ``load_data(spec, split) -> ImageDataset`` with split "train" or "test";
  spec is "cifar10:PATH", "cifar100:PATH", "fashion-mnist:PATH",
  "mnist:PATH", "tiny-imagenet:PATH", "imagefolder:PATH" or "digits".
- ``ImageDataset``: ``len(ds)``, ``ds.labels`` (N,) int64, ``ds.classes``,
  ``ds.channels``, ``ds.image_size``, ``ds.mean``/``ds.std`` (per channel, in
  [0, 1] units), ``ds.augment`` (the default train augmentation),
  ``ds.name``, ``ds.source``, ``ds.get_batch(indices) -> (uint8 (B, C, S, S),
  int64 (B,))`` and ``ds.subset(indices) -> ImageDataset``.
- ``train_val_split(n, val_size, seed) -> (train_idx, val_idx)``: deterministic.
- ``make_transform(train: bool, *, augment, image_size, channels, mean, std)``
  returns ``f(uint8 batch on any device, generator) -> float batch``.

Specs may carry options, ``NAME:PATH?key=value&key=value`` (``augment``;
``size``, ``channels``, ``verify`` for image folders); docs/data.md lists
every spec, the file layouts, splits, statistics and errors.
"""

from ravit.data.base import (
    AUGMENTATIONS,
    FolderDataset,
    ImageDataset,
    InMemoryDataset,
    data_info,
    split_indices,
    train_val_split,
)
from ravit.data.download import SOURCES, download_dataset
from ravit.data.specs import DATASETS, load_data, parse_data_spec
from ravit.data.transforms import (
    BatchTransform,
    crop,
    make_transform,
    match_channels,
    normalize,
    random_crop,
    random_flip,
    random_resized_crop,
    resize,
)

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "SOURCES",
    "BatchTransform",
    "FolderDataset",
    "ImageDataset",
    "InMemoryDataset",
    "crop",
    "data_info",
    "download_dataset",
    "load_data",
    "make_transform",
    "match_channels",
    "normalize",
    "parse_data_spec",
    "random_crop",
    "random_flip",
    "random_resized_crop",
    "resize",
    "split_indices",
    "train_val_split",
]
