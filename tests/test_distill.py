"""Early-exit distillation: the loss terms, the exit pairing, the run and the CLI."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ravit.cli import main
from ravit.config import model_config
from ravit.runs.checkpoint import load_checkpoint
from ravit.training import fit, resolve_config
from ravit.training.distill import (
    DistillConfig,
    distill,
    distill_terms,
    entropy_gap_term,
    exit_map,
    kd_term,
    resume_distill,
    student_config,
)

TEACHER = [
    "model.preset=digits",
    "model.layers=1-2",
    "model.embed_dim=32",
    "model.num_heads=2",
    "data.spec=digits",
    "data.val_size=100",
    "data.train_size=192",
    "train.batch_size=64",
    "train.epochs=1",
    "train.device=cpu",
]
STUDENT = ["model.layers=1-1", "model.embed_dim=16"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    run = tmp_path_factory.mktemp("teacher") / "run"
    fit(run, resolve_config(overrides=TEACHER))
    return run


def weights(run):
    return load_checkpoint(run / "checkpoint.pt")["model"]


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the loss terms ----------------------------------------------------------------


def test_kd_term_is_the_scaled_kl_on_the_kept_images_only():
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    keep = torch.tensor([1.0, 1, 1, 0, 0, 0])
    expected = 4.0**2 * F.kl_div(
        F.log_softmax(s[:3] / 4, -1), F.log_softmax(t[:3] / 4, -1), log_target=True,
        reduction="sum",
    ) / 6  # fmt: skip
    torch.testing.assert_close(kd_term(s, t, keep, 4.0), expected)
    s2 = s.clone()
    s2[3:] += 5 * torch.randn(3, 10)  # images not kept: no change
    torch.testing.assert_close(kd_term(s2, t, keep, 4.0), kd_term(s, t, keep, 4.0))
    assert kd_term(t, t, torch.ones(6), 2.0).abs() < 1e-6  # the student already agrees
    assert kd_term(s, t, torch.ones(6), 2.0) > 0


def test_entropy_gap_is_zero_at_uniform_and_its_gradient_raises_entropy():
    keep = torch.ones(4)
    assert entropy_gap_term(torch.zeros(4, 10), keep).abs() < 1e-6
    peaked = torch.zeros(4, 10)
    peaked[:, 3] = 8.0
    p = F.softmax(peaked, -1)
    gap = math.log(10) + (p * p.log()).sum(-1).mean()
    torch.testing.assert_close(entropy_gap_term(peaked, keep), gap)
    s = peaked.clone().requires_grad_()
    entropy_gap_term(s, keep).backward()
    after = (s - 0.5 * s.grad).detach()
    assert entropy_gap_term(after, keep) < entropy_gap_term(peaked, keep)
    assert entropy_gap_term(peaked, torch.zeros(4)) == 0  # only the kept images count


def test_distill_terms_split_images_by_the_teachers_answer():
    y = torch.tensor([0, 1])
    t = torch.tensor([[5.0, 0, 0], [5.0, 0, 0]])  # right on image 0, wrong on image 1
    s = torch.randn(2, 3)
    cfg = DistillConfig(temperature=2.0, alpha=0.7, beta=0.3)
    (term,) = distill_terms([s], [t], y, cfg)
    right, wrong = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    expected = 0.7 * kd_term(s, t, right, 2.0) + 0.3 * entropy_gap_term(s, wrong)
    torch.testing.assert_close(term, expected)
    only_kd = distill_terms([s], [t], y, DistillConfig(alpha=1.0, beta=0.0))[0]
    s_wrong_changed = s.clone()
    s_wrong_changed[1] = torch.tensor([9.0, -9.0, 0.0])  # copies the teacher's mistake
    assert torch.equal(
        distill_terms([s_wrong_changed], [t], y, DistillConfig(alpha=1.0, beta=0.0))[0], only_kd
    )
    assert distill_terms([s_wrong_changed], [t], y, cfg)[0] > term  # punished by the entropy term


@pytest.mark.parametrize(
    "kw, match",
    [({"temperature": 0}, "temperature must be > 0"), ({"alpha": -1}, "must be >= 0"),
     ({"beta": float("nan")}, "must be finite"), ({"alpha": "1"}, "must be a number")],
)  # fmt: skip
def test_bad_distill_settings(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        DistillConfig(**kw)


def test_exit_map():
    t = model_config("cifar10", "1-3")
    assert exit_map(model_config("cifar10", "1-1"), t) == [0, 1]
    three = model_config("cifar10", "1-1-1", resolutions=(16, 24, 32))
    assert exit_map(three, t) == [0, 1, 1]  # 24 px has no teacher exit: the last one teaches
    assert exit_map(model_config("cifar10", "0-2"), t) == [1]
    assert exit_map(t, three) == [0, 2]  # the teacher's exits at 16 and 32 px


# -- the run -------------------------------------------------------------------------


def test_zero_weights_train_exactly_like_a_plain_run_and_nonzero_ones_do_not(teacher, tmp_path):
    cfg = student_config(teacher, overrides=STUDENT)
    assert cfg.data.val_size == 100 and cfg.model.layers == "1-1"  # the teacher's, then ours
    fit(tmp_path / "plain", cfg)
    distill(tmp_path / "zero", teacher, cfg, DistillConfig(alpha=0.0, beta=0.0))
    distill(tmp_path / "kd", teacher, cfg)
    assert same_weights(weights(tmp_path / "plain"), weights(tmp_path / "zero"))
    assert not same_weights(weights(tmp_path / "plain"), weights(tmp_path / "kd"))
    saved = json.loads((tmp_path / "kd" / "distill.json").read_text())
    assert saved["teacher"] == str(teacher.resolve()) and saved["exit_map"] == [0, 1]
    assert (saved["temperature"], saved["alpha"], saved["beta"]) == (4.0, 1.0, 0.5)


def test_resume_ends_with_the_same_weights(teacher, tmp_path):
    cfg = student_config(teacher, overrides=STUDENT + ["train.epochs=2"])
    distill(tmp_path / "straight", teacher, cfg)

    def interrupt(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(tmp_path / "cut", teacher, cfg, on_epoch=interrupt)
    records = resume_distill(tmp_path / "cut")
    assert [r["epoch"] for r in records] == [1, 2]
    assert same_weights(weights(tmp_path / "straight"), weights(tmp_path / "cut"))


def _cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def test_distill_from_the_cli_then_eval(teacher, tmp_path, capsys):
    run = tmp_path / "student"
    argv = ["distill", "--teacher", str(teacher), "--layers", "1-1", "--out", str(run)]
    argv += ["--temperature", "2", "--beta", "1", "--no-progress", "model.embed_dim=16"]
    code, out, err = _cli(argv, capsys)
    assert code == 0, err
    assert "epoch   1" in out and "distill.json" in out
    saved = json.loads((run / "distill.json").read_text())
    assert (saved["temperature"], saved["alpha"], saved["beta"]) == (2.0, 1.0, 1.0)
    code, out, err = _cli(["eval", str(run), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["layers"] == "1-1"


@pytest.mark.parametrize(
    "argv, match",
    [(["--teacher", "/no/such/run", "--out", "{tmp}/s"], "/no/such/run is not a ravit run"),
     (["--out", "{tmp}/s"], "give --teacher RUN"),
     (["--resume", "{teacher}", "--alpha", "2"], "only train settings may change"),
     (["--resume", "{teacher}"], "is not a distillation run")],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(teacher, tmp_path, capsys, argv, match):
    argv = [a.format(tmp=tmp_path, teacher=teacher) for a in argv]
    code, out, err = _cli(["distill", *argv], capsys)
    assert code == 2 and err.startswith("ravit: error:") and match in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_a_teacher_of_another_data_set_is_refused(teacher, tmp_path, capsys, data_root):
    cifar = f"cifar10:{data_root / 'cifar10-subset'}"
    argv = ["distill", "--teacher", str(teacher), "--data", cifar, "--out", str(tmp_path / "s")]
    code, _, err = _cli(argv, capsys)
    assert code == 2 and "is not the teacher's data 'digits'" in err
    assert not (tmp_path / "s").exists()
