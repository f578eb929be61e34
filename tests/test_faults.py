"""Faults during training: signals, a full disk, two trainers, hand-edited run folders.

docs/reliability.md lists each fault, how it is handled and the figure measured.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ravit.runs.io as run_io
import ravit.training.loop as loop
from ravit.cli import main
from ravit.runs.checkpoint import load_checkpoint
from ravit.runs.lock import LOCK, hold_run

SRC = Path(__file__).resolve().parents[1] / "src"
# digits: 1438 training images, 200 of them for validation: 10 steps of 128 per epoch.
TRAIN = [
    "train", "--preset", "digits", "--layers", "1-1", "--data", "digits", "--epochs", "2",
    "--val-size", "200", "--batch-size", "128", "--device", "cpu", "--no-progress",
]  # fmt: skip
MODEL = ["model.embed_dim=32", "model.num_heads=2"]
STEPS = 10
TIMING = {"images_per_s", "epoch_seconds"}


def train_argv(out: Path) -> list[str]:
    return [*TRAIN, "--out", str(out), *MODEL]


def resume_argv(run: Path) -> list[str]:
    return ["train", "--resume", str(run), "--no-progress"]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoint.pt")["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must end equal to."""
    run = tmp_path_factory.mktemp("faults") / "straight"
    assert main(train_argv(run)) == 0
    return run


@pytest.fixture
def copy_of(straight, tmp_path):
    def copy() -> Path:
        dst = tmp_path / "copy"
        shutil.copytree(straight, dst)
        return dst

    return copy


def _signal_at(monkeypatch, call: int, sig: signal.Signals) -> None:
    """Send `sig` to this process during the `call`-th step (its learning-rate lookup)."""
    real, calls = loop.lr_at, []

    def lr_at(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), sig)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "lr_at", lr_at)


# -- SIGINT / SIGTERM -------------------------------------------------------------


@pytest.mark.parametrize(
    "sig, code, call, where, at",
    [
        (signal.SIGTERM, 143, 4, f"in epoch 1 after step 4 of {STEPS}", (0, 4)),
        (signal.SIGINT, 130, STEPS + 3, f"in epoch 2 after step 3 of {STEPS}", (1, 3)),
        (signal.SIGTERM, 143, STEPS, "after epoch 1", (1, 0)),  # in the last step: epoch ends
    ],
)  # fmt: skip
def test_signal_stops_at_the_step_boundary_and_resumes_exactly(
    straight, tmp_path, capsys, monkeypatch, sig, code, call, where, at
):
    run = tmp_path / "run"
    _signal_at(monkeypatch, call, sig)
    assert main(train_argv(run)) == code
    err = one_line(capsys)
    assert f"stopped by {sig.name} {where}; resumable checkpoint: {run / 'checkpoint.pt'}" in err
    assert err.endswith(f"resume with: ravit train --resume {run}")
    state = load_checkpoint(run / "checkpoint.pt")
    assert (state["epoch"], state.get("step", 0)) == at
    assert not (run / LOCK).exists()  # released
    assert main(resume_argv(run)) == 0
    assert same_weights(run, straight), "the resumed run's weights differ"
    assert records(run) == records(straight)  # the interrupted epoch's sums carried over


# -- two trainers, one folder --------------------------------------------------------


def test_a_second_trainer_into_the_same_out_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    with hold_run(run):  # another `ravit train --out run` is running
        assert main(train_argv(run)) == 2
        err = one_line(capsys)
        assert f"{run} is being trained by process {os.getpid()}" in err
        assert not (run / "config.yaml").exists()
    assert not run.exists()  # nothing was ever written: the folder went with the lock


def test_resume_of_a_run_a_live_process_trains_is_refused_and_a_kill_frees_it(copy_of, capsys):
    run = copy_of()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom ravit.runs.lock import hold_run\n"
         "with hold_run(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n",
         str(run)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(SRC)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(resume_argv(run)) == 2
        assert f"is being trained by process {holder.pid}" in one_line(capsys)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / LOCK).exists()  # a killed holder leaves the file, not the lock
    assert main(resume_argv(run)) == 0  # the kernel dropped the flock with the process
    assert not (run / LOCK).exists()


# -- a full disk -----------------------------------------------------------------


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(
    straight, tmp_path, capsys, monkeypatch
):
    run, real = tmp_path / "run", run_io.write_chunk
    opened: list[str] = []

    def disk_full_in_second_checkpoint(f, data):
        if ".checkpoint.pt." in f.name and f.name not in opened:
            opened.append(f.name)
        if len(opened) == 2 and f.name == opened[1] and f.tell() > 4096:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(f, data)

    monkeypatch.setattr(run_io, "write_chunk", disk_full_in_second_checkpoint)
    assert main(train_argv(run)) == 2
    err = one_line(capsys)
    assert err == (
        f"ravit: error: {run / 'checkpoint.pt'}: could not be written: No space left on device "
        "(ENOSPC); the previous checkpoint.pt is unchanged"
    )
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1  # the previous one, readable
    assert not [p for p in run.iterdir() if p.suffix == ".tmp"]
    monkeypatch.undo()
    assert main(resume_argv(run)) == 0  # the space is back: the run goes on
    assert same_weights(run, straight) and records(run) == records(straight)


def test_an_append_cut_short_is_dropped_on_resume(copy_of):
    run = copy_of()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_lo')  # a kill (or a full disk) mid-append
    assert main(["eval", str(run)]) == 0
    assert main(resume_argv(run)) == 0
    assert [r["epoch"] for r in records(run)] == [1, 2]


# -- run folders edited by hand ----------------------------------------------------


def test_thresholds_with_the_wrong_number_of_exits_name_the_file(copy_of, tmp_path, capsys):
    from PIL import Image

    run = copy_of()
    assert main(["calibrate", str(run), "--budget", "0.8"]) == 0
    capsys.readouterr()
    path = run / "thresholds.json"
    saved = json.loads(path.read_text())
    saved["calibration"]["thresholds"] = [0.1, 0.2, 0.3]
    path.write_text(json.dumps(saved))
    image = tmp_path / "x.png"
    Image.new("L", (8, 8)).save(image)
    for argv in (["eval", str(run)], ["predict", str(run), str(image)]):
        assert main(argv) == 2
        assert one_line(capsys) == (
            f"ravit: error: {path} holds 3 thresholds; the model of {run / 'config.yaml'} has 1 "
            "early exit: calibrate it again"
        )
    path.write_text("{not json")
    assert main(["eval", str(run)]) == 2
    assert f"{path} is not valid JSON" in one_line(capsys)


def test_a_config_that_does_not_match_the_checkpoint_names_both(copy_of, capsys):
    run = copy_of()
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("embed_dim: 32", "embed_dim: 48"))
    assert main(["eval", str(run)]) == 2
    err = one_line(capsys)
    assert f"{run / 'checkpoint.pt'} holds a model '1-1' that is not the one {config}" in err
    assert "embed_dim 32, not 48" in err and "a checkpoint of another model" in err
    assert main(resume_argv(run)) == 2
    assert f"{config}:" in one_line(capsys)


# -- SIGKILL at random moments (benchmarks/bench_faults.py runs 20) -------------------


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("RAVIT_SLOW_TESTS"), reason="about a minute: RAVIT_SLOW_TESTS=1 runs it"
)
def test_sigkill_mid_step_mid_checkpoint_and_mid_validation_resume_exactly():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_faults.py"
    done = subprocess.run(
        [sys.executable, str(script), "--kills", "3", "--others", "0", "--seed", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    row = next(x for x in done.stdout.splitlines() if x.startswith("SIGKILL"))
    assert row.split()[-3:] == ["3", "3", "0"], done.stdout  # trials, survived, data lost
