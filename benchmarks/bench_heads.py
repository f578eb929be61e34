"""Exit heads and early-exit distillation on real CIFAR-10 images.

(a) Exit heads. The cifar10 preset's RAViT 1-3 (16 / 32 px, D 128) trained
    once per exit head (linear + the seven of docs/exit-heads.md), the head on
    the early exit and the paper's linear head on the last exit, so that the
    runs differ only in the head that decides whether an image leaves early.
    Same data, epochs, seed and recipe for all. Printed per head: the head's
    FLOPs, the cumulative FLOPs C_1, C_2 and the test accuracy of each exit,
    then the early-exit curve: test accuracy (and the share of images leaving
    at exit 1) when entropy thresholds are calibrated on the validation split
    (`ravit.exits.calibrate_budget`) for average budgets of 60 ... 100 % of the
    linear-head model's full path (89.99 MFLOPs), the same absolute budgets
    for every head.

(b) Distillation. Teacher: the linear-head RAViT 1-3 of (a). Student: RAViT
    1-1 (16 / 32 px), trained alone and distilled from the teacher
    (`ravit.training.distill`: the default settings, and beta = 0, the KL term
    without the entropy term), same epochs, seed and data.
    Printed: the students' exit accuracies and early-exit curves (budgets as
    fractions of the student's own full path, 34.55 MFLOPs).

    nice -n 10 python benchmarks/bench_heads.py --epochs 5 --threads 1 --out runs/heads

On a CPU shared with other jobs, `--threads 1` makes far better use of the
CPU time a niced job gets than torch's two threads, whose OpenMP workers
spin while their partner is descheduled (measured here at load 7, batch 64,
RAViT 1-3 forward + backward + AdamW: 6 CPU-ms per image with one thread,
14 to 48 with two; 22-24 images/s against 5-60).

Batch 64 (not the paper's 256): on 4577 training images five epochs are then
360 optimiser steps instead of 90, which a short run needs for the 32 px
branch to learn more than the 16 px one. Runs that already exist in --out
are reused (resumed if unfinished), so a second call only prints. Data: the
5085-image CIFAR-10 subset in ../shared/data (500 carved for validation,
1017 test images).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ravit.config import EXIT_HEADS, ModelConfig
from ravit.cost import ModelCost, format_flops, model_cost
from ravit.evaluation import RunEvaluation, evaluate_run
from ravit.exits import EarlyExitResult, calibrate_budget, simulate
from ravit.runs import folder as runfs
from ravit.training import fit, resolve_config
from ravit.training.distill import DistillConfig, distill, resume_distill, student_config

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset"
BUDGETS = (0.6, 0.7, 0.8, 0.9, 1.0)


def base_overrides(args: argparse.Namespace) -> list[str]:
    return [
        "model.preset=cifar10",
        "model.layers=1-3",
        f"data.spec=cifar10:{args.data}",
        f"data.val_size={args.val_size}",
        f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}",
        f"train.seed={args.seed}",
        f"train.device={args.device}",
    ]


def _log(name: str) -> Callable[[dict], None]:
    def log(r: dict) -> None:
        val = "/".join(f"{100 * a:.1f}" for a in r.get("val_acc_exits", []))
        print(f"  {name} epoch {r['epoch']:>3} loss {r['train_loss']:.3f} val acc % {val} "
              f"{r['images_per_s']:.0f} img/s", flush=True)  # fmt: skip

    return log


def ensure(run: Path, epochs: int, name: str, start: Callable, resume: Callable) -> Path:
    """Train `run` with start(), resume it with resume() (to `epochs`), or reuse it if done."""
    if (run / runfs.CONFIG).exists():
        if len(runfs.read_metrics(run)) >= epochs:
            print(f"reusing {run}", flush=True)
            return run
        print(f"resuming {run}", flush=True)
        resume(run, [f"train.epochs={epochs}"], _log(name))
        return run
    t0 = time.perf_counter()
    start(run, _log(name))
    print(f"trained {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def train_heads(args: argparse.Namespace) -> dict[str, Path]:
    runs = {}
    for head in args.heads:
        cfg = resolve_config(overrides=base_overrides(args) + [f"model.exit_heads={head},linear"])
        runs[head] = ensure(
            args.out / f"c10-1-3-{head}", args.epochs, f"1-3 {head}",
            lambda run, log, cfg=cfg: fit(run, cfg, on_epoch=log),
            lambda run, more, log: fit(run, resume=True, overrides=more, on_epoch=log),
        )  # fmt: skip
    return runs


def train_students(args: argparse.Namespace, teacher: Path) -> dict[str, Path]:
    cfg = student_config(teacher, overrides=[f"model.layers={args.student}"])
    alone = ensure(
        args.out / f"c10-{args.student}-alone", args.epochs, f"{args.student} alone",
        lambda run, log: fit(run, cfg, on_epoch=log),
        lambda run, more, log: fit(run, resume=True, overrides=more, on_epoch=log),
    )  # fmt: skip
    runs = {"alone": alone}
    # The default settings, and the KL term alone (beta 0) to tell the two terms apart.
    for name, dcfg in (("distilled", DistillConfig()), ("distilled beta=0", DistillConfig(beta=0))):
        runs[name] = ensure(
            args.out / f"c10-{args.student}-{name.replace(' ', '-')}", args.epochs,
            f"{args.student} {name}",
            lambda run, log, dcfg=dcfg: distill(run, teacher, cfg, dcfg, on_epoch=log),
            lambda run, more, log: resume_distill(run, more, on_epoch=log),
        )  # fmt: skip
    return runs


def curve(
    val: RunEvaluation, test: RunEvaluation, cost: ModelCost, budgets: Sequence[float]
) -> list[EarlyExitResult | None]:
    """Test results at thresholds calibrated on val for each absolute budget (None: below
    the cheapest exit)."""
    out = []
    for b in budgets:
        if b < cost.exits[0].cumulative_flops:
            out.append(None)
            continue
        cal = calibrate_budget(val.logits.logits, val.logits.labels, cost, b)
        out.append(simulate(test.logits.logits, test.logits.labels, cost, cal.thresholds))
    return out


def print_models(title: str, evals: dict[str, tuple], reference: int) -> None:
    """Per model: exit costs and accuracies, then the early-exit curve and exit-1 shares."""
    print(f"\n{title}")
    print(f"{'model':<22} {'head FLOPs':>10} {'C_1':>9} {'C_2':>9} {'acc 1 %':>8} {'acc 2 %':>8}")
    for name, (_, test, cost, _) in evals.items():
        acc = test.logits.accuracy()
        c = cost.cumulative_flops
        print(f"{name:<22} {format_flops(cost.exits[0].head_flops):>10} {format_flops(c[0]):>9} "
              f"{format_flops(c[1]):>9} {100 * acc[0]:>8.2f} {100 * acc[1]:>8.2f}")  # fmt: skip
    cols = "".join(f"{f'{100 * b:.0f}%':>9}" for b in BUDGETS)
    for what in ("test accuracy %", "share leaving at exit 1 %", "realised test cost %"):
        print(f"\n{what} at a budget of ... of {format_flops(reference)} (calibrated on val)")
        print(f"{'model':<22}{cols}")
        for name, (*_, points) in evals.items():
            cells = "".join(f"{_cell(r, what, reference):>9}" for r in points)
            print(f"{name:<22}{cells}")


def _cell(r: EarlyExitResult | None, what: str, reference: int) -> str:
    if r is None:
        return "-"
    if what.startswith("test"):
        return f"{100 * r.accuracy:.2f}"
    if what.startswith("share"):
        return f"{100 * r.exit_fractions[0]:.1f}"
    return f"{100 * r.avg_flops / reference:.1f}"


def full_path_flops(run: Path) -> int:
    return model_cost(ModelConfig.from_dict(runfs.read_config(run)[1])).total_flops


def evaluate(runs: dict[str, Path], reference: int) -> dict[str, tuple]:
    """Per run: (val, test, cost, the early-exit curve at BUDGETS x reference FLOPs)."""
    evals = {}
    for name, run in runs.items():
        val, test = evaluate_run(run, split="val"), evaluate_run(run, split="test")
        cost = model_cost(test.model.cfg)
        evals[name] = (val, test, cost, curve(val, test, cost, [b * reference for b in BUDGETS]))
    return evals


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAR-10 folder")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64, help="64: 4x the optimiser steps of 256")
    p.add_argument("--val-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--heads", default=",".join(EXIT_HEADS), help="exit heads to compare")
    p.add_argument("--student", default="1-1", help="the student's layers")
    p.add_argument("--out", type=Path, default=Path("runs/heads"))
    p.add_argument(
        "--threads", type=int, help="torch threads (default torch's); 1 on a crowded CPU"
    )
    args = p.parse_args(argv)
    args.heads = [h.strip() for h in args.heads.split(",")]
    if "linear" not in args.heads:
        args.heads.insert(0, "linear")  # the reference and the teacher
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.is_dir():
        print(f"bench_heads: no CIFAR-10 folder at {args.data}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    runs = train_heads(args)
    students = train_students(args, runs["linear"])
    ref, ref_student = full_path_flops(runs["linear"]), full_path_flops(students["alone"])
    heads = evaluate({f"{h},linear": r for h, r in runs.items()}, ref)
    pupils = {"1-3 teacher": runs["linear"]} | {
        f"{args.student} {k}": r for k, r in students.items()
    }
    pupils = evaluate(pupils, ref_student)
    n = len(heads["linear,linear"][1].logits.labels)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nCIFAR-10 subset, {n} test images, {args.epochs} epochs, seed {args.seed}; "
          f"{time.perf_counter() - t0:.0f} s, load average {load:.2f}")  # fmt: skip
    print_models("(a) RAViT 1-3, exit heads (early exit, last exit)", heads, ref)
    title = f"(b) RAViT {args.student} student: alone vs distilled from {runs['linear']}"
    print_models(title, pupils, ref_student)
    return 0


if __name__ == "__main__":
    from ravit.allocator import reexec_with_tuned_allocator

    reexec_with_tuned_allocator()
    sys.exit(main())
