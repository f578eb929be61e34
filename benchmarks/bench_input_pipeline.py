"""Images/s the training input pipeline decodes (and augments) from JPEG files, by worker count.

It writes a folder of JPEGs shaped like ImageNet's (varied sizes around
500x375, smooth content with detail, quality 90: about 80 KiB a file, where
ImageNet's mean is about 110 KiB) into a temporary `imagefolder` tree, then,
for each number of DataLoader workers, runs one epoch of the trainer's own
pipeline (`ravit.data.loader.batch_loader` over a `GlobalBatchSampler`):

- decode: Pillow decode, shorter side resized to --size, centre crop, uint8
  batches assembled (by the workers, or in this process on its thread pool
  for 0 workers);
- decode + augment: the same, each batch then moved to the device and put
  through the trainer's random augmentation (`rrc-flip`: random resized crop
  + flip, batched torch ops) and normalisation, as in training.

Rates count the images after the first batch (worker start-up is excluded).
Workers = 0 decodes in this process on a thread pool. On a CPU-only machine
the augmentation competes with the decoders for the same cores; on a GPU
it runs there, nearly for free.

    python benchmarks/bench_input_pipeline.py                  # 2000 images, workers 0,1,2,3
    python benchmarks/bench_input_pipeline.py --images 500 --workers 0,2
    python benchmarks/bench_input_pipeline.py --device cuda    # augment on the GPU
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ravit.data import load_data, make_transform
from ravit.data.loader import available_cpus, batch_loader
from ravit.training.distributed import GlobalBatchSampler

CLASSES = 10


def write_jpegs(root: Path, count: int, seed: int = 0) -> float:
    """`count` JPEGs in root/train/class_k/; returns their mean size in KiB.

    Each image is low-resolution noise enlarged bicubically (smooth regions
    and edges, as in photographs) plus fine noise, so that the files have the
    entropy, and Pillow the decoding work, of real photographs.
    """
    rng = np.random.default_rng(seed)
    total = 0
    for i in range(count):
        w, h = int(rng.integers(400, 601)), int(rng.integers(300, 451))
        coarse = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        folder = root / "train" / f"class_{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(image).save(path, quality=90)
        total += path.stat().st_size
    return total / count / 1024


def decode_cpu_seconds(data, count: int = 100) -> float:
    """CPU seconds to decode one image in this process: unlike wall time, the load leaves it."""
    paths = data.paths[:count]
    data._decode(paths[0])  # warm the caches
    start = time.process_time()
    for path in paths:
        data._decode(path)
    return (time.process_time() - start) / len(paths)


def one_epoch(data, workers: int, args: argparse.Namespace, device: torch.device, augment: bool):
    """Images/s over one epoch, counted from the second batch on."""
    sampler = GlobalBatchSampler(len(data), args.batch_size, seed=0)
    loader = batch_loader(data, sampler, workers=workers, pin_memory=device.type == "cuda",
                          prefetch=args.prefetch)  # fmt: skip
    tf = make_transform(True, augment="rrc-flip", image_size=args.size, channels=3,
                        mean=data.mean, std=data.std)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    start, counted = None, 0
    for images, _ in loader:
        if augment:
            x = tf(images.to(device, non_blocking=True), gen)
            if device.type == "cuda":
                torch.cuda.synchronize()
            del x
        if start is None:  # the first batch pays for starting the workers
            start = time.perf_counter()
        else:
            counted += len(images)
    return counted / (time.perf_counter() - start)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000, help="JPEGs to generate (default 2000)")
    p.add_argument("--workers", default="0,1,2,3", help="worker counts, comma-separated")
    p.add_argument("--size", type=int, default=224, help="decoded (and crop) side, default 224")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--prefetch", type=int, default=2, help="batches each worker prepares ahead")
    p.add_argument("--device", default="cpu", help="where augmentation runs: cpu or cuda")
    p.add_argument("--folder", type=Path, help="reuse (or create) this image folder")
    p.add_argument("--threads", type=int, help="torch threads of this process")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    workers = [int(w) for w in args.workers.split(",")]
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="ravit-jpegs-") as tmp:
        root = args.folder or Path(tmp)
        start = time.perf_counter()
        if not (root / "train").is_dir():
            kib = write_jpegs(root, args.images)
            print(f"wrote {args.images} JPEGs (mean {kib:.0f} KiB) to {root} in "
                  f"{time.perf_counter() - start:.0f} s")  # fmt: skip
        data = load_data(f"imagefolder:{root}?size={args.size}&verify=0", "train")
        print(f"{len(data)} images, decoded to {args.size} px; batch {args.batch_size}; "
              f"{available_cpus()} CPU cores, {torch.get_num_threads()} torch threads; "
              f"augment on {device}")  # fmt: skip
        print(f"load average at the start: {os.getloadavg()[0]:.2f}")
        cost = decode_cpu_seconds(data)
        print(f"decode + resize + crop of one image: {1e3 * cost:.1f} ms of CPU time "
              f"({1 / cost:.0f} images per CPU-second)")  # fmt: skip
        print(f"torch {torch.__version__}, Python {platform.python_version()}")
        print(f"{'workers':>7}  {'decode img/s':>12}  {'+ augment img/s':>15}  {'x row 1':>7}")
        base = None
        for w in workers:
            decode = one_epoch(data, w, args, device, augment=False)
            both = one_epoch(data, w, args, device, augment=True)
            base = base or both
            print(f"{w:>7}  {decode:>12.0f}  {both:>15.0f}  {both / base:>7.2f}", flush=True)
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
