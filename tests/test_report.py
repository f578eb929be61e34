"""Experiment suites (`ravit suite`) and reports (`ravit report`) on tiny digits runs."""

import csv
import math

import pytest
import yaml

from ravit.cli import main
from ravit.reports.report import build_report, mean_std, pareto_front
from ravit.reports.suite import SuiteRun, load_suite, train_suite

CONFIG = {
    "model": {"preset": "digits", "embed_dim": 16, "num_heads": 2, "mlp_dim": 32},
    "data": {"spec": "digits", "val_size": 300},
    "train": {"epochs": 1, "batch_size": 256, "device": "cpu"},
}


def write_suite(tmp_path, runs, config=CONFIG, name="tiny"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "config": config, "runs": runs}))
    return path


def test_suite_expands_groups_in_order_without_duplicates(tmp_path):
    path = write_suite(tmp_path, [
        {"layers": ["0-2", "1-1"], "seeds": [0]},
        {"grid": [[0, 1], [1, 2]]},
        {"layers": ["1-1"], "seeds": [0, 3]},
    ])  # fmt: skip
    suite = load_suite(path)
    names = [r.name for r in suite.runs]
    assert names == ["0-2-s0", "1-1-s0", "0-1-s0", "1-2-s0", "1-1-s3"]
    cfg = suite.run_config(SuiteRun("1-2", 3))
    assert cfg.model.layers == "1-2" and cfg.train.seed == 3 and cfg.model.embed_dim == 16


def test_suite_files_read_yaml_like_run_configs(tmp_path):
    # YAML 1.2, as `ravit train --config`: `amp: off` is the string "off", not False.
    path = tmp_path / "amp.yaml"
    path.write_text("config: {train: {amp: off}}\nruns: [{layers: ['1-1']}]\n")
    assert load_suite(path).run_config(SuiteRun("1-1", 0)).train.amp == "off"


@pytest.mark.parametrize(
    "runs, match",
    [
        ([], "non-empty list"),
        ([{"layers": ["1-1"], "grid": [[0], [1]]}], "either 'layers' or 'grid'"),
        ([{"grid": [[0, 1]]}], "one list of depths per branch"),
        ([{"layers": ["1-1"], "seeds": [-1]}], "seeds"),
        ([{"layers": ["1-1"], "depth": 3}], "keys among"),
        ([{"layers": ["1-x"]}], "1-x"),
    ],
)
def test_bad_suite_files_are_clear_errors(tmp_path, runs, match):
    with pytest.raises(ValueError, match=match):
        load_suite(write_suite(tmp_path, runs))


def test_suite_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["suite", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nconfig: {train: {epochz: 3}}\nruns: [{layers: ['1-1']}]\n")
    assert main(["suite", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "epochz" in err


def test_pareto_front_and_spread():
    pts = [(1.0, 0.5), (2.0, 0.4), (2.0, 0.7), (3.0, 0.7), (4.0, 0.9)]
    assert pareto_front(pts) == [0, 2, 4]
    assert mean_std([0.5])[0] == 0.5 and math.isnan(mean_std([0.5])[1])
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("suite")
    path = write_suite(tmp, [
        {"layers": ["0-2", "1-1"], "seeds": [0]},
        {"grid": [[0, 1], [1, 2]], "seeds": [0]},
        {"layers": ["1-1"], "seeds": [1]},
    ])  # fmt: skip
    folders = train_suite(load_suite(path), tmp / "runs")
    return tmp, path, folders


def test_suite_trains_every_run_and_reuses_finished_ones(suite_runs, capsys):
    tmp, path, folders = suite_runs
    assert [f.name for f in folders] == ["0-2-s0", "1-1-s0", "0-1-s0", "1-2-s0", "1-1-s1"]
    assert all((f / "checkpoint.pt").is_file() for f in folders)
    states = []
    train_suite(load_suite(path), tmp / "runs", on_run=lambda r, s: states.append(s))
    assert states == ["done"] * 5
    # Another config in the same folder is refused, not mixed in.
    with pytest.raises(ValueError, match="another config.*train.epochs"):
        train_suite(load_suite(path), tmp / "runs", overrides=["train.epochs=2"])


def test_report_tables_csv_and_plots(suite_runs):
    tmp, _, folders = suite_runs
    rep = build_report(folders, tmp / "report", reference="0-2")
    names = sorted(f.name for f in rep.files)
    assert names == sorted([
        "runs.csv", "summary.csv", "accuracy_vs_flops.png", "grid.png", "early_exit.png",
        "exit_fractions.png", "report.md",
    ])  # fmt: skip
    assert all(f.stat().st_size > 0 for f in rep.files)
    runs = list(csv.DictReader((tmp / "report" / "runs.csv").open()))
    assert len(runs) == 5 and {r["layers"] for r in runs} == {"0-1", "0-2", "1-1", "1-2"}
    summary = list(csv.DictReader((tmp / "report" / "summary.csv").open()))
    two_seeds = [r for r in summary if r["layers"] == "1-1" and r["setting"] == "no early exit"]
    assert two_seeds[0]["seeds"] == "2" and two_seeds[0]["test_acc_std"] != ""
    ref = [r for r in summary if r["layers"] == "0-2"][0]
    assert float(ref["pct_of_reference"]) == 100.0
    # Early exit of the 2-exit models: the paper's taus and val-calibrated budgets.
    settings = {r["setting"] for r in summary if r["layers"] == "1-1"}
    assert {"no early exit", "tau=0.05", "tau=0.15", "val budget 72%"} <= settings
    for r in summary:
        if r["setting"].startswith("val budget"):
            assert float(r["pct_of_reference"]) <= 100
    text = (tmp / "report" / "report.md").read_text()
    assert "## Table I" in text and "![grid](grid.png)" in text


def test_suite_cli_reuses_finished_runs_and_reports(suite_runs, capsys):
    tmp, path, folders = suite_runs
    assert main(["suite", str(path), "--out", str(tmp / "runs"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished, reused") == 5 and "loss" not in out
    # No 4-layer ViT among the runs: the dearest model is the reference, every model is listed.
    assert "reference 1-2" in out and "| ViT 0-1 | 1 |" in out
    assert (tmp / "runs" / "report" / "report.md").is_file()


def test_report_cli_takes_the_budgets(suite_runs, tmp_path, capsys):
    tmp, _, folders = suite_runs
    out = tmp_path / "r"
    assert main(["report", *map(str, folders), "--out", str(out), "--budgets", "80%,0.6",
                 "--no-progress"]) == 0  # fmt: skip
    settings = {r["setting"] for r in csv.DictReader((out / "summary.csv").open())}
    assert {"val budget 80%", "val budget 60%"} <= settings and "val budget 72%" not in settings
    capsys.readouterr()
    for bad in ("70", "abc%", "0"):
        assert (
            main(["report", str(folders[0]), "--out", str(tmp_path / "x"), "--budgets", bad]) == 2
        )
        assert "--budgets" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_report_cli_errors(suite_runs, tmp_path, capsys):
    tmp, _, folders = suite_runs
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")]) == 2
    assert "no run folders" in capsys.readouterr().err
    assert main(["report", str(folders[0]), "--out", str(tmp_path / "r3"),
                 "--reference", "9-9"]) == 2  # fmt: skip
    assert "9-9" in capsys.readouterr().err


def test_report_refuses_mixed_data_sets_before_evaluating(suite_runs, tmp_path):
    import shutil

    _, _, folders = suite_runs
    other = tmp_path / "other"
    shutil.copytree(folders[0], other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["data"]["spec"] = "mnist:/nowhere"
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="different data sets .*digits, mnist"):
        build_report([folders[0], other], tmp_path / "rep")
    assert not (tmp_path / "rep").exists()
    with pytest.raises(FileNotFoundError, match="not a ravit run folder"):
        build_report([tmp_path], tmp_path / "rep")


def test_a_run_another_process_trains_is_skipped_and_the_rest_trained(tmp_path, capsys):
    from ravit.runs.lock import hold_run
    from ravit.training import fit

    path = write_suite(tmp_path, [{"layers": ["0-1", "0-2"], "seeds": [0]}],
                       config={**CONFIG, "train": {**CONFIG["train"], "epochs": 2}})  # fmt: skip
    suite = load_suite(path)
    first = SuiteRun("0-1", 0)

    # Another process has trained one epoch of 0-1 and holds its folder.
    def stop(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "runs" / first.name, suite.run_config(first), on_epoch=stop)
    states = []
    with hold_run(tmp_path / "runs" / first.name):
        folders = train_suite(suite, tmp_path / "runs", on_run=lambda r, s: states.append(s))
    assert states == ["resume", "busy", "new"]
    assert [f.name for f in folders] == ["0-2-s0"]
    assert (tmp_path / "runs" / "0-2-s0" / "checkpoint.pt").is_file()
    capsys.readouterr()
    # The report of the suite's folder leaves the unfinished run out, and says so.
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"),
                 "--no-progress"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "left out: " in out and "0-1-s0 has trained 1 of its 2 epochs" in out
    runs = list(csv.DictReader((tmp_path / "rep" / "runs.csv").open()))
    assert [r["layers"] for r in runs] == ["0-2"]
