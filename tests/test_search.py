"""The allocation search: its space and budget checks, a real (tiny) study on digits, its
files, refusals in one line, two workers sharing one study, a killed worker's study resumed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from ravit.cli import main  # noqa: E402
from ravit.search.space import SearchSpace, check_budget, parse_depths, plain_vit  # noqa: E402
from ravit.search.study import SearchSettings, results, run_search  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
SPACE = SearchSpace("digits", ((((0, 1), (1, 2))),), (4,), ("linear",))
TINY = ("data.val_size=0.2", "train.batch_size=64")


def settings(trials=3, **kw) -> SearchSettings:
    return SearchSettings("digits", 2.9e6, epochs=2, trials=trials, overrides=TINY, **kw)


def test_the_space_and_its_budget():
    names = sorted(a.layers for a in SPACE.allocations())
    assert names == ["0-1", "0-2", "1-1", "1-2"]
    assert plain_vit("cifar10") == "0-4" and plain_vit("imagenet") == "0-0-10"
    assert parse_depths(["0:2,1:4"]) == (((0, 2), (1, 4)),)
    with pytest.raises(ValueError, match="expected LOW:HIGH"):
        parse_depths(["0-2"])
    first, _ = check_budget(SPACE, 3e6)
    with pytest.raises(ValueError, match="below the cheapest allowed model's first exit"):
        check_budget(SPACE, first - 1)


def test_a_search_trains_prunes_and_writes_its_folder(tmp_path):
    study = run_search(tmp_path, SPACE, settings())
    trials = results(study)
    done = [t for t in trials if t.state == "COMPLETE" and "duplicate_of" not in t.attrs]
    assert len({t.attrs["allocation"] for t in trials}) == 3 and done
    for t in done:  # the objective: val accuracy with early exit calibrated for the budget
        assert t.attrs["ee_flops"] <= 2.9e6 + 1e-6 and 0 <= t.value <= 1
    rows = list(csv.DictReader((tmp_path / "trials.csv").open())) if (
        tmp_path / "trials.csv").exists() else []  # fmt: skip
    assert rows == []  # the library writes no table; the CLI does (below)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep"),
                 "--no-progress"]) == 0  # fmt: skip
    # Resuming a finished study trains nothing more.
    again = run_search(tmp_path, SPACE, settings())
    assert len(again.trials) == len(study.trials)


def test_the_cli_writes_tables_plot_and_best_run(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["search", "--data", "digits", "--preset", "digits", "--budget", "80%",
            "--depths", "0:1,1:2", "--resolutions", "4", "--trials", "2", "--epochs", "2",
            "--out", str(out), "--no-progress", *TINY]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "allocation 1 of 2" in text and "best so far" in text
    for f in ("trials.csv", "pareto.csv", "pareto.png", "best.json", "study.db"):
        assert (out / f).is_file(), f
    best = json.loads((out / "best.json").read_text())
    assert main(["eval", best["run"], "--json"]) == 0
    capsys.readouterr()
    # Another space under the same study name: refused, one line, nothing changed.
    other = [a if a != "0:1,1:2" else "0:1,1:1" for a in args]
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "belongs to another search" in err and "space" in err and err.count("\n") == 1
    # A budget no allocation meets; a storage that cannot be used.
    low = [a if a != "80%" else "1%" for a in args]
    assert main(low) == 2 and "below the cheapest" in capsys.readouterr().err
    bad = args + ["--storage", f"sqlite:///{tmp_path}/missing/dir/x.db"]
    assert main(bad) == 2 and "cannot be used" in capsys.readouterr().err


WORKER = """
import sys
from ravit.search.space import SearchSpace
from ravit.search.study import SearchSettings, run_search
space = SearchSpace("digits", (((0, 1), (1, 2)),), (4,), ("linear",))
s = SearchSettings("digits", 2.9e6, epochs={epochs}, trials={trials}, heartbeat=1, grace=3,
                   overrides=("data.val_size=0.2", "train.batch_size=64"))
run_search(sys.argv[1], space, s)
"""


def _worker(out: Path, epochs: int, trials: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    code = textwrap.dedent(WORKER.format(epochs=epochs, trials=trials))
    cmd = [sys.executable, "-c", code, str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


@pytest.mark.slow
def test_two_workers_share_one_study_and_a_killed_one_is_resumed(tmp_path):
    workers = [_worker(tmp_path, 2, 4) for _ in range(2)]
    for w in workers:
        out, _ = w.communicate(timeout=300)
        assert w.returncode == 0, out
    study = optuna.load_study(study_name="ravit-search", storage=f"sqlite:///{tmp_path}/study.db")
    by_worker = {t.user_attrs.get("worker") for t in study.trials}
    assert len(by_worker) == 2  # both took trials of the one study
    # A worker killed mid-trial: its trial goes stale, is failed and retried, the study ends.
    killed = tmp_path / "killed"
    w = _worker(killed, 6, 2)
    db = killed / "study.db"
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.5)
        if not db.exists():
            continue
        try:
            s = optuna.load_study(study_name="ravit-search", storage=f"sqlite:///{db}")
        except KeyError:  # the worker has not created the study yet
            continue
        if any(t.state.name == "RUNNING" and t.intermediate_values for t in s.trials):
            break
    w.send_signal(signal.SIGKILL)
    w.wait()
    time.sleep(4)  # past the grace period
    w = _worker(killed, 6, 2)
    out, _ = w.communicate(timeout=300)
    assert w.returncode == 0, out
    s = optuna.load_study(study_name="ravit-search", storage=f"sqlite:///{db}")
    states = [t.state.name for t in s.trials]
    assert "FAIL" in states and "RUNNING" not in states
    assert sum(state in ("COMPLETE", "PRUNED") for state in states) >= 2


def test_a_worker_joining_a_study_draws_its_own_allocations(tmp_path):
    from ravit.search.study import open_study

    big = SearchSpace("digits", (((0, 2), (1, 2), (1, 2)),), (2, 4, 6), ("linear", "mlp"))
    first = open_study(tmp_path, big, settings())  # creates the study: the search's seed
    joined = open_study(tmp_path, big, settings())  # another worker of the same study

    def draws(study, n=6):
        out = []
        for _ in range(n):
            trial = study.ask()
            out.append(big.suggest(trial).name)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return out

    again = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    assert draws(first) == draws(again)  # the creator draws as a one-worker search does
    assert draws(joined) != draws(optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0)))
