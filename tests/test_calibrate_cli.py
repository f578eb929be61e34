import json

import pytest

from ravit.cli import main
from ravit.exits.budget import parse_budget
from ravit.training import fit, resolve_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "digits"
    cfg = resolve_config(None, [
        "model.preset=digits", "model.layers=1-1", "model.embed_dim=32", "model.num_heads=2",
        "data.spec=digits", "data.val_size=300", "train.epochs=3", "train.batch_size=64",
        "train.device=cpu",
    ])  # fmt: skip
    fit(path, cfg)
    return path


def test_parse_budget():
    assert parse_budget("0.7", 1000) == pytest.approx(700)
    assert parse_budget("70%", 1000) == pytest.approx(700)
    assert parse_budget("60M", 10**9) == pytest.approx(6e7)
    assert parse_budget("1.5G", 10**10) == pytest.approx(1.5e9)
    assert parse_budget("6e7", 10**9) == pytest.approx(6e7)
    assert parse_budget("100%", 999) == 999 and parse_budget("1", 999, 100) == 999
    assert parse_budget("10%", 1000, 100) == pytest.approx(100)  # the cheapest is reachable


@pytest.mark.parametrize(
    "text, match",
    [("150%", "'150%' is 150% of the full path: a budget can be at most 100%"),
     ("1.2G", "'1.2G' is 120% of the full path"), ("100.1%", "at most 100%"),
     ("9%", "is below the cheapest reachable budget, 10% (100M FLOPs: every image leaving"),
     ("1.5", "below the cheapest reachable budget"), ("nan", "positive and finite"),
     ("-5%", "positive")],
)  # fmt: skip
def test_parse_budget_refuses_what_no_threshold_reaches(text, match):
    with pytest.raises(ValueError) as info:
        parse_budget(text, 10**9, 10**8)
    assert match in str(info.value)


def test_calibrate_budget_saves_thresholds_used_by_eval(run, capsys):
    assert main(["calibrate", str(run), "--budget", "0.6", "--json"]) == 0
    saved = json.loads(capsys.readouterr().out)
    assert saved["calibration"]["predicted"]["flops_ratio"] <= 0.6 + 1e-9
    assert json.loads((run / "thresholds.json").read_text()) == saved
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "calibrated thresholds" in out


def test_calibrate_max_drop(run, capsys):
    assert main(["calibrate", str(run), "--max-drop", "2"]) == 0
    out = capsys.readouterr().out
    assert "at most 2.00 points" in out and "<- test" in out


@pytest.mark.parametrize(
    "argv, match",
    [(["--budget", "cheap"], "expected a fraction"), (["--budget", "0.01"], "below"),
     (["--max-drop", "150"], "accuracy points"),
     (["--budget", "150%"], "budget '150%' is 150% of the full path: a budget can be at most 100%"),
     (["--budget", "1.01"], "below the cheapest reachable budget, "),
     (["--budget", "2%"], "is below the cheapest reachable budget, ")],
)  # fmt: skip
def test_calibrate_bad_input(run, capsys, argv, match):
    before = (run / "thresholds.json").read_bytes() if (run / "thresholds.json").exists() else None
    assert main(["calibrate", str(run), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err
    after = (run / "thresholds.json").read_bytes() if (run / "thresholds.json").exists() else None
    assert after == before  # nothing saved


def test_calibrate_full_budget_means_no_early_exit(run, capsys):
    assert main(["calibrate", str(run), "--budget", "100%", "--json"]) == 0
    saved = json.loads(capsys.readouterr().out)
    assert saved["calibration"]["thresholds"] == [0.0]
    assert saved["calibration"]["predicted"]["flops_ratio"] == 1.0


def test_calibrate_cheapest_budget_is_named_and_reachable(run, capsys):
    from ravit.cost import model_cost
    from ravit.runs import load_run_model

    cost = model_cost(load_run_model(run)[0].cfg)
    cheapest = cost.exits[0].cumulative_flops
    assert main(["calibrate", str(run), "--budget", f"{cheapest - 1}"]) == 2
    share = f"{100 * cheapest / cost.total_flops:.4g}%"
    assert f"below the cheapest reachable budget, {share}" in capsys.readouterr().err
    assert main(["calibrate", str(run), "--budget", f"{cheapest}", "--json"]) == 0
    saved = json.loads(capsys.readouterr().out)
    assert saved["calibration"]["thresholds"] == ["inf"]  # every image leaves at exit 1


def test_control_simulation_writes_a_plot(run, capsys):
    assert main(["control", str(run), "--window", "50", "--targets", "0.8,0.5"]) == 0
    out = capsys.readouterr().out
    assert "target  80.0%" in out and "target  50.0%" in out
    assert (run / "control.png").stat().st_size > 1000


def test_predict_cli_answers_good_files_and_reports_bad_ones(run, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, mode in enumerate(["L", "RGB", "RGBA"]):
        shape = (20, 30) if mode == "L" else (20, 30, len(mode))
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(
            tmp_path / f"img{i}.png"
        )
    (tmp_path / "broken.png").write_bytes(b"not an image")
    code = main(["predict", str(run), str(tmp_path), "--json", "--thresholds", "0"])
    captured = capsys.readouterr()
    assert code == 1, "some files failed"
    lines = [json.loads(x) for x in captured.out.splitlines()]
    assert len(lines) == 3 and all(r["exit"] == 2 for r in lines)
    assert {"class_name", "probability", "entropy", "flops"} <= set(lines[0])
    assert "broken.png" in captured.err
    assert main(["predict", str(run), str(tmp_path / "img0.png")]) == 0


def test_settling_count_is_the_images_until_the_error_stays_in_the_band():
    from ravit.exits.controller import settled_after

    assert settled_after([0.3, 0.2, 0.04, 0.06, 0.01, 0.0], 0.05) == 4
    assert settled_after([0.01, 0.02], 0.05) == 0
    assert settled_after([0.01, 0.09], 0.05) is None  # never
