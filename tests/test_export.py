"""Deployment: ONNX export, its parity check, and the torch-free runtime on onnxruntime.

The model is a cifar10-preset RAViT 1-1-1 (8 / 16 / 32 px, D 32) trained for
one epoch on 256 images of the CIFAR-10 subset: just enough for the exit
scores to spread, so that thresholds can send images out at every exit.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ravit.cli import main
from ravit.cost import model_cost
from ravit.data import load_data
from ravit.evaluation import eval_transform
from ravit.exits import EXIT_SCORES, POLICIES, BudgetController, ControlTable, exit_score
from ravit.exits.rule import EXIT_SCORES_NP, leaves
from ravit.runs import load_run_model
from ravit.runtime import StreamingRunner
from ravit.runtime.exported import resize_weights

SRC = Path(__file__).resolve().parents[1] / "src"

# Runs in a fresh interpreter where importing torch fails.
NO_TORCH = """
import importlib.abc, sys

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"{name} is blocked in this test")

sys.meta_path.insert(0, BlockTorch())
"""


def run_without_torch(code: str, cwd: Path | None = None) -> str:
    script = NO_TORCH + textwrap.dedent(code)
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- torch-free pieces (no onnxruntime needed) -----------------------------------


def test_runtime_modules_import_without_torch():
    out = run_without_torch("""
        import ravit, ravit.runtime.exported, ravit.exits.rule, ravit.exits.budget
        import ravit.runtime.manifest, ravit.runtime.records
        from ravit.exits import BudgetController, POLICIES, normalize_thresholds
        from ravit.runtime import read_image, Prediction
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnxruntime")))
    """)
    assert out.strip() == "[]"


def test_lazy_exports_give_the_functions_whatever_was_imported_first():
    # `simulate` and `predict` are functions of the modules `simulation` and `prediction`:
    # the package attribute is the function, whichever module is imported first
    # (checked in a fresh interpreter).
    code = """
        import ravit.exits.calibration, ravit.runtime.prediction
        from ravit.exits import simulate
        from ravit.runtime import predict
        import ravit
        print(callable(simulate), callable(predict), ravit.exits.simulate is simulate)
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={"PYTHONPATH": str(SRC)}, timeout=120)  # fmt: skip
    assert done.stdout.split() == ["True", "True", "True"], done.stderr


def test_numpy_scores_follow_torch():
    assert tuple(EXIT_SCORES) == POLICIES == tuple(EXIT_SCORES_NP)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=gen) * torch.logspace(-3, 1.5, 500)[:, None]
    for policy in POLICIES:
        expected = exit_score(logits, policy).numpy()
        got = EXIT_SCORES_NP[policy](logits.numpy())
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    # The comparison rounds tau to float32, as torch compares a float32 tensor with a float.
    score = np.array([0.1, 0.2], dtype=np.float32)
    tau = float(np.float32(0.2)) + 1e-12  # above 0.2 in float64, equal to it in float32
    assert leaves(score, tau).tolist() == (torch.from_numpy(score) < tau).tolist()


@pytest.mark.parametrize("size_in, size_out", [(32, 16), (32, 24), (32, 8), (64, 16), (224, 64)])
def test_resize_weights_reproduce_torch(size_in, size_out):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, size_in, size_in, generator=gen)
    w = resize_weights(size_in, size_out)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)
    got = w @ x.numpy() @ w.T
    ref = F.interpolate(x, size=(size_out,) * 2, mode="bilinear", antialias=True)
    np.testing.assert_allclose(got, ref.numpy(), atol=2e-6, rtol=0)


# -- export and runtime -----------------------------------------------------------


CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_root):
    """A trained run with calibrated thresholds (RUN/thresholds.json)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from ravit.training import fit, resolve_config

    path = tmp_path_factory.mktemp("runs") / "c10"
    cfg = resolve_config(None, [
        "model.preset=cifar10", "model.layers=1-1-1", "model.embed_dim=32", "model.num_heads=2",
        f"data.spec=cifar10:{data_root / 'cifar10-subset'}", "data.val_size=300",
        "data.train_size=256", "train.epochs=1", "train.batch_size=64", "train.device=cpu",
    ])  # fmt: skip
    fit(path, cfg)
    assert main(["calibrate", str(path), "--budget", "0.6"]) == 0
    return path


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    from ravit.export import export_onnx

    report = export_onnx(run, tmp_path_factory.mktemp("exports") / "c10-onnx")
    assert report.notes == []
    return report.folder


@pytest.fixture(scope="module")
def cifar(run):
    """The CIFAR-10 subset's 1017 test images: uint8, and normalised for the torch model."""
    model, state = load_run_model(run)
    data = load_data(state["data"]["spec"], "test")
    images, _ = data.get_batch(torch.arange(len(data)))
    return images.numpy(), eval_transform(model, state["data"])(images)


def wide_gap_thresholds(scores: list[torch.Tensor], q: float) -> tuple[list[float], float]:
    """Per early exit, a threshold in the widest gap between the scores of the images
    reaching it near quantile q; and the smallest distance from a threshold to a score."""
    reach = torch.ones_like(scores[0], dtype=torch.bool)
    taus, margin = [], float("inf")
    for s in scores[:-1]:
        v = s[reach].sort().values
        lo, hi = int(0.6 * q * len(v)), int(min(1.0, 1.4 * q) * len(v))
        j = lo + int((v[lo + 1 : hi] - v[lo : hi - 1]).argmax())
        taus.append(float((v[j] + v[j + 1]) / 2))
        margin = min(margin, float(v[j + 1] - v[j]) / 2)
        reach &= ~(s < taus[-1])
    return taus, margin


def test_manifest_describes_the_export(run, exported):
    import onnxruntime as ort

    model, state = load_run_model(run)
    m = json.loads((exported / "manifest.json").read_text())
    assert (m["format"], m["version"], m["model"]["layers"]) == ("ravit-onnx", 1, "1-1-1")
    cost = model_cost(model.cfg)
    assert [(e["exit"], e["resolution"], e["cumulative_flops"]) for e in m["exits"]] == [
        (c.exit + 1, c.resolution, c.cumulative_flops) for c in cost.exits
    ]
    assert m["total_flops"] == cost.total_flops and m["classes"] == CLASSES
    assert m["preprocess"]["mean"] == pytest.approx(state["data"]["mean"])
    assert m["initial_cls"] == model.cls_token[0].tolist()
    saved = json.loads((run / "thresholds.json").read_text())["calibration"]
    assert m["early_exit"]["thresholds"] == saved["thresholds"]
    assert m["early_exit"]["target"] == saved["target"] and m["early_exit"]["policy"] == "entropy"
    table = ControlTable.from_dict(m["control_table"])  # built on the run's validation split
    assert table.exit_flops == tuple(cost.cumulative_flops) and table.knobs[-1] == 1.0
    parity = m["parity"]
    assert parity["images"] == 64 and max(parity["max_abs_diff"].values()) <= 1e-4
    for d in m["exits"]:  # inputs at the branch's resolution, dynamic batch
        sess = ort.InferenceSession(str(exported / d["graph"]), providers=["CPUExecutionProvider"])
        shapes = {i.name: i.shape for i in sess.get_inputs()}
        assert shapes == {"image": ["batch", 3, d["resolution"], d["resolution"]],
                          "cls": ["batch", 32]}  # fmt: skip
        assert [o.name for o in sess.get_outputs()] == ["logits", "cls_out"]


def test_runtime_exits_equal_pytorch_on_the_cifar_test_set(run, exported, cifar):
    from ravit.runtime.exported import OnnxRAViT

    model, _ = load_run_model(run)
    uint8, x = cifar
    runtime = OnnxRAViT(exported)
    xn = runtime.preprocess(uint8)
    np.testing.assert_array_equal(xn, x.numpy())  # the same normalisation, bit for bit
    with torch.inference_mode():
        logits = model(x).logits
    ours = runtime.forward(xn)
    for a, b in zip(ours, logits):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4, rtol=0)
    for policy in POLICIES:
        scores = [exit_score(lg, policy) for lg in logits]
        noise = max(float(np.abs(EXIT_SCORES_NP[policy](a) - s.numpy()).max())
                    for a, s in zip(ours, scores))  # fmt: skip
        taus, margin = wide_gap_thresholds(scores, q=0.4)
        assert margin > 4 * noise, "thresholds too close to a score for this check"
        expected = model.early_exit(x, taus, policy)
        got = runtime.early_exit(xn, taus, policy)
        counts = np.bincount(got.exit_index, minlength=3)
        assert counts.min() > 100, f"every exit should answer some images, got {counts}"
        np.testing.assert_array_equal(got.exit_index, expected.exit_index.numpy())
        np.testing.assert_array_equal(got.prediction, expected.prediction.numpy())
        np.testing.assert_allclose(got.score, expected.score.numpy(), atol=1e-5)
        np.testing.assert_allclose(got.logits, expected.logits.numpy(), atol=1e-4)


@pytest.fixture
def one_thread():
    """Batch 1 on one thread: two threads synchronise per op, which a busy CPU makes slow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_runtime_batch1_and_budget_controller_match_pytorch(run, exported, cifar, one_thread):
    from ravit.runtime.exported import OnnxRAViT

    model, _ = load_run_model(run)
    uint8, x = cifar
    runtime = OnnxRAViT(exported, threads=1)
    saved, policy = runtime.saved_thresholds
    assert saved == pytest.approx(tuple(json.loads((run / "thresholds.json").read_text())[
        "calibration"]["thresholds"]))  # fmt: skip
    xn = runtime.preprocess(uint8[:100])
    streamer = StreamingRunner(model, saved, policy)
    torch_ctl = BudgetController(ControlTable.from_dict(runtime.manifest["control_table"]), 0.5)
    onnx_ctl = runtime.controller(0.5)
    for i in range(100):
        a = streamer(x[i])
        b = runtime.early_exit(xn[i : i + 1], saved, policy)
        assert (a.exit_index, a.prediction) == (int(b.exit_index[0]), int(b.prediction[0]))
        # The same controller on both backends: the same thresholds, image after image.
        assert torch_ctl.thresholds == onnx_ctl.thresholds
        streamer.thresholds = torch_ctl.thresholds
        ea = streamer(x[i]).exit_index
        eb = int(runtime.early_exit(xn[i : i + 1], onnx_ctl.thresholds).exit_index[0])
        assert ea == eb
        torch_ctl.observe(ea)
        onnx_ctl.observe(eb)
        streamer.thresholds = saved
    assert 0.3 < torch_ctl.window_average < 0.7


def test_predict_backend_onnx_equals_torch(run, exported, cifar, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, a in enumerate(cifar[0][:40]):
        Image.fromarray(a.transpose(1, 2, 0)).save(folder / f"{i:02d}.png")
    (folder / "broken.png").write_bytes(b"not a png")

    def records(*argv):
        code = main(["predict", *argv, "--json"])
        out = capsys.readouterr()
        assert code == 1 and "broken.png" in out.err  # one bad file: exit code 1
        return [json.loads(line) for line in out.out.splitlines()]

    torch_rows = records(str(run), str(folder))
    onnx_rows = records(str(exported), str(folder), "--backend", "onnx")
    assert len(torch_rows) == len(onnx_rows) == 40
    assert {r["exit"] for r in onnx_rows} != {3}, "the saved thresholds should let some out"
    for a, b in zip(torch_rows, onnx_rows):
        assert (a["path"], a["class_index"], a["exit"], a["flops"]) == (
            b["path"], b["class_index"], b["exit"], b["flops"])  # fmt: skip
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)
    assert main(["predict", str(exported), str(folder / "00.png"), "--backend", "onnx"]) == 0
    assert "manifest.json" in capsys.readouterr().out  # the saved thresholds, by default
    argv = ["predict", str(exported), str(folder / "00.png"), "--backend", "onnx"]
    assert main([*argv, "--budget", "0.5"]) == 0
    assert "control table" in capsys.readouterr().out


def test_predict_backend_onnx_runs_without_torch(exported, tmp_path):
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "red.png")
    out = run_without_torch(f"""
        from ravit.cli import main
        code = main(["predict", {str(exported)!r}, {str(tmp_path / "red.png")!r},
                     "--backend", "onnx", "--json"])
        print(code, "torch" in sys.modules)
    """)
    record, status = out.strip().splitlines()[-2:]
    assert json.loads(record)["exit"] in (1, 2, 3) and status == "0 False"


def test_parity_failure_writes_nothing(run, tmp_path, capsys, monkeypatch):
    from ravit.export import ParityError, exporter

    forward = exporter._ExitGraph.forward

    def corrupted(self, image, cls):  # the graph of exit 2 is off by 1e-3
        logits, cls_out = forward(self, image, cls)
        return (logits + 1e-3 if self.e == 1 else logits), cls_out

    monkeypatch.setattr(exporter._ExitGraph, "forward", corrupted)
    assert issubclass(ParityError, ValueError)  # reported by the CLI as bad input
    assert main(["export", str(run), "--out", str(tmp_path / "bad"), "--check-images", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("ravit: error: the exported exit 2 graph logits differs from PyTorch "
                          "by 0.001 (and 1 later outputs) on 8 images")  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # no output folder, no temporary folder


@pytest.mark.parametrize("argv, match", [
    (["export", "{tmp}/missing", "--out", "{tmp}/o"], "run folder {tmp}/missing does not exist"),
    (["export", "{run}", "--out", "{exported}"], "already exists"),
    (["export", "{run}", "--format", "tflite", "--out", "{tmp}/o"], "invalid choice: 'tflite'"),
    (["export", "{run}", "--out", "{tmp}/o", "--images", "{tmp}"], "no image files"),
    (["predict", "{run}", "{tmp}", "--backend", "onnx"], "it is a run folder; export it first"),
    (["predict", "{exported}", "{tmp}", "--backend", "onnx", "--device", "cuda"], "CPU provider"),
    (["predict", "{exported}", "{tmp}", "--backend", "onnx", "--budget", "0.01"], "fraction in"),
])  # fmt: skip
def test_export_and_onnx_predict_bad_input(run, exported, tmp_path, capsys, argv, match):
    fill = {"tmp": str(tmp_path), "run": str(run), "exported": str(exported)}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match.format(**fill) in err, err
    assert not (tmp_path / "o").exists()


def test_broken_export_folder_is_one_line_error(exported, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    (copy / "exit2.onnx").write_bytes(b"not a graph")
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    assert main(["predict", str(copy), str(tmp_path / "x.png"), "--backend", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exit2.onnx: not a loadable ONNX graph" in err
    (copy / "exit2.onnx").unlink()
    assert main(["predict", str(copy), str(tmp_path / "x.png"), "--backend", "onnx"]) == 2
    assert "exit2.onnx is missing" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("RAVIT_SLOW_TESTS"), reason="about 30 s: RAVIT_SLOW_TESTS=1 runs it"
)
def test_dynamo_exporter(run, tmp_path):
    pytest.importorskip("onnxscript")
    from ravit.export import export_onnx

    report = export_onnx(run, tmp_path / "dynamo", exporter="dynamo", check_images=8)
    assert max(report.manifest["parity"]["max_abs_diff"].values()) <= 1e-4
