"""Validation accuracy per epoch of every run in a suite folder: has it flattened?

One line per run (the last exit; a dashed line for RAViT's first exit), from
each run's metrics.jsonl. Also prints, per run, the last epoch's validation
accuracy and its gain over the last three epochs (a flattened curve gains
little there).

    python benchmarks/plot_curves.py runs/suite-fashion-full \
        --out docs/results/fashion-full/curves.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ravit.runs import folder as runfs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--title", default="validation accuracy per epoch")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    print(f"{'run':<10} {'epochs':>6} {'val % last exit':>16} {'gain, last 3 epochs':>20}")
    for run in sorted(runfs.find_runs(args.folders)):
        records = [r for r in runfs.read_metrics(run) if "val_acc_exits" in r]
        if not records:
            continue
        name = Path(run).name
        epochs = [r["epoch"] for r in records]
        last = [100 * r["val_acc_exits"][-1] for r in records]
        (line,) = ax.plot(epochs, last, label=name)
        if len(records[0]["val_acc_exits"]) > 1:
            first = [100 * r["val_acc_exits"][0] for r in records]
            ax.plot(epochs, first, ls="--", color=line.get_color(), alpha=0.6)
        gain = last[-1] - last[-4] if len(last) >= 4 else float("nan")
        print(f"{name:<10} {epochs[-1]:>6} {last[-1]:>16.2f} {gain:>+20.2f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy % (dashed: RAViT's exit 1)")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
