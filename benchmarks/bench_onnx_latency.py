"""Batch-1 latency of the exported RAViT on ONNX Runtime against PyTorch eager, side by side.

Model: the cifar10 preset's RAViT 1-3 (16 / 32 px, D 128, 4 heads, MLP 512,
patch 4), random initialised with seed 0, fused attention (the default);
`--run RUN` times a trained run instead. It is exported with
`ravit.export.exporter.export_model` into a temporary folder (the export's
own check against PyTorch included).

Inputs: the 1017 CIFAR-10 test images of ../shared/data/cifar10-subset
(RAVIT_DATA or --data to point elsewhere; uniform noise images when absent),
normalised with the model's statistics; the first --images of them (300,
100 with --quick) are timed.

Settings, both backends:
- early exit off: thresholds None, every image runs both exits;
- about 70 % of the FLOPs: one entropy threshold per early exit set from the
  model's own exit scores on all inputs so that the analytic average cost is
  70 % of the full path's (`calibrate` of bench_early_exit.py: a fraction q of
  the images reaching each early exit leaves there, q bisected). The ratio
  reached on the timed images is printed.

Backends, one normalised (3, 32, 32) image per call:
- PyTorch eager: `StreamingRunner(model, thresholds)(image)`, the batch-1
  runner (`torch.inference_mode`, its own antialiased resize);
- ONNX Runtime: `OnnxRAViT(folder).early_exit(image[None], thresholds)`, the
  exported runtime (NumPy resize, one graph per exit, the NumPy exit rule).

Threads: both backends get the same number, --threads (default 1):
`torch.set_num_threads` and onnxruntime's intra-op threads; inter-op 1. At
batch 1 the matrices are small (17 and 65 tokens of width 128) and a second
thread mostly adds a synchronisation per op, which costs most on a busy
machine. Timing is interleaved: for each image the four (backend, setting)
pairs run one after the other, in an order rotated from image to image,
and every call is one latency sample; the figures are the median and the
95th percentile over images x rounds, in ms per image, and the median CPU
time of the calling thread per call ("CPU med": with one thread, all of
the call's work; it leaves out the waits that a busy machine adds to the
wall-clock). The process first
re-executes itself with the glibc malloc settings of shared/PERF-NOTES.md
(`ravit.allocator`). The machine is shared: the load average is printed.

    python benchmarks/bench_onnx_latency.py --quick   # about 1 min on 2 cores
    python benchmarks/bench_onnx_latency.py           # about 2 min
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_early_exit import CIFAR_MEAN, CIFAR_STD, DEFAULT_DATA, build, calibrate, exit_entropies

import ravit
from ravit.allocator import allocator_status, reexec_with_tuned_allocator
from ravit.data import normalize
from ravit.runtime import StreamingRunner

TARGET = 0.7
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]  # fmt: skip


def load_images(data: Path, n: int = 1017) -> tuple[torch.Tensor, str]:
    """uint8 (N, 3, 32, 32) CIFAR-10 test images, or uniform noise when absent."""
    folder = data / "cifar10-subset"
    if (folder / "cifar-10-batches-py").is_dir():
        from ravit.data import load_data

        ds = load_data(f"cifar10:{folder}", "test")
        images, _ = ds.get_batch(torch.arange(min(n, len(ds))))
        return images, f"CIFAR-10 test images from {folder}"
    gen = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    return noise, f"random images ({folder} not found)"


def load_model(run: Path | None) -> tuple[ravit.RAViT, dict, str]:
    """(model, data info with classes / mean / std, description)."""
    if run is None:
        info = {"classes": CIFAR_CLASSES, "mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)}
        return build("1-3", (16, 32)), info, "cifar10 RAViT 1-3, random init (seed 0)"
    from ravit.runs import load_run_model

    model, state = load_run_model(run)
    return model, state["data"], f"RAViT {model.cfg.layers} of {run}"


def interleaved(
    fns: dict[str, Callable[[int], object]], n: int, rounds: int
) -> dict[str, np.ndarray]:
    """(2, rounds, n) per function: wall-clock and this thread's CPU seconds per call.

    Image by image, every function in turn, the order rotated from one image
    to the next. With one thread per backend the whole call runs on this
    thread, so its CPU time is the work without the waits a busy machine adds.
    """
    names = list(fns)
    for name in names:  # warm-up: allocator, kernels, caches
        for i in range(min(n, 20)):
            fns[name](i)
    samples = {name: np.empty((2, rounds, n)) for name in names}
    for r in range(rounds):
        for i in range(n):
            k = (r + i) % len(names)
            for name in names[k:] + names[:k]:
                t0, c0 = time.perf_counter(), time.thread_time()
                fns[name](i)
                samples[name][:, r, i] = time.perf_counter() - t0, time.thread_time() - c0
    return samples


def bench(model, runtime, x: torch.Tensor, taus: dict, args) -> tuple[dict, dict]:
    """Latency samples per (backend, setting), and the exits each backend took."""
    xn = x.numpy()
    runners = {s: StreamingRunner(model, t) for s, t in taus.items()}
    fns, exits = {}, {}
    for s, t in taus.items():
        fns[f"PyTorch eager|{s}"] = lambda i, r=runners[s]: r(x[i])
        fns[f"ONNX Runtime|{s}"] = lambda i, t=t: runtime.early_exit(xn[i : i + 1], t)
        exits[f"PyTorch eager|{s}"] = [runners[s](x[i]).exit_index for i in range(len(x))]
        exits[f"ONNX Runtime|{s}"] = runtime.early_exit(xn, t).exit_index.tolist()
    with torch.inference_mode():
        samples = interleaved(fns, len(x), args.rounds)
    return samples, exits


def report(samples: dict, exits: dict, cost: ravit.ModelCost) -> None:
    print(f"  {'backend':<14} {'early exit':<13} {'median':>7} {'p95':>7} {'CPU med':>7}"
          f"  analytic FLOPs")  # fmt: skip
    medians = {}
    for key, s in samples.items():
        backend, setting = key.split("|")
        counts = np.bincount(exits[key], minlength=len(cost.exits))
        ratio = cost.early_exit_flops(counts.tolist()) / cost.total_flops
        wall, cpu = s[0].ravel() * 1e3, s[1].ravel() * 1e3
        medians[key] = (float(np.median(wall)), float(np.median(cpu)))
        print(f"  {backend:<14} {setting:<13} {medians[key][0]:7.3f} "
              f"{np.percentile(wall, 95):7.3f} {medians[key][1]:7.3f}"
              f"  {100 * ratio:5.1f} %  (exits {counts.tolist()})")  # fmt: skip
    for setting in dict.fromkeys(k.split("|")[1] for k in samples):
        ort, pt = medians[f"ONNX Runtime|{setting}"], medians[f"PyTorch eager|{setting}"]
        agree = exits[f"ONNX Runtime|{setting}"] == exits[f"PyTorch eager|{setting}"]
        print(f"  {setting}: ONNX Runtime / PyTorch median latency {ort[0] / pt[0]:.2f}, CPU time "
              f"{ort[1] / pt[1]:.2f}; exits {'identical' if agree else 'DIFFER'} on the timed "
              "images")  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and images: about 1 min")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="holds cifar10-subset/")
    p.add_argument("--run", type=Path, help="a trained run folder instead of random init")
    p.add_argument("--images", type=int, help="images timed (default 300, quick 100)")
    p.add_argument("--rounds", type=int, help="passes over the images (default 5, quick 3)")
    p.add_argument("--threads", type=int, default=1, help="threads of both backends")
    args = p.parse_args(argv)
    args.images = args.images or (100 if args.quick else 300)
    args.rounds = args.rounds or (3 if args.quick else 5)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    reexec_with_tuned_allocator()  # glibc reads malloc settings at start: same pid, re-run
    args = parse_args(argv)
    import onnxruntime

    from ravit.export.exporter import export_model
    from ravit.runtime.exported import OnnxRAViT

    torch.set_num_threads(args.threads)
    model, info, what = load_model(args.run)
    images, source = load_images(args.data)
    x = normalize(images, info["mean"], info["std"])
    cost = ravit.model_cost(model.cfg)
    taus, analytic = calibrate(exit_entropies(model, x), cost, TARGET)
    cpu, malloc = torch.backends.cpu.get_cpu_capability(), allocator_status(os.environ)
    versions = f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    print(f"{versions}, Python {platform.python_version()}, {platform.machine()}, CPU {cpu}, "
          f"malloc {malloc}")  # fmt: skip
    print(f"model: {what}; inputs: {len(x)} {source}, first {args.images} timed x "
          f"{args.rounds} rounds, batch 1; threads {args.threads} per backend")  # fmt: skip
    print(f"~70 %: entropy thresholds {[round(t, 5) for t in taus]}, analytic ratio on all "
          f"inputs {analytic:.3f}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        export_model(model, info, Path(tmp) / "onnx", images[:64].numpy())
        runtime = OnnxRAViT(Path(tmp) / "onnx", threads=args.threads)
        settings = {"off": None, f"{TARGET:.0%} FLOPs": taus}
        samples, exits = bench(model, runtime, x[: args.images], settings, args)
    load = os.getloadavg()
    print(f"\nper-image latency, ms (load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}, "
          f"{os.cpu_count()} CPUs)")  # fmt: skip
    report(samples, exits, cost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
