import json
import shutil

import pytest
import torch

from ravit.cli import main
from ravit.runs.checkpoint import load_checkpoint
from ravit.runs.io import atomic_write
from ravit.training import fit, resolve_config

SMALL = [
    "model.preset=digits",
    "model.layers=1-1",
    "model.embed_dim=32",
    "model.num_heads=2",
    "data.spec=digits",
    "data.val_size=200",
    "train.batch_size=128",
    "train.device=cpu",
]


def small_config(epochs=2, **extra):
    return resolve_config(
        None, SMALL + [f"train.epochs={epochs}"] + [f"{k}={v}" for k, v in extra.items()]
    )


def test_run_folder_contents(tmp_path):
    records = fit(tmp_path / "run", small_config(epochs=1))
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.pt", "config.yaml", "env.json", "metrics.jsonl", "split.json"
    ]  # fmt: skip
    (rec,) = records
    assert rec["epoch"] == 1 and len(rec["train_acc_exits"]) == 2 and len(rec["val_acc_exits"]) == 2
    assert rec["images_per_s"] > 0 and rec["lr"] > 0
    env = json.loads((run / "env.json").read_text())
    assert {"git_sha", "torch", "python", "device"} <= set(env)
    assert len(json.loads((run / "split.json").read_text())["val_indices"]) == 200
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["epoch"] == 1 and state["data"]["classes"][0] == "0"


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path):
    fit(tmp_path / "straight", small_config(epochs=3))

    def interrupt(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "cut", small_config(epochs=3), on_epoch=interrupt)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 1
    records = fit(tmp_path / "cut", resume=True)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")

    def broken(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_existing_run_is_never_overwritten(tmp_path):
    fit(tmp_path / "run", small_config(epochs=1))
    with pytest.raises(ValueError, match="already holds a run"):
        fit(tmp_path / "run", small_config(epochs=1))


def _cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def test_train_and_eval_from_the_cli(tmp_path, capsys):
    run = str(tmp_path / "run")
    argv = ["train", "--preset", "digits", "--layers", "1-1", "--data", "digits", "--epochs", "1"]
    argv += ["--out", run, "model.embed_dim=32", "model.num_heads=2", "train.batch_size=256"]
    code, out, _ = _cli(argv, capsys)
    assert code == 0 and "epoch   1" in out
    code, out, _ = _cli(["eval", run, "--sweep", "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert res["images"] == 359 and len(res["exits"]) == 2 and len(res["early_exit"]) >= 3
    assert (tmp_path / "run" / "eval-test-sweep.png").stat().st_size > 1000
    assert list((tmp_path / "run" / "cache").glob("logits-test-*.pt"))
    code, out, _ = _cli(["eval", run, "--thresholds", "0.5", "--split", "val"], capsys)
    assert code == 0 and "0.5" in out


def _copy_cifar(data_root, tmp_path):
    dst = tmp_path / "cifar"
    shutil.copytree(data_root / "cifar10-subset", dst)
    return dst


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:5000]), "data_batch_2"),
        (lambda p: p.write_bytes(b"garbage" * 100), "data_batch_2"),
        (lambda p: p.unlink(), "data_batch_2"),
    ],
)
def test_corrupt_data_is_one_line_exit_2_and_no_output(data_root, tmp_path, capsys, damage, match):
    root = _copy_cifar(data_root, tmp_path)
    damage(root / "cifar-10-batches-py" / "data_batch_2")
    out_dir = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--data", f"cifar10:{root}", "--epochs", "1",
            "--out", str(out_dir)]  # fmt: skip
    code, _, err = _cli(argv, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("ravit: error:") and match in err
    assert not out_dir.exists(), "no partial output"


def test_missing_data_folder_and_unknown_data_set(tmp_path, capsys):
    code, _, err = _cli(["train", "--data", f"cifar10:{tmp_path}/nope", "--out",
                         str(tmp_path / "r")], capsys)  # fmt: skip
    assert code == 2 and "nope" in err and len(err.splitlines()) == 1
    code, _, err = _cli(["train", "--data", "svhn:/x", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "svhn" in err


def test_checkpoint_of_another_model_is_refused(tmp_path, capsys):
    fit(tmp_path / "a", small_config(epochs=1))
    fit(tmp_path / "b", small_config(epochs=1, **{"model.layers": "1-2"}))
    shutil.copy(tmp_path / "b" / "checkpoint.pt", tmp_path / "a" / "checkpoint.pt")
    code, _, err = _cli(["eval", str(tmp_path / "a")], capsys)
    assert code == 2 and "another model" in err and len(err.splitlines()) == 1
    code, _, err = _cli(["train", "--resume", str(tmp_path / "a")], capsys)
    assert code == 2 and "checkpoint.pt" in err


def test_demo_end_to_end_in_miniature(tmp_path, capsys):
    code, out, err = _cli(["demo", "--epochs", "2", "--out", str(tmp_path / "demo")], capsys)
    assert code == 0, err
    assert "ViT 0-3" in out and "RAViT 1-2, no early exit" in out and "leaving at each exit" in out
    assert (tmp_path / "demo" / "tradeoff.png").stat().st_size > 1000
    assert (tmp_path / "demo" / "ravit-1-2" / "checkpoint.pt").is_file()


def test_train_size_keeps_a_seeded_subset_disjoint_from_val():
    from ravit.training.loop import prepare

    a = prepare(small_config(**{"data.train_size": 300}))
    b = prepare(small_config(**{"data.train_size": 300}))
    assert len(a.train_data) == 300 and len(a.val_data) == 200
    assert torch.equal(a.train_data.labels, b.train_data.labels)
    full = prepare(small_config())
    assert len(full.train_data) > 300
    half = prepare(small_config(**{"data.train_size": 0.5}))
    assert len(half.train_data) == round(0.5 * len(full.train_data))


def test_train_size_larger_than_the_data_is_a_clear_error(tmp_path, capsys):
    argv = ["train", "--out", str(tmp_path / "r"), "--no-progress", "--train-size", "1e9"]
    assert main(argv + SMALL + ["train.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ravit: error:") and "data.train_size" in err
    assert not (tmp_path / "r").exists()
