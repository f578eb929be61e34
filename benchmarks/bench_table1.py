"""The analogue of the paper's Table I on real CIFAR-10 images.

Trains the cifar10 preset's RAViT 1-3 and the plain ViTs 0-3 and 0-4 with the
same recipe, epochs and seed on a CIFAR-10 folder (by default the 5085-image
subset in ../shared/data), then prints test accuracy, FLOPs and % of the
0-4 baseline, without early exit and with early exit at two thresholds:
the paper's raw entropy thresholds (0.05 and 0.15), and thresholds chosen on
the validation split to give the paper's operating points (72 % and 61 % of
the 0-4 baseline's FLOPs).

    python benchmarks/bench_table1.py --epochs 20 --out runs/table1

Runs that already exist in --out are reused (resumed if unfinished).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ravit.cost import ModelCost, format_flops, model_cost
from ravit.evaluation import evaluate_run
from ravit.exits import simulate, sweep
from ravit.runs import folder as runfs
from ravit.training import fit, resolve_config

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset"
MODELS = ("0-3", "0-4", "1-3")
PAPER = {  # Table I: accuracy %, MFLOPs, % of the 4-layer ViT
    "0-3": (82.3, "83.16 M", 75),
    "0-4": (84.3, "110.88 M", 100),
    "1-3": (84.9, "89.99 M", 81),
    "1-3 tau=0.05": (84.6, "80.81 M", 72),
    "1-3 tau=0.15": (82.6, "67.72 M", 61),
}


def train_all(args: argparse.Namespace) -> dict[str, Path]:
    runs = {}
    for layers in MODELS:
        run = args.out / f"cifar10-{layers}"
        runs[layers] = run
        overrides = [
            "model.preset=cifar10",
            f"model.layers={layers}",
            f"data.spec=cifar10:{args.data}",
            f"data.val_size={args.val_size}",
            f"train.epochs={args.epochs}",
            f"train.seed={args.seed}",
            f"train.device={args.device}",
        ]
        if (run / runfs.CONFIG).exists():
            done = runfs.read_metrics(run)
            if len(done) >= args.epochs:
                print(f"reusing {run} ({len(done)} epochs)", flush=True)
                continue
            print(f"resuming {run}", flush=True)
            fit(run, resume=True, on_epoch=_log(layers))
        else:
            start = time.perf_counter()
            fit(run, resolve_config(overrides=overrides), on_epoch=_log(layers))
            print(f"trained {layers} in {time.perf_counter() - start:.0f} s", flush=True)
    return runs


def _log(layers: str):
    def log(r: dict) -> None:
        val = "/".join(f"{100 * a:.1f}" for a in r.get("val_acc_exits", []))
        print(f"  {layers} epoch {r['epoch']:>3} loss {r['train_loss']:.3f} "
              f"val acc % {val} {r['images_per_s']:.0f} img/s", flush=True)  # fmt: skip

    return log


def thresholds_for_ratio(val, cost: ModelCost, baseline_flops: int, ratio: float) -> float:
    """The entropy threshold whose validation cost is the largest not above ratio x baseline."""
    points = sweep(val.logits.logits, val.logits.labels, cost, points=401)
    ok = [r for r in points if r.avg_flops <= ratio * baseline_flops]
    best = max(ok, key=lambda r: r.avg_flops) if ok else points[0]
    return best.thresholds[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAR-10 folder")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--val-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("runs/table1"))
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"bench_table1: no CIFAR-10 folder at {args.data}", file=sys.stderr)
        return 2
    runs = train_all(args)
    test = {k: evaluate_run(r, split="test") for k, r in runs.items()}
    val = evaluate_run(runs["1-3"], split="val")
    base = model_cost(test["0-4"].model.cfg).total_flops
    rows = []
    for layers in ("0-3", "0-4", "1-3"):
        cost = model_cost(test[layers].model.cfg)
        name = f"ViT {layers}" if layers.startswith("0-") else "RAViT 1-3 (no EE)"
        rows.append((name, layers, test[layers].logits.accuracy()[-1], cost.total_flops))
    cost13 = model_cost(test["1-3"].model.cfg)
    lg, labels = test["1-3"].logits.logits, test["1-3"].logits.labels
    for tau in (0.05, 0.15):
        r = simulate(lg, labels, cost13, tau)
        rows.append((f"RAViT 1-3 (tau = {tau})", f"1-3 tau={tau}", r.accuracy, r.avg_flops))
    for ratio in (0.72, 0.61):
        tau = thresholds_for_ratio(val, cost13, base, ratio)
        r = simulate(lg, labels, cost13, tau)
        rows.append((f"RAViT 1-3 (tau = {tau:.3f}, val->{ratio:.0%})", None, r.accuracy,
                     r.avg_flops))  # fmt: skip
    n = len(labels)
    print(f"\nTable I analogue: CIFAR-10 test images: {n}, {args.epochs} epochs, seed {args.seed}")
    print(f"{'model':<38} {'top-1 %':>8} {'FLOPs':>10} {'% of 0-4':>9}   paper: "
          f"{'top-1':>5} {'FLOPs':>9} {'%':>4}")  # fmt: skip
    for name, key, acc, flops in rows:
        paper = PAPER.get(key)
        ref = f"{paper[0]:>5} {paper[1]:>9} {paper[2]:>4}" if paper else ""
        print(f"{name:<38} {100 * acc:>8.2f} {format_flops(flops):>10} "
              f"{100 * flops / base:>8.1f}%   {ref:>21}")  # fmt: skip
    return 0


if __name__ == "__main__":
    from ravit.allocator import reexec_with_tuned_allocator

    reexec_with_tuned_allocator()
    sys.exit(main())
