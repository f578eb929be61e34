"""Training throughput (images/s) of the trainer's own epoch on a GPU: compile x autocast.

For each model and each variant (eager or `torch.compile`, fp32 or bf16
autocast) it builds the model and AdamW as `ravit train` does and runs
`ravit.training.loop.train_epoch` twice on synthetic uint8 images held in
CPU memory: the first epoch warms up (and compiles), the second is timed.
So every figure includes what training pays per step: the copy of the uint8
batch to the GPU, the random augmentation there (random resized crop + flip
for the imagenet preset, crop + flip for cifar10), the forward of every exit,
the summed exit losses, backward, gradient clipping, AdamW and the per-step
loss check. Data decoding is not included (see bench_input_pipeline.py).

Default models: the imagenet preset's RAViT 1-1-8 and plain ViT 0-0-12
(224 px, patch 16, D 768), batch 128; the cifar10 preset's RAViT 1-3 and ViT
0-4 (32 px), batch 512.

    python benchmarks/bench_gpu_throughput.py                       # all, about 10 min on one GPU
    python benchmarks/bench_gpu_throughput.py --models imagenet:1-1-8 --steps 20
    python benchmarks/bench_gpu_throughput.py --device cpu --models tiny:1-1 --steps 3  # smoke
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ravit.config import build_model_config
from ravit.data import InMemoryDataset, data_info
from ravit.models import RAViT
from ravit.training import resolve_config
from ravit.training.loop import Prepared, make_optimizer, train_epoch, transforms_for

DEFAULT_MODELS = ("imagenet:1-1-8", "imagenet:0-0-12", "cifar10:1-3", "cifar10:0-4")
DEFAULT_BATCH = {"imagenet": 128, "cifar10": 512}
VARIANTS = (("eager", "off"), ("eager", "bf16"), ("compile", "off"), ("compile", "bf16"))
POOL = 8  # distinct synthetic batches; the epoch cycles through them


class SyntheticImages(InMemoryDataset):
    """`n` labelled images cycling through a small pool of random uint8 ones."""

    def __init__(self, n: int, pool: torch.Tensor, classes: int, augment: str) -> None:
        meta = dict(classes=[str(i) for i in range(classes)], mean=(0.5,) * 3, std=(0.25,) * 3,
                    augment=augment, name="synthetic", source="random")  # fmt: skip
        super().__init__(pool, torch.arange(len(pool)) % classes, **meta)
        self.labels = torch.arange(n) % classes  # n images; pixels from the pool

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self._index(indices)
        return self.images[idx % len(self.images)], self.labels[idx]


@dataclass
class Result:
    model: str
    variant: str
    amp: str
    batch: int
    images_per_s: float
    warmup_s: float
    peak_gib: float


def measure(spec: str, variant: str, amp: str, args: argparse.Namespace) -> Result:
    preset, layers = spec.split(":")
    batch = args.batch_size or DEFAULT_BATCH.get(preset, 64)
    cfg = resolve_config(None, [
        f"model.preset={preset}", f"model.layers={layers}", f"train.batch_size={batch}",
        f"train.amp={amp}", f"train.compile={variant == 'compile'}", f"train.device={args.device}",
        "train.epochs=2", "data.workers=0", "data.val_size=0",
    ])  # fmt: skip
    device = torch.device(args.device)
    model_cfg = build_model_config(cfg.model, num_classes=args.classes, in_chans=3)
    size = model_cfg.image_size
    gen = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 256, (POOL * batch, 3, size, size), dtype=torch.uint8, generator=gen)
    augment = "rrc-flip" if size >= 64 else "crop-flip"
    data = SyntheticImages(args.steps * batch, pool, args.classes, augment)
    torch.manual_seed(0)
    model = RAViT(model_cfg).to(device)
    p = Prepared(cfg, data, None, data_info(data, "synthetic"), model,
                 make_optimizer(model, cfg), device, [])  # fmt: skip
    train_tf, _ = transforms_for(p)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    train_epoch(p, 0, train_tf)  # warm-up: cuDNN/cuBLAS choices, compilation
    warmup = time.perf_counter() - start
    record = train_epoch(p, 1, train_tf)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return Result(spec, variant, amp, batch, record["images_per_s"], warmup, peak)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="preset:layers, ...")
    p.add_argument("--variants", default=",".join(f"{v}/{a}" for v, a in VARIANTS),
                   help="eager|compile / off|bf16|fp16, comma-separated")  # fmt: skip
    p.add_argument("--batch-size", type=int, help="global batch (default 128 imagenet, 512 cifar)")
    p.add_argument("--steps", type=int, default=30, help="steps per epoch (default 30)")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_gpu_throughput: no CUDA device (use --device cpu for a smoke run)")
        return 2
    cuda = args.device.startswith("cuda")
    gpu = torch.cuda.get_device_name() if cuda else f"CPU ({platform.machine()})"
    print(f"{gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}; "
          f"{args.steps} timed steps after a warm-up epoch")  # fmt: skip
    print(f"{'model':<16} {'variant':<8} {'amp':<5} {'batch':>5} {'img/s':>8} "
          f"{'warm-up s':>9} {'peak GiB':>8}")  # fmt: skip
    results = []
    for spec in args.models.split(","):
        for variant_amp in args.variants.split(","):
            variant, amp = variant_amp.split("/")
            r = measure(spec, variant, amp, args)
            results.append(r)
            print(f"{r.model:<16} {r.variant:<8} {r.amp:<5} {r.batch:>5} {r.images_per_s:>8.0f} "
                  f"{r.warmup_s:>9.1f} {r.peak_gib:>8.1f}", flush=True)  # fmt: skip
            torch._dynamo.reset()  # compiled graphs of one model are no use to the next
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": gpu, "torch": torch.__version__,
                       "results": [r.__dict__ for r in results]}, f, indent=2)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
