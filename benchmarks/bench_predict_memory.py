"""Peak memory of `ravit predict` over a folder of N small images: it streams.

Trains a one-epoch digits run (RAViT 1-1, D 32), writes N 32x32 RGB PNGs
(random pixels, fixed seed) into a temporary folder, one in every 1,000 of
them a broken file with a .png extension, and runs

    ravit predict RUN FOLDER --json > /dev/null

in a fresh process per N, through a small parent that reports the child's
peak resident set size (`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`), so
the figure is that one predict process's alone. Memory that stays flat from
2,000 to 20,000 images means the files stream (batches decoded, answered and
printed, then dropped); the answers and the failures are counted too: every
good file answered, every broken one reported, and exit status 1 (some
files failed), never a stop at the first bad file.

    python benchmarks/bench_predict_memory.py                 # N = 2,000 and 20,000
    python benchmarks/bench_predict_memory.py --sizes 500 5000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
BAD_EVERY = 1000

# A parent for one predict: its own peak RSS is not the child's.
MEASURE = r"""
import resource, subprocess, sys
with open(sys.argv[1], "w") as out:
    done = subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.PIPE, text=True)
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
errors = sum(line.startswith("ravit: error:") for line in done.stderr.splitlines())
print(done.returncode, peak_kib, errors)
"""


def write_images(folder: Path, n: int, seed: int = 0) -> int:
    """n files: 32x32 RGB PNGs, every BAD_EVERY-th a broken one; returns the broken count."""
    rng = np.random.default_rng(seed)
    sub = None
    bad = 0
    for i in range(n):
        if i % 1000 == 0:
            sub = folder / f"part{i // 1000:03d}"
            sub.mkdir(parents=True)
        path = sub / f"img{i:06d}.png"
        if i % BAD_EVERY == BAD_EVERY - 1:
            path.write_bytes(b"not a png")
            bad += 1
        else:
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ravit-predict-mem-"))
    rows, ok = [], True
    try:
        run = tmp / "run"
        train = [sys.executable, "-m", "ravit", "train", "--preset", "digits", "--layers", "1-1",
                 "--data", "digits", "--epochs", "1", "--device", "cpu", "--no-progress",
                 "--out", str(run), "model.embed_dim=32", "model.num_heads=2"]  # fmt: skip
        subprocess.run(train, env=ENV, check=True, capture_output=True)
        for n in args.sizes:
            folder = tmp / f"images{n}"
            start = time.perf_counter()
            bad = write_images(folder, n)
            written = time.perf_counter() - start
            out = tmp / f"answers{n}.jsonl"
            cmd = [sys.executable, "-m", "ravit", "predict", str(run), str(folder), "--json",
                   "--device", "cpu", "--batch-size", str(args.batch_size)]  # fmt: skip
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", MEASURE, str(out), *cmd], env=ENV,
                                  capture_output=True, text=True, check=True)  # fmt: skip
            seconds = time.perf_counter() - start
            code, peak_kib, errors = (int(v) for v in done.stdout.split())
            answered = len(out.read_text().splitlines())
            rows.append((n, peak_kib / 1024, answered, errors, code, seconds, written))
            ok &= answered == n - bad and errors == bad and code == (1 if bad else 0)
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"ravit predict over N 32x32 PNGs (1 in {BAD_EVERY} broken), batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'images':>7} {'peak RSS MiB':>12} {'answered':>8} {'failed':>6} {'exit':>4} "
          f"{'predict s':>9} {'img/s':>6}")  # fmt: skip
    for n, mib, answered, errors, code, seconds, _ in rows:
        print(f"{n:>7} {mib:>12.1f} {answered:>8} {errors:>6} {code:>4} {seconds:>9.1f} "
              f"{n / seconds:>6.0f}")  # fmt: skip
    if len(rows) > 1:
        growth = rows[-1][1] - rows[0][1]
        print(f"peak RSS grows by {growth:.1f} MiB from {rows[0][0]} to {rows[-1][0]} images")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
