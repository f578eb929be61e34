"""Faults during training, measured: kills at random moments, signals, a full disk, two trainers.

Every trial trains the same short run (digits, RAViT 1-1, D 32, 3 epochs of 10
steps, 200 validation images, CPU) in a fresh folder, injects one fault, checks
that the run folder still reads (config, split, metrics, checkpoint), resumes
it with a plain `ravit train --resume` (or trains it anew when the fault came
before config.yaml, which marks a run) and compares the final weights with
an uninterrupted run's, bit for bit. The faults:

- kill: SIGKILL, 1/4 each at a random training step, at a random byte of a
  random checkpoint write (`ravit.runs.io.write_chunk`), at a random batch of
  a random validation pass, and at a random wall-clock moment of an
  unmodified `ravit train` (the other three are injected by a driver that
  patches the library in its own process and kills itself with SIGKILL);
- sigterm / sigint: the signal at a random step; expected exit 143 / 130 and
  one line saying how to resume;
- enospc: `OSError(ENOSPC)` at a random byte of a random checkpoint write;
  expected exit 2, one line, the previous checkpoint intact;
- second trainer: `ravit train --resume RUN` and `ravit train --out RUN`
  while RUN trains; expected exit 2 for both, the first run unharmed.

"survived" counts trials whose folder read after the fault and whose resumed
run ended bit-identical to the uninterrupted one (and, for the refusals, the
expected exit code and message); "data lost" counts trials where a saved
checkpoint or metrics record was lost or a folder did not read.

    python benchmarks/bench_faults.py                    # 20 kills, 5 of each other fault
    python benchmarks/bench_faults.py --kills 4 --others 1
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from ravit.runs import folder as runfs  # noqa: E402
from ravit.runs.checkpoint import load_checkpoint, model_from_state  # noqa: E402

EPOCHS, STEPS = 3, 10
TRAIN = [
    "train", "--preset", "digits", "--layers", "1-1", "--data", "digits",
    "--epochs", str(EPOCHS), "--val-size", "200", "--batch-size", "128", "--device", "cpu",
    "--no-progress",
]  # fmt: skip
MODEL = ["model.embed_dim=32", "model.num_heads=2", "data.eval_batch_size=25"]
ENV = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "RAVIT_NO_MALLOC_TUNING": "1"}

# Runs `ravit train` in this process with one fault injected at (fault, a, b).
DRIVER = r"""
import errno, os, signal, sys, time
import ravit.runs.io as run_io
import ravit.training.loop as loop
from ravit.cli import main

fault, a, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
argv = sys.argv[4:]
count = {"steps": 0, "ckpt": 0, "evals": 0, "batches": 0}
SIG = {"kill-step": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigint": signal.SIGINT}

if fault in SIG:  # the signal during step a (counted over the whole run)
    real_lr = loop.lr_at
    def lr_at(*args, **kwargs):
        count["steps"] += 1
        if count["steps"] == a:
            os.kill(os.getpid(), SIG[fault])
        return real_lr(*args, **kwargs)
    loop.lr_at = lr_at

if fault == "slow":  # every step a ms longer: a run that lasts while another process tries it
    real_lr = loop.lr_at
    def lr_at(*args, **kwargs):
        time.sleep(a / 1000)
        return real_lr(*args, **kwargs)
    loop.lr_at = lr_at

if fault in ("kill-checkpoint", "enospc"):  # at byte b of the a-th checkpoint write
    real_write, names = run_io.write_chunk, []
    def write_chunk(f, data):
        if ".checkpoint.pt." in f.name and f.name not in names:
            names.append(f.name)
        if len(names) == a and f.name == names[-1] and f.tell() + len(data) > b:
            if fault == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write(f, data)
    run_io.write_chunk = write_chunk

if fault == "kill-eval":  # at batch b of the a-th validation pass
    real_collect = loop.collect_logits
    def collect_logits(model, data, transform, **kwargs):
        count["evals"] += 1
        def tf(x):
            if count["evals"] == a:
                count["batches"] += 1
                if count["batches"] == b:
                    os.kill(os.getpid(), signal.SIGKILL)
            return transform(x)
        return real_collect(model, data, tf, **kwargs)
    loop.collect_logits = collect_logits

sys.exit(main(argv))
"""


@dataclass
class Row:
    fault: str
    trials: int = 0
    survived: int = 0
    lost: int = 0
    notes: list[str] = field(default_factory=list)


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def ravit(*args: str) -> list[str]:
    return [sys.executable, "-m", "ravit", *args]


def driver(fault: str, a: int, b: int, out: Path) -> list[str]:
    return [sys.executable, "-c", DRIVER, fault, str(a), str(b), *TRAIN, "--out", str(out), *MODEL]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / runfs.CHECKPOINT)["model"]


def same(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def snapshot(out: Path) -> tuple[int, int]:
    """(epochs in the checkpoint, metrics records) of a run folder that must read."""
    if not (out / runfs.CONFIG).exists():
        return 0, 0  # not a run yet (killed before config.yaml): nothing to lose
    runfs.read_config(out)
    runfs.read_split(out)
    records = runfs.read_metrics(out)
    epochs = 0
    if (out / runfs.CHECKPOINT).exists():
        state = load_checkpoint(out / runfs.CHECKPOINT)
        model_from_state(state, str(out))
        epochs = int(state["epoch"])
    return epochs, len(records)


def finish(out: Path) -> subprocess.CompletedProcess:
    """Resume a faulted run (or train it anew when it never became a run)."""
    if (out / runfs.CONFIG).exists():
        return run(ravit("train", "--resume", str(out), "--no-progress"))
    return run(ravit(*TRAIN, "--out", str(out), *MODEL))


def wait_for(path: Path, proc: subprocess.Popen) -> float:
    """Seconds until `path` exists (or `proc` ends)."""
    start = time.perf_counter()
    while not path.exists() and proc.poll() is None:
        time.sleep(0.01)
    return time.perf_counter() - start


def check(row: Row, out: Path, ref: Path, before: tuple[int, int], note: str) -> None:
    """After the fault: the folder reads, the resumed run ends bit-identical."""
    row.trials += 1
    try:
        after = snapshot(out)
    except (OSError, ValueError) as err:
        row.lost += 1
        row.notes.append(f"{note}: unreadable after the fault: {err}")
        return
    if after[0] < before[0]:
        row.lost += 1
        row.notes.append(f"{note}: checkpoint went back from epoch {before[0]} to {after[0]}")
        return
    done = finish(out)
    if done.returncode != 0:
        row.notes.append(f"{note}: resume failed: {done.stderr.strip()[-300:]}")
        return
    if same(out, ref):
        row.survived += 1
    else:
        row.notes.append(f"{note}: resumed weights differ")


def kills(row: Row, n: int, ref: Path, training_s: float, tmp: Path, rng: random.Random) -> None:
    kinds = ["kill-step", "kill-checkpoint", "kill-eval", "kill-time"]
    ckpt_bytes = (ref / runfs.CHECKPOINT).stat().st_size
    for i in range(n):
        kind, out = kinds[i % len(kinds)], tmp / f"kill{i}"
        if kind == "kill-step":
            a, b = rng.randint(1, EPOCHS * STEPS), 0
            note = f"SIGKILL in step {a}"
        elif kind == "kill-checkpoint":
            a, b = rng.randint(1, EPOCHS), rng.randint(0, ckpt_bytes - 1)
            note = f"SIGKILL at byte {b} of checkpoint write {a}"
        elif kind == "kill-eval":
            a, b = rng.randint(1, EPOCHS), rng.randint(1, 8)
            note = f"SIGKILL at batch {b} of validation {a}"
        if kind == "kill-time":  # a moment between config.yaml and the reference's end
            delay = rng.uniform(0, 0.8 * training_s)  # runs vary: leave the last fifth
            note = f"SIGKILL {delay:.2f} s after config.yaml, unmodified ravit train"
            quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
            proc = subprocess.Popen(ravit(*TRAIN, "--out", str(out), *MODEL), env=ENV, **quiet)
            wait_for(out / runfs.CONFIG, proc)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            code = proc.wait()
        else:
            code = run(driver(kind, a, b, out)).returncode
        if code == 0:
            row.notes.append(f"{note}: the run finished before the kill (counted all the same)")
        elif code != -signal.SIGKILL:
            row.notes.append(f"{note}: exit {code}, expected a kill")
        check(row, out, ref, (0, 0), note)


def signals(row: Row, n: int, sig: signal.Signals, ref: Path, tmp: Path, rng) -> None:
    fault, code = ("sigterm", 143) if sig == signal.SIGTERM else ("sigint", 130)
    for i in range(n):
        out, a = tmp / f"{fault}{i}", rng.randint(1, EPOCHS * STEPS - 1)
        done = run(driver(fault, a, 0, out))
        lines = done.stderr.strip().splitlines()
        ok = done.returncode == code and len(lines) == 1 and "--resume" in lines[0]
        if not ok:
            row.notes.append(f"{sig.name} in step {a}: exit {done.returncode}, {lines[-1:]}")
        before = snapshot(out)
        survived = row.survived
        check(row, out, ref, before, f"{sig.name} in step {a}")
        if not ok and row.survived > survived:
            row.survived -= 1


def full_disk(row: Row, n: int, ref: Path, tmp: Path, rng) -> None:
    ckpt_bytes = (ref / runfs.CHECKPOINT).stat().st_size
    for i in range(n):
        out = tmp / f"enospc{i}"
        a, b = rng.randint(2, EPOCHS), rng.randint(0, ckpt_bytes - 1)
        done = run(driver("enospc", a, b, out))
        lines = done.stderr.strip().splitlines()
        note = f"ENOSPC at byte {b} of checkpoint write {a}"
        ok = done.returncode == 2 and len(lines) == 1 and "No space left on device" in lines[0]
        epochs = snapshot(out)[0]
        ok = ok and epochs == a - 1  # the previous checkpoint, intact
        if not ok:
            row.notes.append(f"{note}: exit {done.returncode}, epoch {epochs}, {lines[-1:]}")
        survived = row.survived
        check(row, out, ref, (a - 1, 0), note)
        if not ok and row.survived > survived:
            row.survived -= 1


def second_trainer(row: Row, n: int, ref: Path, tmp: Path) -> None:
    for i in range(n):
        out = tmp / f"twice{i}"
        pipes = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
        first = subprocess.Popen(driver("slow", 400, 0, out), env=ENV, **pipes)  # 12 s longer
        wait_for(out / runfs.CONFIG, first)
        resume = run(ravit("train", "--resume", str(out), "--no-progress"))
        again = run(ravit(*TRAIN, "--out", str(out), *MODEL))
        busy = all(
            r.returncode == 2 and "is being trained by process" in r.stderr
            for r in (resume, again)
        )  # fmt: skip
        first.communicate()
        row.trials += 1
        if busy and first.returncode == 0 and same(out, ref):
            row.survived += 1
        else:
            row.notes.append(f"second trainer: {resume.stderr.strip()} / {again.stderr.strip()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="SIGKILL trials (default 20)")
    ap.add_argument("--others", type=int, default=5, help="trials of each other fault (5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="ravit-faults-"))
    try:
        ref = tmp / "reference"
        start = time.perf_counter()
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        proc = subprocess.Popen(ravit(*TRAIN, "--out", str(ref), *MODEL), env=ENV, **pipes)
        startup_s = wait_for(ref / runfs.CONFIG, proc)
        _, err = proc.communicate()
        ref_seconds = time.perf_counter() - start
        if proc.returncode != 0:
            print(err, file=sys.stderr)
            return 1
        rows = [Row("SIGKILL at a random moment"), Row("SIGTERM at a random step"),
                Row("SIGINT at a random step"), Row("ENOSPC in a checkpoint write"),
                Row("second trainer on a training run")]  # fmt: skip
        kills(rows[0], args.kills, ref, ref_seconds - startup_s, tmp, rng)
        signals(rows[1], args.others, signal.SIGTERM, ref, tmp, rng)
        signals(rows[2], args.others, signal.SIGINT, ref, tmp, rng)
        full_disk(rows[3], args.others, ref, tmp, rng)
        second_trainer(rows[4], args.others, ref, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"reference run: {ref_seconds:.1f} s ({startup_s:.1f} s to config.yaml, then "
          f"{EPOCHS} epochs x {STEPS} steps), torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, seed {args.seed}")  # fmt: skip
    print(f"{'fault':<34} {'trials':>6} {'survived':>8} {'data lost':>9}")
    for r in rows:
        print(f"{r.fault:<34} {r.trials:>6} {r.survived:>8} {r.lost:>9}")
    for r in rows:
        for note in r.notes:
            print(f"  {r.fault}: {note}")
    bad = any(r.survived != r.trials or r.lost for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
