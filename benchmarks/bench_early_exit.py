"""Wall-clock of real early exit on the CPU: batch 256 (compaction) and batch-1 streaming.

Models: the cifar10 preset (D 128, 4 heads, MLP 512, patch 4), RAViT 1-3 at
16 / 32 px and RAViT 1-1-3 at 16 / 24 / 32 px, random initialised (seed 0),
fp32, `torch.inference_mode()`. Attention: the models' default,
`scaled_dot_product_attention` (`--attention explicit`: matmul + softmax).
shared/PERF-NOTES.md finds the fused attention core about 2x slower at the 17
tokens of the 16 px branch; the benchmark first times both, on the 1-3 full
path and on its 16 px branch alone. Measured here (torch 2.13, 2 cores), the
whole 16 px branch costs the same either way (the attention core is a small
part of it) and the fused full path is about 9 % faster, so fused it is.

Inputs: the 1017 CIFAR-10 test images of ../shared/data/cifar10-subset
(RAVIT_DATA or --data to point elsewhere), normalised with CIFAR-10's
statistics; standard normal noise images when the data is absent.

Thresholds (entropy policy) come from the model's own exit scores on the
inputs: for a quantile q, exit i's threshold is the midpoint between the
scores at ranks round(q n_i) and round(q n_i) + 1 of the n_i inputs that reach
exit i, so a fraction q of them leaves there; q is bisected so that the
analytic average cost (SPEC's C_EE, from the exit counts over all inputs) is
60, 70 and 80 % of the full path's FLOPs. The ratio reached is printed.

(a) Batch 256. The timed images are the first three batches of 256 (768;
    one batch with --quick). Full path: `model(x)`, the plain forward that
    computes every exit's logits: what evaluation runs and what the model
    costs without early exit (an exit head is one LayerNorm and one 128 x 10
    matmul). Early exit: `model.early_exit(x, thresholds)`, which compacts the
    batch after each exit. Each round times the full path and the early exit
    over the same batches, in alternating order; the figure is the median
    over rounds of the per-round time ratio, bounded by
        time ratio <= 1.1 x the analytic FLOPs ratio of the timed images.
    Also printed, not bounded: `early_exit` with thresholds 0 (the exit
    machinery with nobody leaving) against the full path.

(b) Batch 1, one image at a time over the first 300 inputs (100 with
    --quick). Full path: `int(model(x[None]).logits[-1].argmax())`, every
    branch and head with no entropy and no decision. Streaming, no exit:
    `StreamingRunner(model, thresholds)` with thresholds positive but below
    every score seen (half the smallest), so each early exit really computes
    its entropy, turns it into a Python float and compares, nothing leaves,
    and the answer's entropy, score and class are computed as always. The
    figure is the median over rounds of the per-round time ratio, bounded by
        streaming (no exit) / full path <= 1.10   (the exit checks add <= 10 %).
    Also printed: the streaming time at the 60 / 70 / 80 % thresholds, with
    the analytic FLOPs ratio of the images streamed.

Prints PASS / FAIL per bound and exits with status 1 on a FAIL (--no-check:
exit 0). First thing, the process re-executes itself with the glibc malloc
settings of shared/PERF-NOTES.md (`ravit.allocator`). The machine is shared:
check `uptime` and rerun when another job was busy.

    python benchmarks/bench_early_exit.py --quick   # about 1 min on 2 cores
    python benchmarks/bench_early_exit.py           # about 3 min
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

import ravit
from ravit.allocator import allocator_status, reexec_with_tuned_allocator
from ravit.exits import entropy, simulate
from ravit.models import RAViT
from ravit.runtime import StreamingRunner

TARGETS = (0.6, 0.7, 0.8)
MAX_BATCH_EXCESS = 1.1  # measured time ratio <= 1.1 x analytic FLOPs ratio
MAX_STREAM_OVERHEAD = 1.10  # streaming with checks <= 1.10 x the plain batch-1 forward
MODELS = (("1-3", (16, 32)), ("1-1-3", (16, 24, 32)))
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)
DEFAULT_DATA = Path(
    os.environ.get("RAVIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def load_inputs(data: Path, n: int = 1017) -> tuple[torch.Tensor, str]:
    """Normalised float (N, 3, 32, 32) CIFAR-10 test images, or noise when absent."""
    folder = data / "cifar10-subset"
    if (folder / "cifar-10-batches-py").is_dir():
        from ravit.data import load_data, normalize

        ds = load_data(f"cifar10:{folder}", "test")
        images, _ = ds.get_batch(torch.arange(min(n, len(ds))))
        return normalize(images, CIFAR_MEAN, CIFAR_STD), f"CIFAR-10 test images from {folder}"
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 32, 32, generator=gen), f"random images ({folder} not found)"


def build(layers: str, resolutions: Sequence[int], fused: bool = True) -> RAViT:
    torch.manual_seed(0)
    cfg = ravit.model_config("cifar10", layers, resolutions=resolutions, fused_attention=fused)
    return RAViT(cfg).eval()


@torch.inference_mode()
def exit_entropies(model: RAViT, x: torch.Tensor) -> list[torch.Tensor]:
    outs = [model(chunk).logits for chunk in x.split(256)]
    return [torch.cat([entropy(o[e]) for o in outs]) for e in range(model.num_exits)]


def quantile_thresholds(scores: Sequence[torch.Tensor], q: float) -> list[float]:
    """Per early exit, the threshold that lets a fraction q of the images reaching it leave."""
    remain = torch.ones_like(scores[0], dtype=torch.bool)
    taus = []
    for s in scores[:-1]:
        v = s[remain].sort().values
        k = round(q * len(v))
        tau = 0.0 if k == 0 else math.inf if k >= len(v) else float((v[k - 1] + v[k]) / 2)
        taus.append(tau)
        remain &= ~(s < tau)
    return taus


def calibrate(scores: Sequence[torch.Tensor], cost: ravit.ModelCost, target: float):
    """(thresholds, analytic ratio over the inputs) with the ratio closest to `target`."""
    labels = torch.zeros_like(scores[0], dtype=torch.long)  # accuracy is not looked at
    fake_logits = [torch.zeros(len(s), 2) for s in scores]
    stacked = torch.stack(list(scores))

    def ratio(q: float) -> float:
        taus = quantile_thresholds(scores, q)
        return simulate(fake_logits, labels, cost, taus, scores=stacked).flops_ratio

    lo, hi = 0.0, 1.0  # the ratio falls as q grows
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ratio(mid) > target else (lo, mid)
    q = min((lo, hi), key=lambda v: abs(ratio(v) - target))
    return quantile_thresholds(scores, q), ratio(q)


def analytic_ratio(cost: ravit.ModelCost, exit_index: Sequence[int]) -> float:
    counts = [0] * len(cost.exits)
    for e in exit_index:
        counts[e] += 1
    return cost.early_exit_flops(counts) / cost.total_flops


def timed_rounds(
    fns: dict[str, Callable[[torch.Tensor], object]], items: Sequence[torch.Tensor], rounds: int
) -> dict[str, list[float]]:
    """Seconds each function spends on all the items, per round.

    Interleaved as finely as possible, so that a noisy neighbour slows every
    function alike: item by item, every function in turn, the order rotated
    from one item to the next.
    """
    names = list(fns)
    for name in names:  # warm-up: allocator, oneDNN primitives, caches
        fns[name](items[0])
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        spent = dict.fromkeys(names, 0.0)
        for j, item in enumerate(items):
            k = (r + j) % len(names)
            for name in names[k:] + names[:k]:
                t0 = time.perf_counter()
                fns[name](item)
                spent[name] += time.perf_counter() - t0
        for name in names:
            times[name].append(spent[name])
    return times


def median_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


@torch.inference_mode()
def compare_attention(x: torch.Tensor, rounds: int, used: str) -> None:
    """Fused (SDPA) against explicit attention, same weights: 1-3 full path and its 16 px branch."""
    fused, explicit = build("1-3", (16, 32)), build("1-3", (16, 32), fused=False)
    explicit.load_state_dict(fused.state_dict())
    small = F.interpolate(x[:256], size=(16, 16), mode="bilinear", antialias=True)
    cls = fused.initial_cls(256)
    fns = {
        "fused": fused,
        "explicit": explicit,
        "fused 16 px": lambda _: fused.branches[0](small, cls),
        "explicit 16 px": lambda _: explicit.branches[0](small, cls),
    }
    med = {k: statistics.median(v) * 1e3 for k, v in timed_rounds(fns, [x[:256]], rounds).items()}
    one = timed_rounds({"fused": fused, "explicit": explicit}, x[:50, None], rounds)
    med1 = {k: statistics.median(v) / 50 * 1e3 for k, v in one.items()}
    print(
        f"attention (RAViT 1-3, ms): batch 256 full path fused {med['fused']:.0f}, explicit "
        f"{med['explicit']:.0f}; its 16 px branch (17 tokens) fused {med['fused 16 px']:.1f}, "
        f"explicit {med['explicit 16 px']:.1f}; batch 1 full path fused {med1['fused']:.2f}, "
        f"explicit {med1['explicit']:.2f}. Used below: {used} (--attention)"
    )


def calibrate_all(model: RAViT, x: torch.Tensor) -> dict[float, tuple[list[float], float]]:
    scores = exit_entropies(model, x)
    cost = ravit.model_cost(model.cfg)
    return {t: calibrate(scores, cost, t) for t in TARGETS}


@torch.inference_mode()
def bench_batched(model: RAViT, batches: list[torch.Tensor], taus: dict, rounds: int) -> list:
    """(label, analytic ratio of the timed images, time ratio, bound or None) per setting."""
    cost = ravit.model_cost(model.cfg)
    fns = {"full": model, "thresholds 0": lambda b: model.early_exit(b, 0.0)}
    for t in TARGETS:
        fns[f"{t:.0%}"] = lambda b, tau=taus[t][0]: model.early_exit(b, tau)
    times = timed_rounds(fns, batches, rounds)
    full_ms = statistics.median(times["full"]) / len(batches) * 1e3
    rows = [("full path", 1.0, 1.0, full_ms, None)]
    for name in list(fns)[1:]:
        tau = 0.0 if name == "thresholds 0" else taus[float(name[:-1]) / 100][0]
        exits = torch.cat([model.early_exit(b, tau).exit_index for b in batches]).tolist()
        analytic = analytic_ratio(cost, exits)
        bound = None if name == "thresholds 0" else MAX_BATCH_EXCESS * analytic
        ms = statistics.median(times[name]) / len(batches) * 1e3
        rows.append((name, analytic, median_ratio(times, name, "full"), ms, bound))
    return rows


@torch.inference_mode()
def bench_streaming(model: RAViT, images: torch.Tensor, taus: dict, rounds: int) -> list:
    """Like bench_batched, one image at a time; the bound is on the no-exit runner."""
    cost = ravit.model_cost(model.cfg)
    floor = [0.5 * float(s.min()) for s in exit_entropies(model, images)[:-1]]
    runners = {"no exit": StreamingRunner(model, floor)}
    runners.update({f"{t:.0%}": StreamingRunner(model, taus[t][0]) for t in TARGETS})
    fns = {"full": lambda img: int(model(img[None]).logits[-1].argmax())}
    fns.update(runners)
    times = timed_rounds(fns, images, rounds)
    rows = [("full path", 1.0, 1.0, statistics.median(times["full"]) / len(images) * 1e3, None)]
    for name, runner in runners.items():
        exits = [runner(img).exit_index for img in images]
        if name == "no exit" and any(e != model.num_exits - 1 for e in exits):
            raise RuntimeError("the no-exit thresholds let an image leave early")
        bound = MAX_STREAM_OVERHEAD if name == "no exit" else None
        ms = statistics.median(times[name]) / len(images) * 1e3
        rows.append(
            (name, analytic_ratio(cost, exits), median_ratio(times, name, "full"), ms, bound)
        )
    return rows


def print_rows(title: str, rows: list, unit: str) -> list[str]:
    """Print a table; return the failed bounds' descriptions."""
    print(title)
    print(f"  {'setting':<13} {'analytic':>8} {unit:>9} {'time ratio':>10}  bound")
    failures = []
    for name, analytic, ratio, ms, bound in rows:
        verdict = ""
        if bound is not None:
            ok = ratio <= bound
            verdict = f"<= {bound:.3f} {'PASS' if ok else 'FAIL'}"
            if not ok:
                failures.append(f"{title.strip()} {name}: time ratio {ratio:.3f} > {bound:.3f}")
        print(f"  {name:<13} {analytic:8.3f} {ms:9.2f} {ratio:10.3f}  {verdict}")
    return failures


def describe(source: str, n: int) -> None:
    print(f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}, "
          f"threads {torch.get_num_threads()}, CPU {torch.backends.cpu.get_cpu_capability()}, "
          f"malloc {allocator_status(os.environ)}")  # fmt: skip
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"inputs: {n} {source}; load average {load:.2f} (2 cores: rerun if it is above ~1.5)")


def bench_model(layers: str, res: Sequence[int], x: torch.Tensor, args) -> list[str]:
    model = build(layers, res, fused=args.attention == "fused")
    cost = ravit.model_cost(model.cfg)
    taus = calibrate_all(model, x)
    flops = ", ".join(ravit.format_flops(c) for c in cost.cumulative_flops)
    print(f"\nRAViT {layers} at {'/'.join(map(str, res))} px: cumulative exit FLOPs {flops}")
    for t in TARGETS:
        th = ", ".join(f"{v:.5f}" for v in taus[t][0])
        print(f"  target {t:.0%}: entropy thresholds [{th}], analytic ratio {taus[t][1]:.3f}")
    batches = list(x[: 256 * args.batches].split(256))
    rows = bench_batched(model, batches, taus, args.rounds)
    failures = print_rows(f" (a) batch 256, {256 * len(batches)} images", rows, "ms/batch")
    rows = bench_streaming(model, x[: args.stream], taus, args.rounds)
    return failures + print_rows(f" (b) batch 1, {args.stream} images", rows, "ms/image")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and images: about 1 min")
    p.add_argument("--no-check", action="store_true", help="print only; exit 0 on a FAIL")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="holds cifar10-subset/")
    p.add_argument("--rounds", type=int, help="timed rounds (default 7, quick 3)")
    p.add_argument(
        "--attention",
        choices=("explicit", "fused"),
        default="fused",
        help="scaled_dot_product_attention (default) or explicit matmul + softmax",
    )
    args = p.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.batches = 1 if args.quick else 3
    args.stream = 100 if args.quick else 300
    return args


def main(argv: Sequence[str] | None = None) -> int:
    # glibc reads its malloc settings at process start: re-run this very command
    # with them (same pid; no-op when set already or RAVIT_NO_MALLOC_TUNING=1).
    reexec_with_tuned_allocator()
    args = parse_args(argv)
    x, source = load_inputs(args.data)
    describe(source, len(x))
    compare_attention(x, 2 if args.quick else 3, args.attention)
    failures = []
    for layers, res in MODELS:
        failures += bench_model(layers, res, x, args)
    print()
    for f in failures:
        print("FAIL: " + f)
    if not failures:
        print("PASS: every bound holds")
    return 1 if failures and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
