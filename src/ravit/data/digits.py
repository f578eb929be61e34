"""scikit-learn's bundled 8x8 digits (1797 images): a data set with no files."""

from __future__ import annotations

import torch

from ravit.data.base import InMemoryDataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def digits_split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (train, test) indices: a fixed seeded permutation, the first 20 % test."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = round(TEST_FRACTION * n)
    return perm[n_test:].sort().values, perm[:n_test].sort().values


def read_digits(split: str) -> InMemoryDataset:
    from sklearn.datasets import load_digits  # imported here: sklearn is slow to import

    bunch = load_digits()
    # Values are 0..16 (counts of set pixels in 4x4 blocks); scale them to 0..255.
    pixels = torch.as_tensor(bunch.images, dtype=torch.float64) * (255.0 / 16.0)
    images = pixels.round().to(torch.uint8).unsqueeze(1)  # (N, 1, 8, 8)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    train, test = digits_split(len(labels))
    # Normalisation statistics from the train split only.
    train_pixels = images[train].double() / 255.0
    idx = train if split == "train" else test
    return InMemoryDataset(
        images[idx],
        labels[idx],
        classes=[str(i) for i in range(10)],
        mean=(float(train_pixels.mean()),),
        std=(float(train_pixels.std(unbiased=False)),),
        augment="crop",
        name="digits",
        source="sklearn.datasets.load_digits",
    )
