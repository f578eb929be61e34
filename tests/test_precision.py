"""amp: the rule `auto` follows, and bf16 through training, evaluation, predict and streaming."""

import json

import pytest
import torch
import torch.nn.functional as F

from ravit.config import model_config
from ravit.devices import CPU_BF16_MIN_WIDTH, CPU_BF16_MIN_WORK, resolve_precision
from ravit.evaluation import evaluate_run
from ravit.layers.attention import Attention
from ravit.models import RAViT
from ravit.runtime import StreamingRunner
from ravit.training import fit, resolve_config

CPU = torch.device("cpu")


def rule(width, images, tokens, found="avx512_bf16", amp="auto"):
    return resolve_precision(amp, CPU, width=width, images=images, tokens=tokens,
                             instructions=found)  # fmt: skip


def test_auto_on_a_cpu_follows_the_measured_rule():
    # Training batches: D 32 stays fp32; D 64 goes bf16 at batch 128 (1.3-1.5x measured),
    # not at the demo's batch 64 (1.0-1.25x); D 128 at batch 8 and up (1.5x and more).
    assert rule(32, 128, 17).dtype is None and "D 32 < 64" in rule(32, 128, 17).reason
    assert rule(64, 128, 17).dtype == torch.bfloat16
    assert rule(64, 64, 17).dtype is None and "< 2^23" in rule(64, 64, 17).reason
    assert rule(128, 8, 65).dtype == torch.bfloat16
    assert rule(128, 4, 65).dtype is None
    # One image at a time: D 128 is faster in fp32, D 768 (257 tokens) in bf16.
    assert rule(128, 1, 65).dtype is None
    assert rule(768, 1, 257).dtype == torch.bfloat16
    # The edges: exactly at the bounds is bf16.
    rows = CPU_BF16_MIN_WORK // CPU_BF16_MIN_WIDTH**2
    assert rule(CPU_BF16_MIN_WIDTH, 1, rows).name == "bf16"
    assert rule(CPU_BF16_MIN_WIDTH, 1, rows - 1).name == "fp32"
    assert rule(CPU_BF16_MIN_WIDTH - 1, 10**6, 1).name == "fp32"
    # Without bf16 instructions (emulated bf16 is slow): fp32 whatever the size.
    slow = rule(768, 256, 257, found=None)
    assert slow.dtype is None and "no bf16 instructions" in slow.reason
    assert rule(768, 256, 257, found="amx").reason.startswith("auto: CPU with amx")


def test_explicit_modes_are_honoured_and_unknown_ones_refused():
    assert rule(32, 1, 1, amp="bf16", found=None).dtype == torch.bfloat16
    assert rule(768, 256, 257, amp="off").dtype is None
    assert rule(32, 1, 1, amp="fp16").dtype == torch.float16
    with pytest.raises(ValueError, match="unknown amp mode 'half'; expected auto, off"):
        rule(32, 1, 1, amp="half")


def test_model_config_counts_the_finest_branch_tokens():
    cfg = model_config("cifar10", "1-3")  # 16 px and 32 px, patch 4: 17 and 65 tokens
    p = cfg.precision("auto", CPU, 8)
    assert p == resolve_precision("auto", CPU, width=128, images=8, tokens=65)
    # with branch 1's 17 tokens it would be fp32, even on a CPU with bf16 instructions
    assert rule(128, 8, 17).dtype is None


def test_bf16_attention_on_the_cpu_skips_the_fused_kernel_and_matches_fp32(monkeypatch):
    torch.manual_seed(0)
    attn = Attention(dim=64, num_heads=2).eval()
    x = torch.randn(4, 17, 64)
    with torch.no_grad():
        ref = attn(x)

    def fused(*args, **kwargs):
        raise AssertionError("the fused kernel ran in bf16 on the CPU")

    monkeypatch.setattr(F, "scaled_dot_product_attention", fused)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.02 * ref.abs().max()
    # Gradients flow through the explicit path too.
    xg = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attn(xg).float().sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


SMALL = ["model.preset=digits", "model.layers=1-1", "data.spec=digits", "data.val_size=200",
         "train.batch_size=128", "train.device=cpu", "train.epochs=1"]  # fmt: skip


@pytest.mark.parametrize("amp", ["bf16", "off"])
def test_training_records_its_precision_in_env_json(tmp_path, amp):
    records = fit(tmp_path / "run", resolve_config(None, SMALL + [f"train.amp={amp}"]))
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    name = "bf16" if amp == "bf16" else "fp32"
    assert env["amp"]["setting"] == amp
    assert env["amp"]["train"] == {"dtype": name, "reason": f"amp {amp}"}
    assert env["amp"]["eval"]["dtype"] == name
    assert len(records[0]["val_acc_exits"]) == 2


def test_auto_training_says_why(tmp_path):
    fit(tmp_path / "run", resolve_config(None, SMALL + ["model.embed_dim=32", "model.num_heads=2"]))
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["amp"]["setting"] == "auto"
    assert env["amp"]["train"]["dtype"] == "fp32"  # D 32: fp32 on any CPU
    assert env["amp"]["train"]["reason"].startswith("auto: ")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("amp") / "run"
    fit(run, resolve_config(None, SMALL + ["train.amp=off", "train.epochs=3"]))
    return run


def test_evaluation_caches_each_precision_apart(digits_run):
    fp32 = evaluate_run(digits_run, split="test", amp="off")
    bf16 = evaluate_run(digits_run, split="test", amp="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert not fp32.cached and not bf16.cached
    assert len(list((digits_run / "cache").glob("logits-test-*.pt"))) == 2
    assert evaluate_run(digits_run, split="test", amp="bf16").cached
    for a, b in zip(fp32.logits.logits, bf16.logits.logits):
        assert b.dtype == torch.float32  # the cache holds fp32 logits either way
        assert (a - b).abs().max() < 0.1 * a.abs().max()
    agree = (fp32.logits.logits[-1].argmax(1) == bf16.logits.logits[-1].argmax(1)).float().mean()
    assert agree > 0.97


def test_streaming_and_batched_early_exit_in_bf16_agree_with_fp32(digits_run):
    from ravit.runs.folder import load_run_model

    model, _ = load_run_model(digits_run)
    model.eval()
    torch.manual_seed(1)
    images = torch.randn(16, 1, 8, 8)
    runner = StreamingRunner(model, thresholds=0.5, amp="bf16")
    assert runner.precision.name == "bf16"
    fp32 = StreamingRunner(model, thresholds=0.5, amp="off")
    same = sum(runner(im).prediction == fp32(im).prediction for im in images)
    assert same >= 15
    assert runner(images[0]).logits.dtype == torch.float32
    # auto, one image of the digits model (D 64, 17 tokens): fp32, as measured faster
    assert StreamingRunner(model).precision.name == "fp32"
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.early_exit(images, 0.5)
    assert out.entropy.dtype == torch.float32


def test_a_bf16_model_call_is_one_command_line_away(digits_run, tmp_path, capsys):
    from ravit.cli import main

    assert main(["eval", str(digits_run), "--amp", "off", "--json"]) == 0
    off = json.loads(capsys.readouterr().out)
    assert main(["eval", str(digits_run), "--amp", "bf16", "--json"]) == 0
    bf16 = json.loads(capsys.readouterr().out)
    assert off.keys() == bf16.keys()


def test_a_tiny_model_is_unchanged_by_auto():
    # The test models (D 32) keep fp32 under auto on every CPU: their figures do not move.
    cfg = model_config("tiny", "1-1")
    assert cfg.precision("auto", CPU, 512).dtype is None
    assert RAViT(cfg).cfg.embed_dim < CPU_BF16_MIN_WIDTH
