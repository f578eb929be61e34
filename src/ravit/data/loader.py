"""Batches of a data set in a given order: in this process, or decoded by worker processes.

Image files (ImageNet, Tiny ImageNet) are decoded by a torch DataLoader's
worker processes, each assembling whole uint8 batches from `ds[i]` (Pillow
decode, shorter-side resize, centre crop), so decoding overlaps training and
uses as many cores as there are workers. Batches come pinned (page-locked)
when the training device is a GPU, so the copy to it can be asynchronous, and
each worker keeps `prefetch` batches ready. The random augmentation is not
done here: the trainer applies it to the whole batch on its device.

Data held in memory (CIFAR, MNIST, digits) has nothing to decode: its batches
are gathered in the main process, where a worker would only add copies.
"""

from __future__ import annotations

import functools
import os
import random
import signal
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from ravit.data.base import BadImageError, FolderDataset, ImageDataset

Batch = tuple[torch.Tensor, torch.Tensor]
MAX_AUTO_WORKERS = 8


def available_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def default_workers(dataset: ImageDataset, processes_per_node: int = 1) -> int:
    """0 for data in memory; for image files, this process's share of the cores, at most 8."""
    if not isinstance(dataset, FolderDataset):
        return 0
    share = available_cpus() // max(1, processes_per_node)
    return max(1, min(MAX_AUTO_WORKERS, share))


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: seed Python and NumPy from the worker's torch seed.

    The DataLoader gives worker i the torch seed base_seed + i (base_seed
    drawn from the loader's seeded generator); Python's `random` and NumPy
    are not seeded by it, so a worker-side random transform would repeat
    across workers without this. One thread per worker: the workers are the
    parallelism, and more threads would only oversubscribe the cores.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(1)
    # Ctrl-C reaches the whole process group: the trainer stops at a step boundary
    # (ravit.training.stopping) and needs its workers alive until then.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def collate_skipping(items: list, *, empty: torch.Tensor) -> tuple:
    """A worker's batch without the images that failed to decode (skip_bad).

    `FolderDataset.__getitem__` hands a "path: reason" string in place of such
    an image; the batch carries those strings third, for `_Workers` to record.
    """
    good = [(x, y) for x, y in items if not isinstance(x, str)]
    images = torch.stack([x for x, _ in good]) if good else empty
    labels = torch.tensor([y for _, y in good], dtype=torch.int64)
    return images, labels, [x for x, _ in items if isinstance(x, str)]


class _InProcess:
    """Re-iterable batches gathered with `get_batch` in this process."""

    def __init__(self, dataset: ImageDataset, batch_sampler: Iterable[list[int]]) -> None:
        self.dataset, self.batch_sampler = dataset, batch_sampler
        # files that failed to decode and were left out (skip_bad), "path: reason"
        self.failed: list[str] = getattr(dataset, "failed", [])

    def __iter__(self) -> Iterator[Batch]:
        for indices in self.batch_sampler:
            yield self.dataset.get_batch(torch.as_tensor(indices, dtype=torch.int64))

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]


class _Workers:
    """A DataLoader whose worker errors read as the original one-line error."""

    def __init__(self, loader: torch.utils.data.DataLoader) -> None:
        self.loader = loader
        self.failed: list[str] = []  # files the workers left out (skip_bad), "path: reason"

    def __iter__(self) -> Iterator[Batch]:
        try:
            for batch in self.loader:
                if len(batch) == 3:  # collate_skipping
                    self.failed += batch[2]
                yield batch[0], batch[1]
        except (ValueError, OSError) as err:
            # The DataLoader re-raises "Caught ValueError in DataLoader worker process 0.
            # Original Traceback ...": keep the original message, its last line.
            lines = [line for line in str(err).splitlines() if line.strip()]
            last = lines[-1] if lines else str(err)
            name = f"{type(err).__name__}: "
            message = last[last.index(name) + len(name) :] if name in last else last
            if isinstance(err, BadImageError):
                raise BadImageError(message, message.partition(": ")[0]) from None
            raise (ValueError if isinstance(err, ValueError) else OSError)(message) from None

    def __len__(self) -> int:
        return len(self.loader)


def batch_loader(
    dataset: ImageDataset,
    batch_sampler: Iterable[list[int]],
    *,
    workers: int = 0,
    pin_memory: bool = False,
    prefetch: int = 2,
    seed: int = 0,
) -> Iterable[Batch]:
    """Re-iterable (uint8 images (B, C, S, S), int64 labels (B,)) batches in sampler order.

    `batch_sampler` yields index lists and is iterated afresh on every pass
    (set its epoch first). `workers` = 0 gathers in this process (image files
    decode on a thread pool there); > 0 starts that many persistent worker
    processes, seeded from `seed` (see `seed_worker`).
    """
    if workers < 0 or prefetch < 1:
        raise ValueError(f"workers must be >= 0 and prefetch >= 1, got {workers} and {prefetch}")
    if workers == 0:
        return _InProcess(dataset, batch_sampler)
    collate = None
    if isinstance(dataset, FolderDataset) and dataset.skip_bad:
        collate = functools.partial(collate_skipping, empty=dataset.empty_batch())
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batch_sampler,  # type: ignore[arg-type]
        collate_fn=collate,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch,
        persistent_workers=True,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
    )
    return _Workers(loader)
