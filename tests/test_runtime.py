"""Run-time early exit: the batched procedure's compaction and the batch-1 streaming runner."""

import math

import pytest
import torch

from ravit.config import model_config
from ravit.exits import exit_score
from ravit.models import RAViT
from ravit.runtime import StreamingRunner, StreamResult


def small(layers: str, **kw) -> RAViT:
    # cifar10 preset: 32 px images; three branches see 8, 16 and 32 px.
    cfg = model_config("cifar10", layers, embed_dim=32, num_heads=2, mlp_dim=64, **kw)
    return RAViT(cfg).eval()


def images(model: RAViT, n: int = 16) -> torch.Tensor:
    c, s = model.cfg.in_chans, model.cfg.image_size
    return torch.randn(n, c, s, s)


def gap_thresholds(model: RAViT, x: torch.Tensor, policy: str, q: float = 0.5) -> list[float]:
    """Per early exit, a threshold in the middle of the gap between two scores near quantile q.

    Away from every score, so that float noise between batch sizes cannot flip a decision.
    """
    with torch.inference_mode():
        logits = model(x).logits
    taus = []
    for lg in logits[:-1]:
        s = exit_score(lg, policy).sort().values
        k = max(1, min(len(s) - 1, round(q * len(s))))
        gaps = s[1:] - s[:-1]
        j = int(gaps[max(0, k - 3) : k + 3].argmax()) + max(0, k - 3)  # widest gap nearby
        taus.append(float((s[j] + s[j + 1]) / 2))
    return taus


@pytest.mark.parametrize("layers", ["1-3", "2-0-3", "1-1-2"])
@pytest.mark.parametrize("policy", ["entropy", "normalized-entropy", "confidence"])
def test_streaming_agrees_with_batched_early_exit(layers, policy):
    model = small(layers)
    x = images(model)
    taus = gap_thresholds(model, x, policy, q=0.4)
    batched = model.early_exit(x, taus, policy)
    assert 0 < int((batched.exit_index == 0).sum()) < len(x), "thresholds should split the batch"
    runner = StreamingRunner(model, taus, policy)
    for i in range(len(x)):
        r = runner(x[i])
        assert isinstance(r, StreamResult)
        assert r.exit_index == int(batched.exit_index[i])
        assert r.prediction == int(batched.prediction[i])
        assert r.entropy == pytest.approx(float(batched.entropy[i]), abs=1e-5)
        assert r.score == pytest.approx(float(batched.score[i]), abs=1e-5)
        torch.testing.assert_close(r.logits, batched.logits[i], atol=1e-5, rtol=1e-4)


def test_streaming_extremes_and_runtime_thresholds():
    model = small("1-1-2")
    x = images(model, 4)
    with torch.inference_mode():
        full = model(x).logits
    runner = StreamingRunner(model)  # no early exit
    assert runner.thresholds == (0.0, 0.0)
    r = runner(x[0])
    assert r.exit_index == 2 and r.prediction == int(full[2][0].argmax())
    torch.testing.assert_close(r.logits, full[2][0], atol=1e-5, rtol=1e-4)
    assert r.probabilities.sum().item() == pytest.approx(1.0)
    assert r.probability == pytest.approx(float(r.probabilities.max()))
    runner.thresholds = [math.inf, 0.0]  # a budget controller forcing exit 1
    assert runner(x[1]).exit_index == 0
    runner.thresholds = [0.0, math.inf]
    r = runner(x[1])
    assert r.exit_index == 1 and r.prediction == int(full[1][1].argmax())
    runner.thresholds = 10.0  # one number for every early exit: entropy < log(10) always
    runner.policy = "confidence"
    assert runner(x[2]).exit_index == 0


def test_streaming_rejects_bad_settings_and_inputs():
    model = small("1-3")
    runner = StreamingRunner(model, 0.1)
    with pytest.raises(ValueError, match="thresholds must be >= 0"):
        runner.thresholds = -1.0
    with pytest.raises(ValueError, match="got 3 thresholds for 2 exits"):
        runner.thresholds = [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match="unknown exit policy 'vibes'"):
        runner.policy = "vibes"
    assert runner.thresholds == (0.1,) and runner.policy == "entropy"  # unchanged
    with pytest.raises(ValueError, match=r"expected one image of shape \(3, 32, 32\)"):
        runner(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"expected one image of shape \(3, 32, 32\)"):
        runner(torch.randn(3, 16, 16))
    with pytest.raises(TypeError, match="expects a RAViT model"):
        StreamingRunner(torch.nn.Linear(2, 2))


def test_early_exit_compacts_every_branch_and_keeps_input_order():
    model = small("1-1-2")
    x = images(model, 32)
    with torch.inference_mode():
        full = model(x).logits
    taus = gap_thresholds(model, x, "entropy", q=0.3)
    seen = {1: [], 2: []}
    for e in (1, 2):
        model.branches[e].register_forward_hook(
            lambda m, inp, out, e=e: seen[e].append(inp[0].shape[0])
        )
    out = model.early_exit(x, taus)
    h = [exit_score(lg) for lg in full]
    leave0 = h[0] < taus[0]
    leave1 = ~leave0 & (h[1] < taus[1])
    expected_exit = torch.full((32,), 2)
    expected_exit[leave1] = 1
    expected_exit[leave0] = 0
    assert torch.equal(out.exit_index, expected_exit)
    assert seen == {1: [int((~leave0).sum())], 2: [int((~leave0 & ~leave1).sum())]}
    for e in range(3):
        rows = expected_exit == e
        assert torch.equal(out.prediction[rows], full[e][rows].argmax(-1))
        torch.testing.assert_close(out.logits[rows], full[e][rows], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out.entropy[rows], h[e][rows], atol=1e-5, rtol=1e-4)


def test_early_exit_on_an_empty_batch():
    model = small("1-3")
    out = model.early_exit(images(model, 0), 0.5)
    assert out.prediction.shape == (0,) and out.logits.shape == (0, 10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = small("1-1-2")
    x = images(model)
    taus = gap_thresholds(model, x, "entropy", q=0.4)
    cpu = model.early_exit(x, taus)
    model.cuda()
    gpu = model.early_exit(x.cuda(), taus)
    assert torch.equal(gpu.exit_index.cpu(), cpu.exit_index)
    assert torch.equal(gpu.prediction.cpu(), cpu.prediction)
    runner = StreamingRunner(model, taus)
    assert [runner(img).exit_index for img in x] == cpu.exit_index.tolist()
