"""Make a long suite's finished runs small enough to commit, so a later session reuses them.

For every run folder under FOLDER that has trained all its epochs, the
checkpoint is rewritten without its optimiser state (the model, its config and
the data section stay: `ravit eval`, `report`, `convert` and `train --init`
read it as before; only `--resume`, which a finished run never needs, would
miss the optimiser), and the files worth keeping are printed, one per line,
for `git add -f` (runs/ is git-ignored):

    python benchmarks/keep_runs.py runs/suite-fashion-full | xargs git add -f

Unfinished runs are left alone (a resumed run needs its optimiser); `--all`
prints their files too, the full checkpoint included, to carry one over to
the next session.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ravit.runs import folder as runfs
from ravit.runs.checkpoint import load_checkpoint
from ravit.runs.io import atomic_write

KEEP = (runfs.CONFIG, runfs.ENV, runfs.SPLIT, runfs.METRICS, runfs.CHECKPOINT, runfs.THRESHOLDS)


def slim(checkpoint: Path) -> int:
    """Drop the optimiser state; returns the bytes saved (0 when it had none)."""
    state = load_checkpoint(checkpoint)
    if "optimizer" not in state:
        return 0
    before = checkpoint.stat().st_size
    state.pop("optimizer")
    atomic_write(checkpoint, lambda tmp: torch.save(state, tmp))
    return before - checkpoint.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--all", action="store_true", help="also the files of unfinished runs")
    args = ap.parse_args(argv)
    for run in runfs.find_runs([str(f) for f in args.folders]):
        run = Path(run)
        trained, asked = runfs.epochs_trained(run)
        if trained >= asked:
            saved = slim(run / runfs.CHECKPOINT)
            if saved:
                print(f"{run}: optimiser state dropped ({saved / 1e6:.1f} MB)", file=sys.stderr)
        elif not args.all:
            print(f"{run}: unfinished, left out", file=sys.stderr)
            continue
        for name in KEEP:
            if (run / name).is_file():
                print(run / name)
        for cached in sorted((run / runfs.CACHE).glob("*.pt")):
            print(cached)
    return 0


if __name__ == "__main__":
    sys.exit(main())
