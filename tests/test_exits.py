import math

import pytest
import torch

from ravit.config import model_config
from ravit.cost import model_cost
from ravit.exits import entropy, exit_score, normalize_thresholds, simulate, sweep
from ravit.models import RAViT


def test_entropy_values():
    assert entropy(torch.zeros(1, 10)).item() == pytest.approx(math.log(10))
    assert entropy(torch.tensor([[100.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)
    norm = exit_score(torch.zeros(2, 200), "normalized-entropy")
    assert torch.allclose(norm, torch.ones(2))
    conf = exit_score(torch.tensor([[0.0, 0.0]]), "confidence")
    assert conf.item() == pytest.approx(0.5)


def test_normalize_thresholds():
    assert normalize_thresholds(None, 3) == (0.0, 0.0)
    assert normalize_thresholds(0.5, 3) == (0.5, 0.5)
    assert normalize_thresholds([0.1, 0.2], 3) == (0.1, 0.2)
    assert normalize_thresholds([0.1, 0.2, 9.0], 3) == (0.1, 0.2)
    assert normalize_thresholds(None, 1) == ()


@pytest.mark.parametrize("policy", ["entropy", "normalized-entropy", "confidence"])
def test_simulation_on_cached_logits_equals_the_real_early_exit(policy):
    cfg = model_config("cifar10", "1-1-1", embed_dim=32, num_heads=2)
    model = RAViT(cfg).eval()
    x = torch.randn(32, 3, 32, 32)
    labels = torch.randint(0, 10, (32,))
    with torch.no_grad():
        logits = model(x).logits
    scores = exit_score(logits[0], policy)
    taus = [scores.median().item(), exit_score(logits[1], policy).median().item()]
    real = model.early_exit(x, thresholds=taus, policy=policy)
    sim = simulate(logits, labels, model_cost(cfg), taus, policy)
    counts = torch.bincount(real.exit_index, minlength=3).tolist()
    assert list(sim.exit_counts) == counts
    assert sim.accuracy == pytest.approx(float((real.prediction == labels).float().mean()))
    assert sim.avg_flops == model_cost(cfg).early_exit_flops(counts)


def test_sweep_spans_from_first_exit_to_full_path():
    cfg = model_config("cifar10", "1-3", embed_dim=32, num_heads=2)
    cost = model_cost(cfg)
    logits = [torch.randn(50, 10), torch.randn(50, 10)]
    labels = torch.randint(0, 10, (50,))
    results = sweep(logits, labels, cost, points=5)
    flops = [r.avg_flops for r in results]
    assert flops == sorted(flops)
    assert flops[0] == cost.exits[0].cumulative_flops  # all leave at exit 1
    assert flops[-1] == cost.total_flops  # nobody leaves early
    assert all(sum(r.exit_fractions) == pytest.approx(1.0) for r in results)
