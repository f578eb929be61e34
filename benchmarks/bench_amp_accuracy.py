"""Does bf16 training hold accuracy? The same runs in fp32 and in bf16 autocast (issue 17).

RAViT 1-3 (cifar10 preset) on the CIFAR-10 subset, 30 epochs, batch 128,
lr 1e-3, 1.5 warm-up epochs, no validation split (issue 13's recipe), seeds
0 and 1, once with `--amp off` and once with `--amp bf16`. Every run is then
evaluated on the 1017 test images twice, in fp32 and in bf16, so that the
training precision and the evaluation precision can be read apart. Runs
already trained in OUT are reused (a stopped benchmark resumes them).

    OMP_NUM_THREADS=1 python benchmarks/bench_amp_accuracy.py --out runs/amp-accuracy

Prints one row per run and the mean per precision; exits 1 when the bf16
mean of the last exit differs from the fp32 mean by more than the larger
per-precision seed spread (max - min) plus one point, unless `--no-check`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RECIPE = ["--preset", "cifar10", "--layers", "1-3", "--val-size", "0", "--batch-size", "128",
          "--lr", "1e-3", "train.warmup_epochs=1.5"]  # fmt: skip


def train(run: Path, amp: str, seed: int, data: str, epochs: int) -> float:
    from ravit.runs import folder

    if (run / folder.CONFIG).is_file():
        done = len(folder.read_metrics(run))
        if done >= epochs:
            return 0.0
        cmd = ["ravit", "train", "--resume", str(run), "--no-progress"]
    else:
        cmd = ["ravit", "train", *RECIPE, "--data", data, "--epochs", str(epochs), "--seed",
               str(seed), "--amp", amp, "--out", str(run), "--no-progress"]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="cifar10:../shared/data/cifar10-subset")
    ap.add_argument("--out", default="runs/amp-accuracy")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args(argv)

    from ravit.evaluation import evaluate_run
    from ravit.runs import folder

    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for seed in seeds:
        for amp in ("off", "bf16"):
            run = Path(args.out) / f"{'fp32' if amp == 'off' else 'bf16'}-s{seed}"
            seconds = train(run, amp, seed, args.data, args.epochs)
            env = json.loads((run / folder.ENV).read_text())
            evals = {e: evaluate_run(run, split="test", amp=e) for e in ("off", "bf16")}
            acc = {e: ev.logits.accuracy() for e, ev in evals.items()}
            rows.append({"run": run.name, "train": env.get("amp", {}).get("train", {}).get("dtype"),
                         "seed": seed, "seconds": round(seconds, 1),
                         "test_fp32_eval": [round(100 * a, 2) for a in acc["off"]],
                         "test_bf16_eval": [round(100 * a, 2) for a in acc["bf16"]]})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)

    print("\ntraining precision | seed | test % per exit, fp32 eval | bf16 eval | train s")
    for r in rows:
        print(f"{r['train']:>18} | {r['seed']:>4} | {r['test_fp32_eval']} | "
              f"{r['test_bf16_eval']} | {r['seconds']}")  # fmt: skip
    last = {p: [r["test_fp32_eval"][-1] for r in rows if r["train"] == p] for p in ("fp32", "bf16")}
    for p, v in last.items():
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"{p}: last exit {statistics.mean(v):.2f} +- {sd:.2f} % ({v})")
    spread = max(max(v) - min(v) for v in last.values())
    gap = abs(statistics.mean(last["bf16"]) - statistics.mean(last["fp32"]))
    ok = gap <= spread + 1.0
    print(f"gap of the means {gap:.2f} points; seed spread {spread:.2f}: "
          f"{'within' if ok else 'BEYOND'} spread + 1 point")  # fmt: skip
    return 0 if ok or args.no_check else 1


if __name__ == "__main__":
    sys.exit(main())
