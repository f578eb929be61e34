"""What starting from a trained ViT buys: ViT -> RAViT 1-3 against RAViT 1-3 from scratch.

Per seed, on the CIFAR-10 subset (by default ../shared/data):

1. the teacher: the plain ViT 0-4 (cifar10 preset), --vit-epochs epochs;
2. RAViT 1-3 converted from it with each block-assignment rule (`ravit convert`),
   then fine-tuned --tune-epochs epochs (`ravit train --init`);
3. RAViT 1-3 from scratch for the same total training compute as 1 + 2
   (ViT epochs x the ViT's FLOPs + fine-tuning epochs x RAViT's, in RAViT epochs).

Every model is evaluated on the test split: accuracy without early exit, and with
thresholds calibrated on the validation split at 60 / 70 / 80 % of RAViT's full path.
Runs live in --out and are reused or resumed, so an interrupted benchmark goes on.

    nice -n 10 python benchmarks/bench_from_vit.py --seeds 0,1 --out runs/from-vit
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from ravit.config import model_config, resolve_config
from ravit.convert import convert_run
from ravit.convert.rules import ASSIGNMENTS as RULES
from ravit.convert.rules import assign_blocks
from ravit.cost import format_flops, model_cost
from ravit.evaluation import evaluate_run
from ravit.exits import calibrate_budget, simulate
from ravit.runs import folder as runfs
from ravit.training import fit

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset"
BUDGETS = (0.6, 0.7, 0.8)


def train(run: Path, epochs: int, overrides: list[str], label: str) -> None:
    """Train (or resume, or reuse) the run in `run`."""
    done = len(runfs.read_metrics(run)) if (run / runfs.CONFIG).exists() else -1
    if done >= epochs:
        print(f"  reusing {run} ({done} epochs)", flush=True)
        return
    start = time.perf_counter()
    if done >= 0:  # resume (from scratch when it was killed before its first epoch ended)
        fit(run, resume=True, on_epoch=_log(label))
    else:
        cfg = resolve_config(overrides=overrides + [f"train.epochs={epochs}"])
        fit(run, cfg, on_epoch=_log(label))
    print(f"  {label}: {time.perf_counter() - start:.0f} s", flush=True)


def _log(label: str):
    def log(r: dict) -> None:
        if r["epoch"] % 5 == 0:
            val = "/".join(f"{100 * a:.1f}" for a in r.get("val_acc_exits", []))
            print(f"    {label} epoch {r['epoch']:>3} loss {r['train_loss']:.3f} val % {val} "
                  f"{r['images_per_s']:.0f} img/s", flush=True)  # fmt: skip

    return log


def evaluate(run: Path) -> dict:
    """Test accuracy per exit and at the val-calibrated budgets (of the run's full path)."""
    val, test = evaluate_run(run, split="val"), evaluate_run(run, split="test")
    cost = model_cost(test.model.cfg)
    row = {"exits": test.logits.accuracy(), "flops": cost.total_flops, "budgets": {}}
    if cost.exits[-1].exit == 0:
        return row
    for b in BUDGETS:
        cal = calibrate_budget(val.logits.logits, val.logits.labels, cost, b * cost.total_flops)
        r = simulate(test.logits.logits, test.logits.labels, cost, cal.thresholds)
        row["budgets"][str(b)] = {"accuracy": r.accuracy, "flops": r.avg_flops}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=Path("runs/from-vit"))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--vit-epochs", type=int, default=30)
    ap.add_argument("--tune-epochs", type=int, default=5)
    ap.add_argument("--tune-lr", type=float, default=2e-4)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--vit-layers", default="0-4", help="the teacher ViT (default 0-4)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = f"cifar10:{args.data}"
    vit_flops = model_cost(model_config("cifar10", args.vit_layers)).total_flops
    vit_depth = int(args.vit_layers.split("-")[-1])
    # Rules that deal out the same blocks give the same model: train it once.
    rules: dict[str, list[str]] = {}
    for rule in RULES:
        same = [r for r in rules if assign_blocks(vit_depth, [1, 3], r) ==
                assign_blocks(vit_depth, [1, 3], rule)]  # fmt: skip
        rules.setdefault(same[0] if same else rule, []).append(rule)
    print(
        "block assignments: "
        + "; ".join(
            f"{'='.join(names)}: {assign_blocks(vit_depth, [1, 3], r)}"
            for r, names in rules.items()
        )
    )
    ravit_flops = model_cost(model_config("cifar10", "1-3")).total_flops
    scratch_epochs = math.ceil(
        (args.vit_epochs * vit_flops + args.tune_epochs * ravit_flops) / ravit_flops
    )
    results = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        base = ["model.preset=cifar10", f"data.spec={spec}", f"data.val_size={args.val_size}",
                f"train.seed={seed}", "train.warmup_epochs=1.5"]  # fmt: skip
        vit = args.out / f"vit-{args.vit_layers}-s{seed}"
        train(vit, args.vit_epochs, base + [f"model.layers={args.vit_layers}"],
              f"ViT {args.vit_layers} s{seed}")  # fmt: skip
        results[f"ViT {args.vit_layers} ({args.vit_epochs} ep), s{seed}"] = evaluate(vit)
        for rule, names in rules.items():
            label = "=".join(names)
            conv = args.out / f"convert-{rule}-s{seed}"
            if not (conv / runfs.CHECKPOINT).exists():
                convert_run(vit, conv, layers="1-3", data_spec=spec, rule=rule,
                            val_size=args.val_size, seed=seed)  # fmt: skip
            results[f"converted ({label}), no tuning, s{seed}"] = evaluate(conv)
            tuned = args.out / f"tuned-{rule}-s{seed}"
            train(tuned, args.tune_epochs, base + ["model.layers=1-3", f"train.init={conv}",
                                                   f"train.lr={args.tune_lr}"],
                  f"tuned {rule} s{seed}")  # fmt: skip
            results[f"converted ({label}) + {args.tune_epochs} ep, s{seed}"] = evaluate(tuned)
        scratch = args.out / f"scratch-1-3-s{seed}"
        train(scratch, scratch_epochs, base + ["model.layers=1-3"], f"scratch s{seed}")
        results[f"RAViT 1-3 from scratch ({scratch_epochs} ep), s{seed}"] = evaluate(scratch)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print_table(results, ravit_flops)
    print(f"plot: {plot_results(results, args.out / 'from_vit.png')}")


def plot_results(results: dict, path: Path) -> Path:
    """Test accuracy against average FLOPs: one marker per model and seed, the
    val-calibrated budgets as a line from 60 % to the full path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors: dict[str, str] = {}
    for name, r in results.items():
        kind = name.rsplit(", s", 1)[0]
        xs = [r["budgets"][str(b)]["flops"] for b in BUDGETS if r["budgets"]] + [r["flops"]]
        ys = [r["budgets"][str(b)]["accuracy"] for b in BUDGETS if r["budgets"]]
        ys = [100 * y for y in ys + [r["exits"][-1]]]
        first = kind not in colors
        (line,) = ax.plot([x / 1e6 for x in xs], ys, marker="o", color=colors.get(kind),
                          label=kind if first else None)  # fmt: skip
        colors.setdefault(kind, line.get_color())
    ax.set_xlabel("average FLOPs per image (M); early exit at 60/70/80 % of RAViT 1-3")
    ax.set_ylabel("test accuracy %")
    ax.set_title("ViT -> RAViT 1-3 against RAViT 1-3 from scratch (CIFAR-10 subset)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def print_table(results: dict, ravit_flops: int) -> None:
    head = (
        "model".ljust(52)
        + " exit 1   last    FLOPs   "
        + "  ".join(f"@{int(100 * b)}%" for b in BUDGETS)
    )
    print("\n" + head)
    for name, r in results.items():
        ex = r["exits"]
        first = f"{100 * ex[0]:6.2f}" if len(ex) > 1 else "     -"
        budgets = "  ".join(
            f"{100 * r['budgets'][str(b)]['accuracy']:5.2f}" if r["budgets"] else "    -"
            for b in BUDGETS
        )
        print(f"{name:<52} {first} {100 * ex[-1]:6.2f} {format_flops(r['flops']):>9}  {budgets}")
    print(f"(budgets are fractions of RAViT 1-3's {format_flops(ravit_flops)}; test split)")


if __name__ == "__main__":
    main()
