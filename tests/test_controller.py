import json
import math

import pytest
import torch
from synthetic import synthetic

from ravit.config import model_config
from ravit.cost import model_cost
from ravit.exits import (
    BudgetController,
    ControlTable,
    control_table,
    exit_decisions,
    exit_scores,
    simulate,
    simulate_stream,
)
from ravit.reports.plots import plot_controller

COST2 = model_cost(model_config("cifar10", "1-3"))  # per-image cost 7.6 % or 100 %
COST3 = model_cost(model_config("cifar10", "1-1-1"))  # 5.4 %, 24.1 % or 100 %
WINDOW = 200
SOON = 3 * WINDOW // 2  # "soon" after a change: within 1.5 windows
CHANGES = [(0, 0.8), (2000, 0.6), (4000, 0.7)]  # targets, fractions of the full path


def drifting_stream(n, num_exits, seed):
    """The second half of the stream is much harder than the validation data."""
    easy, y_easy = synthetic(n, num_exits, seed=seed)
    hard, y_hard = synthetic(n, num_exits, seed=seed + 1, shift=0.25)
    h = n // 2
    logits = [torch.cat([a[:h], b[h:]]) for a, b in zip(easy, hard)]
    return logits, torch.cat([y_easy[:h], y_hard[h:]])


@pytest.fixture(scope="module")
def tables():
    two = control_table(*synthetic(4000, 2, seed=1), COST2)
    three = control_table(*synthetic(2000, 3, seed=1), COST3, points=11)
    return {2: (two, COST2), 3: (three, COST3)}


def worst_after_changes(trace, changes, settle=SOON):
    """Largest |window average - target| / target once `settle` images past every change."""
    err = trace.relative_error()
    starts = [i for i, _ in changes] + [len(err)]
    return max(float(err[a + settle : b].max()) for a, b in zip(starts, starts[1:]))


def test_table_is_monotone_and_its_knob_is_the_expected_cost(tables):
    table, cost = tables[3]
    assert table.knobs[0] == pytest.approx(cost.exits[0].cumulative_flops / cost.total_flops)
    assert table.knobs[-1] == 1.0
    assert all(a < b for a, b in zip(table.knobs, table.knobs[1:]))
    rows = torch.tensor(table.thresholds)
    assert bool((rows[1:] <= rows[:-1]).all())
    logits, labels = synthetic(2000, 3, seed=1)  # the validation data
    for knob, row in zip(table.knobs, table.thresholds):
        assert simulate(logits, labels, cost, row).flops_ratio == pytest.approx(knob)
    assert simulate(logits, labels, cost, table.at(table.knobs[0])).exit_counts == (2000, 0, 0)
    between = [simulate(logits, labels, cost, table.at(k)).flops_ratio for k in (0.3, 0.5, 0.7)]
    assert between == pytest.approx([0.3, 0.5, 0.7], abs=0.03)
    assert ControlTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table


@pytest.mark.parametrize("num_exits", [2, 3])
def test_window_average_follows_target_changes(tables, num_exits):
    table, cost = tables[num_exits]
    logits, labels = synthetic(6000, num_exits, seed=7)
    ctl = BudgetController(table, 0.8, window=WINDOW)
    trace = simulate_stream(logits, cost, ctl, CHANGES, labels=labels)
    assert worst_after_changes(trace, CHANGES) <= 0.05  # of the target
    assert trace.mean_cost == pytest.approx(sum(t for _, t in CHANGES) / 3, abs=0.01)
    # Without feedback the window average wanders: a window of 200 images is noisy.
    ff = BudgetController(table, 0.8, window=WINDOW, horizon=WINDOW, track_drift=False)
    assert worst_after_changes(simulate_stream(logits, cost, ff, CHANGES), CHANGES) > 0.05


@pytest.mark.parametrize("num_exits", [2, 3])
def test_drift_is_corrected_where_feed_forward_misses_it(tables, num_exits):
    table, cost = tables[num_exits]
    logits, labels = drifting_stream(6000, num_exits, seed=11)
    ctl = BudgetController(table, 0.8, window=WINDOW)
    trace = simulate_stream(logits, cost, ctl, CHANGES, labels=labels)
    assert worst_after_changes(trace, CHANGES) <= 0.05
    assert ctl.drift == 0.0  # the controller given is not advanced
    ff = BudgetController(table, 0.8, window=WINDOW, horizon=WINDOW, track_drift=False)
    late = simulate_stream(logits, cost, ff, CHANGES).window_average[4000 + SOON :]
    assert float(late.mean()) > 1.05 * 0.7  # hard images run on: over budget throughout


def test_tolerance_steadies_the_thresholds(tables):
    table, cost = tables[2]
    logits, labels = synthetic(6000, 2, seed=7)
    traces = [
        simulate_stream(logits, cost, BudgetController(table, 0.8, tolerance=t), CHANGES)
        for t in (0.0, 0.02)
    ]
    tight, loose = (float(t.knob.diff().abs().mean()) for t in traces)
    assert loose < 0.6 * tight
    assert worst_after_changes(traces[1], CHANGES) <= 0.06


def test_stream_trace_is_consistent(tables):
    table, cost = tables[3]
    logits, labels = synthetic(700, 3, seed=3)
    ctl = BudgetController(table, 0.5, window=100)
    trace = simulate_stream(logits, cost, ctl, [(300, 0.3)], policy="entropy", labels=labels)
    scores = exit_scores(logits)
    for i in range(0, 700, 7):
        taken = exit_decisions(scores[:, i : i + 1], trace.thresholds[i].tolist())
        assert taken == trace.exit_index[i]
    frac = torch.tensor(cost.cumulative_flops, dtype=torch.float64) / cost.total_flops
    assert torch.equal(trace.cost, frac[trace.exit_index])
    running = torch.stack([trace.cost[max(0, i - 99) : i + 1].mean() for i in range(700)])
    assert torch.allclose(trace.window_average, running)
    assert trace.target[299] == 0.5 and trace.target[300] == 0.3
    assert 0 < trace.accuracy < 1


def test_controller_by_hand(tables):
    table, cost = tables[2]
    ctl = BudgetController(table, flops=0.6 * cost.total_flops, window=50)
    assert ctl.target == pytest.approx(0.6) and ctl.window_average is None
    assert ctl.knob == pytest.approx(0.6) and len(ctl.thresholds) == 1
    for _ in range(10):  # ten images that ran the full path: the controller spends less
        ctl.observe(1)
    assert ctl.window_average == 1.0 and ctl.knob < 0.6
    ctl.update(cost.exits[0].cumulative_flops)
    assert ctl.window_average == pytest.approx((10 + table.min_fraction) / 11)
    ctl.set_target(1.0)
    assert ctl.knob == 1.0 and ctl.thresholds == (0.0,)


def test_controller_refuses_bad_values(tables):
    table, cost = tables[2]
    low = table.min_fraction
    with pytest.raises(ValueError, match=f"{low:.4f}"):
        BudgetController(table, low / 2)
    for bad in (1.5, math.nan):
        with pytest.raises(ValueError, match="expected a fraction"):
            BudgetController(table, bad)
    with pytest.raises(ValueError, match="exactly one"):
        BudgetController(table, 0.5, flops=1e6)
    with pytest.raises(TypeError, match="table"):
        BudgetController({"knobs": []}, 0.5)
    with pytest.raises(ValueError, match="horizon"):
        BudgetController(table, 0.5, window=10, horizon=11)
    with pytest.raises(ValueError, match="tolerance"):
        BudgetController(table, 0.5, tolerance=0.5)
    with pytest.raises(TypeError, match="window"):
        BudgetController(table, 0.5, window=2.5)
    ctl = BudgetController(table, 0.5)
    with pytest.raises(ValueError, match="exit_index"):
        ctl.observe(2)
    with pytest.raises(ValueError, match="flops"):
        ctl.update(-1.0)
    with pytest.raises(ValueError, match="policy"):
        simulate_stream(synthetic(10, 2)[0], cost, ctl, policy="confidence")
    with pytest.raises(ValueError, match="schedule index"):
        simulate_stream(synthetic(10, 2)[0], cost, ctl, [(10, 0.5)])
    with pytest.raises(ValueError, match="one model"):
        simulate_stream(synthetic(10, 3)[0], COST3, ctl)
    with pytest.raises(ValueError, match="must increase"):
        ControlTable("entropy", (1, 2), (0.5, 0.4), ((1.0,), (0.5,)))


def test_plot_controller(tables, tmp_path):
    table, cost = tables[2]
    trace = simulate_stream(synthetic(600, 2)[0], cost, BudgetController(table, 0.7), [(300, 0.5)])
    path = plot_controller(tmp_path / "plots" / "controller.png", trace, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_segments_report_how_each_target_was_kept(tables):
    from ravit.exits.controller import segments, settled_after

    table, cost = tables[2]
    logits, labels = synthetic(6000, 2, seed=3)
    trace = simulate_stream(logits, cost, BudgetController(table, 0.8, window=WINDOW), CHANGES)
    got = segments(trace, CHANGES, 0.05)
    assert [(s.target, s.start, s.end) for s in got] == [(0.8, 0, 2000), (0.6, 2000, 4000),
                                                         (0.7, 4000, 6000)]  # fmt: skip
    err = trace.relative_error()
    for s in got:
        assert s.final_average == pytest.approx(float(trace.window_average[s.end - 1]))
        assert s.worst_after == WINDOW
        assert s.worst_error == pytest.approx(float(err[s.start + WINDOW : s.end].max()))
        assert s.settled_after == settled_after(err[s.start : s.end].tolist(), 0.05)
        assert s.settled_after is not None and s.settled_after < SOON
    short = segments(trace, [(0, 0.8), (100, 0.7)], 0.05)[0]
    assert math.isnan(short.worst_error)  # a segment no longer than the window
