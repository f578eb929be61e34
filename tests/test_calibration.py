import json
import math

import pytest
import torch
from synthetic import synthetic

from ravit.config import model_config
from ravit.cost import model_cost
from ravit.exits import (
    Calibration,
    EarlyExitResult,
    calibrate_budget,
    calibrate_max_drop,
    exit_score,
    simulate,
    sweep,
)
from ravit.models import RAViT

COST2 = model_cost(model_config("cifar10", "1-3"))  # 6.83 M, 89.99 M
COST3 = model_cost(model_config("cifar10", "1-1-1"))  # 1.98 M, 8.81 M, 36.53 M


def outcomes(logits, labels, cost, grid):
    """(right answers, total FLOPs) at every row of a (T, exits - 1) grid of thresholds,
    by brute force: every image's exit taken directly from the rule."""
    scores = torch.stack([exit_score(lg, "entropy") for lg in logits[:-1]])  # (E-1, N)
    leaves = scores[None] < grid[:, :, None]  # (T, E-1, N)
    last = torch.ones_like(leaves[:, :1])
    taken = torch.cat([leaves, last], dim=1).float().argmax(dim=1)  # (T, N) first exit left
    right = torch.stack([lg.argmax(-1) == labels for lg in logits])  # (E, N)
    flops = torch.tensor(cost.cumulative_flops, dtype=torch.int64)
    n_right = right.gather(0, taken).sum(1)
    return n_right, flops[taken].sum(1)


def candidates(lg):
    """Every distinct split of one exit: 0, inf and every score as threshold."""
    s = torch.unique(exit_score(lg, "entropy"))
    return torch.cat([torch.tensor([0.0, math.inf]), s])


def right_count(result: EarlyExitResult, n: int) -> int:
    return round(result.accuracy * n)


@pytest.mark.parametrize("policy", ["entropy", "normalized-entropy", "confidence"])
@pytest.mark.parametrize("fraction", [0.2, 0.45, 0.7, 0.95])
def test_budget_is_met_spent_and_beats_the_sweep(policy, fraction):
    logits, labels = synthetic(4000, 2, seed=1)
    budget = fraction * COST2.total_flops
    cal = calibrate_budget(logits, labels, COST2, budget, policy)
    res = cal.predicted
    assert res == simulate(logits, labels, COST2, cal.thresholds, policy)
    assert res.avg_flops <= budget
    # One image moving from exit 1 to exit 2 changes the average by this much;
    # accuracy rises with cost here, so the whole budget is spent.
    step = (COST2.total_flops - COST2.exits[0].cumulative_flops) / len(labels)
    assert budget - res.avg_flops <= step
    feasible = [
        r for r in sweep(logits, labels, COST2, policy, points=201) if r.avg_flops <= budget
    ]
    assert feasible and all(res.accuracy >= r.accuracy for r in feasible)


@pytest.mark.parametrize("fraction", [0.15, 0.5, 0.85])
def test_two_exit_budget_is_the_exact_optimum(fraction):
    logits, labels = synthetic(300, 2, seed=2)
    budget = fraction * COST2.total_flops
    cal = calibrate_budget(logits, labels, COST2, budget)
    right, total = outcomes(logits, labels, COST2, candidates(logits[0])[:, None])
    best = int(right[total / len(labels) <= budget].max())
    assert right_count(cal.predicted, len(labels)) == best


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.6, 0.9])
def test_three_exit_budget_is_met_and_beats_the_sweep(fraction):
    logits, labels = synthetic(3000, 3, seed=3)
    budget = fraction * COST3.total_flops
    cal = calibrate_budget(logits, labels, COST3, budget)
    res = cal.predicted
    assert len(cal.thresholds) == 2
    assert res == simulate(logits, labels, COST3, cal.thresholds)
    assert budget - 0.005 * COST3.total_flops <= res.avg_flops <= budget
    feasible = [r for r in sweep(logits, labels, COST3, points=201) if r.avg_flops <= budget]
    assert all(res.accuracy >= r.accuracy for r in feasible)


def test_three_exit_budget_is_near_the_exhaustive_optimum():
    """Exhaustive over every pair of splits (as matrix products over the images); the
    search is exact one threshold at a time, not jointly, so it may miss by an image or two."""
    logits, labels = synthetic(400, 3, seed=4)
    budget = 0.35 * COST3.total_flops
    cal = calibrate_budget(logits, labels, COST3, budget)
    c0, c1, c2 = (lg.argmax(-1).eq(labels).double() for lg in logits)
    f0, f1, f2 = COST3.cumulative_flops
    leave0 = (exit_score(logits[0], "entropy")[None] < candidates(logits[0])[:, None]).double()
    leave1 = (exit_score(logits[1], "entropy")[None] < candidates(logits[1])[:, None]).double()
    go_on = 1 - leave0  # (T0, N) images that reach exit 2 for each tau_1
    right = (leave0 @ c0)[:, None] + go_on @ (leave1 * (c1 - c2) + c2).T  # (T0, T1)
    total = (leave0.sum(1) * f0)[:, None] + go_on @ (leave1 * (f1 - f2) + f2).T
    best = int(right[total / len(labels) <= budget].max())
    assert best - 2 <= right_count(cal.predicted, len(labels)) <= best


@pytest.mark.parametrize("num_exits", [2, 3])
@pytest.mark.parametrize("drop", [0.0, 0.005, 0.02, 0.1])
def test_max_drop_keeps_the_floor_at_least_cost(num_exits, drop):
    cost = COST2 if num_exits == 2 else COST3
    logits, labels = synthetic(3000, num_exits, seed=5)
    full = simulate(logits, labels, cost, None)
    cal = calibrate_max_drop(logits, labels, cost, drop)
    res = cal.predicted
    assert res == simulate(logits, labels, cost, cal.thresholds)
    assert res.accuracy >= full.accuracy - drop - 1e-6  # float32 accuracies
    ok = [r for r in sweep(logits, labels, cost, points=201) if r.accuracy >= full.accuracy - drop]
    assert all(res.avg_flops <= r.avg_flops for r in ok)
    if num_exits == 2:  # exact: the cheapest of every split that keeps the floor
        right, total = outcomes(logits, labels, cost, candidates(logits[0])[:, None])
        floor = right_count(full, len(labels)) - drop * len(labels) - 1e-9
        assert res.avg_flops == int(total[right >= floor].min()) / len(labels)


@pytest.mark.parametrize("num_exits", [2, 3])
def test_held_out_cost_lands_on_the_budget(num_exits):
    """Calibrated on 10000 images, the other 10000 cost the budget within 2 % of the full path."""
    cost = COST2 if num_exits == 2 else COST3
    logits, labels = synthetic(20000, num_exits, seed=6)
    fit = [lg[:10000] for lg in logits], labels[:10000]
    held = [lg[10000:] for lg in logits], labels[10000:]
    fractions = [0.3, 0.5, 0.7, 0.9] if num_exits == 2 else [0.25, 0.5]
    for fraction in fractions:
        cal = calibrate_budget(*fit, cost, fraction * cost.total_flops)
        out = simulate(*held, cost, cal.thresholds)
        assert abs(out.flops_ratio - fraction) <= 0.02, (fraction, out.flops_ratio)


def test_calibration_on_a_real_model_matches_its_early_exit():
    cfg = model_config("cifar10", "1-1-1", embed_dim=32, num_heads=2)
    model = RAViT(cfg).eval()
    x = torch.randn(96, 3, 32, 32)
    labels = torch.randint(0, 10, (96,))
    with torch.no_grad():
        logits = model(x).logits
        cost = model_cost(cfg)
        cal = calibrate_budget(logits, labels, cost, 0.5 * cost.total_flops)
        real = model.early_exit(x, thresholds=cal.thresholds)
    counts = torch.bincount(real.exit_index, minlength=3).tolist()
    assert tuple(counts) == cal.predicted.exit_counts
    assert cost.early_exit_flops(counts) <= 0.5 * cost.total_flops


def test_budget_limits():
    logits, labels = synthetic(500, 3, seed=7)
    cheapest = COST3.exits[0].cumulative_flops
    with pytest.raises(ValueError, match=str(cheapest)):
        calibrate_budget(logits, labels, COST3, cheapest - 1)
    low = calibrate_budget(logits, labels, COST3, cheapest)
    assert low.thresholds[0] == math.inf and low.predicted.exit_counts == (500, 0, 0)
    for budget in (COST3.total_flops, 2 * COST3.total_flops):
        full = calibrate_budget(logits, labels, COST3, budget)
        assert full.thresholds == (0.0, 0.0)
        assert full.predicted.exit_counts == (0, 0, 500)


def test_bad_arguments():
    logits, labels = synthetic(200, 2)
    budget = 0.5 * COST2.total_flops
    with pytest.raises(TypeError, match="budget_flops"):
        calibrate_budget(logits, labels, COST2, "0.5")
    with pytest.raises(ValueError, match="finite"):
        calibrate_budget(logits, labels, COST2, math.nan)
    with pytest.raises(ValueError, match="one .* per exit"):
        calibrate_budget(logits, labels, COST3, budget)
    with pytest.raises(ValueError, match="same N"):
        calibrate_budget(logits, labels[:-1], COST2, budget)
    with pytest.raises(ValueError, match="unknown exit policy"):
        calibrate_budget(logits, labels, COST2, budget, policy="margin")
    for drop in (-0.01, 1.0, 5):
        with pytest.raises(ValueError, match="one accuracy point"):
            calibrate_max_drop(logits, labels, COST2, drop)
    with pytest.raises(TypeError, match="max_drop"):
        calibrate_max_drop(logits, labels, COST2, True)


@pytest.mark.parametrize("budget", [COST3.exits[0].cumulative_flops, 0.4 * COST3.total_flops])
def test_calibration_round_trips_through_json(budget):
    logits, labels = synthetic(500, 3, seed=8)
    cal = calibrate_budget(logits, labels, COST3, budget, "confidence")
    text = json.dumps(cal.to_dict(), allow_nan=False)
    back = Calibration.from_dict(json.loads(text))
    assert back == cal
    drop = calibrate_max_drop(logits, labels, COST3, 0.01)
    assert Calibration.from_dict(json.loads(json.dumps(drop.to_dict()))) == drop
    with pytest.raises(ValueError, match="lacks"):
        Calibration.from_dict({"thresholds": []})
