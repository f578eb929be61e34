"""Thresholds chosen on held-out logits: for a FLOPs budget, or for an accuracy floor.

Both problems search the exact breakpoints of the exit scores, not a grid.
For one early exit (two exits), sorting the scores once gives every distinct
way of splitting the images between the exits; cumulative sums give the
accuracy and cost of all of them, and the best feasible one is the exact
optimum (O(N log N)). For two or more early exits the joint problem is
combinatorial; it is solved by exact coordinate ascent (each threshold over
all its breakpoints, the others fixed) with pair moves that trade cost
between two exits, from a feasible start. See docs/early-exit.md.

A threshold is always one of the calibration scores themselves: tau = s_(k),
the (k+1)-th smallest score among the images that reach the exit, sends out
exactly the k images below it (score < tau). Sending none gives tau = 0 and
sending all gives tau = inf.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
import torch

from ravit.cost import ModelCost
from ravit.exits.rule import decode_threshold as _decode
from ravit.exits.rule import encode_threshold as _encode
from ravit.exits.rule import first_exit
from ravit.exits.simulation import EarlyExitResult, exit_scores, simulate

PAIR_CANDIDATES = 32  # evenly spaced ranks tried first for one threshold of a pair
MAX_ROUNDS = 100  # coordinate-ascent rounds; every accepted move strictly improves


@dataclass(frozen=True)
class Calibration:
    """Calibrated thresholds and what they give on the calibration data."""

    thresholds: tuple[float, ...]  # one per early exit; inf forces the exit
    policy: str
    target: dict  # what was asked: {"budget_flops": x} or {"max_drop": x}
    predicted: EarlyExitResult  # `simulate` on the calibration data at these thresholds

    def to_dict(self) -> dict:
        """JSON-ready: an infinite threshold is written as the string "inf"."""
        pred = self.predicted.to_dict()
        pred["thresholds"] = [_encode(t) for t in self.predicted.thresholds]
        pred["exit_counts"] = list(self.predicted.exit_counts)
        return {
            "thresholds": [_encode(t) for t in self.thresholds],
            "policy": self.policy,
            "target": dict(self.target),
            "predicted": pred,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        missing = {"thresholds", "policy", "target", "predicted"} - set(data)
        if missing:
            raise ValueError(f"calibration dict lacks {sorted(missing)}: not from to_dict()")
        pred = data["predicted"]
        predicted = EarlyExitResult(
            thresholds=tuple(_decode(t) for t in pred["thresholds"]),
            accuracy=float(pred["accuracy"]),
            avg_flops=float(pred["avg_flops"]),
            flops_ratio=float(pred["flops_ratio"]),
            exit_counts=tuple(int(c) for c in pred["exit_counts"]),
        )
        return cls(
            thresholds=tuple(_decode(t) for t in data["thresholds"]),
            policy=str(data["policy"]),
            target=dict(data["target"]),
            predicted=predicted,
        )


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class _Problem:
    """The calibration data reduced to what the search needs (NumPy: single-threaded and
    cheap per call, which matters for the many small scans of a search)."""

    scores: np.ndarray  # (E, N) float32 policy scores, exactly those `simulate` compares
    correct: np.ndarray  # (E, N) int64, 1 where exit e's answer is right
    flops: np.ndarray  # (E,) int64 cumulative FLOPs C_e
    order: np.ndarray  # (E, N) each exit's images sorted by score

    @property
    def n(self) -> int:
        return self.scores.shape[1]

    def decide(self, taus: Sequence[float]) -> np.ndarray:
        """The exit each image takes at these thresholds (`first_exit`)."""
        return first_exit(self.scores, taus)

    def right(self, taken: np.ndarray) -> int:
        return int(np.take_along_axis(self.correct, taken[None], 0).sum())

    def evaluate(self, taus: Sequence[float]) -> tuple[int, int]:
        """(number right, total FLOPs over the N images) at given thresholds."""
        taken = self.decide(taus)
        return self.right(taken), int(self.flops[taken].sum())


def _prepare(
    logits: Sequence[torch.Tensor], labels: torch.Tensor, cost: ModelCost, policy: str
) -> tuple[_Problem, torch.Tensor]:
    """The search's view of the data, and the (E, N) scores as a tensor for `simulate`."""
    if isinstance(logits, torch.Tensor) or not all(isinstance(lg, torch.Tensor) for lg in logits):
        raise TypeError("logits must be a list of (N, classes) tensors, one per exit")
    if len(logits) != len(cost.exits):
        raise ValueError(
            f"got logits of {len(logits)} exits for a cost model of {len(cost.exits)}: "
            "expected one (N, classes) tensor per exit"
        )
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise TypeError(f"labels must be an (N,) integer tensor, got {labels!r:.80}")
    shapes = [tuple(lg.shape) for lg in logits]
    if any(len(s) != 2 or s[0] != len(labels) for s in shapes) or len(labels) == 0:
        raise ValueError(
            f"logits of shapes {shapes} and {len(labels)} labels: expected (N, classes) "
            "per exit with the same N >= 1 as the labels"
        )
    scores = exit_scores(logits, policy).detach().cpu()
    s = scores.float().numpy()
    correct = torch.stack([(lg.argmax(-1) == labels.to(lg.device)).cpu() for lg in logits])
    flops = np.asarray(cost.cumulative_flops, dtype=np.int64)
    order = np.argsort(s, axis=1, kind="stable")
    return _Problem(s, correct.numpy().astype(np.int64), flops, order), scores


@dataclass(frozen=True)
class _Objective:
    """What is optimised: "budget" (max accuracy, average FLOPs <= bound) or
    "floor" (min FLOPs, number right >= bound). Ties go to the other quantity:
    equal accuracy -> the higher cost (the budget is spent); equal cost -> the
    higher accuracy."""

    kind: str
    bound: float
    n: int

    def feasible(self, right: np.ndarray, total: np.ndarray) -> np.ndarray:
        if self.kind == "budget":  # int64 / int: the same float as ModelCost.early_exit_flops
            return total / self.n <= self.bound
        return right >= self.bound

    def keys(self, right, total):
        """(primary, secondary), both to maximise: of one candidate or of arrays of them."""
        return (right, total) if self.kind == "budget" else (-total, right)


def _best(obj: _Objective, right: np.ndarray, total: np.ndarray) -> int | None:
    """Index of the best feasible candidate, or None if none is feasible."""
    ok = np.flatnonzero(obj.feasible(right, total))
    if ok.size == 0:
        return None
    first, _ = obj.keys(right[ok], total[ok])
    top = ok[first == first.max()]
    _, second = obj.keys(right[top], total[top])
    return int(top[second.argmax()])


def _reaching(p: _Problem, taus: Sequence[float], e: int):
    """Exits taken with tau_e = 0, and the images that reach exit e sorted by score."""
    taken = p.decide([*taus[:e], 0.0, *taus[e + 1 :]])
    idx = p.order[e][taken[p.order[e]] > e]
    return taken, p.scores[e, idx], idx


def _tau(s: np.ndarray, k: int) -> float:
    """The threshold that sends out exactly the k lowest of sorted scores s."""
    return 0.0 if k == 0 else math.inf if k == len(s) else float(s[k])


def _split(s: np.ndarray, k: int) -> int:
    """The largest split at or below k that keeps equal scores together."""
    return len(s) if k >= len(s) else int((s < s[max(k, 0)]).sum())


def _scan(p: _Problem, taus: Sequence[float], e: int, obj: _Objective):
    """Exact best tau_e over every breakpoint, the other thresholds fixed.

    Returns (tau_e, number right, total FLOPs), or None if nothing is feasible.
    """
    taken, s, idx = _reaching(p, taus, e)
    fall = taken[idx]  # where each reaching image goes if it does not leave at e
    right = np.empty(len(s) + 1, dtype=np.int64)
    total = np.empty(len(s) + 1, dtype=np.int64)
    right[0], total[0] = p.right(taken), p.flops[taken].sum()
    right[1:] = right[0] + np.cumsum(p.correct[e, idx] - p.correct[fall, idx])
    total[1:] = total[0] + np.cumsum(p.flops[e] - p.flops[fall])
    valid = np.ones(len(s) + 1, dtype=bool)
    valid[1:-1] = s[1:] > s[:-1]  # equal scores leave together: cut only between values
    ks = np.flatnonzero(valid)
    best = _best(obj, right[ks], total[ks])
    if best is None:
        return None
    k = int(ks[best])
    return _tau(s, k), int(right[k]), int(total[k])


def _pair_search(p: _Problem, taus: list[float], e: int, f: int, obj: _Objective):
    """Best (tau_e, tau_f): tau_e by a pattern search over its ranks, tau_f exact for each.

    The objective of tau_e (the best over tau_f) is evaluated at PAIR_CANDIDATES
    evenly spaced ranks and at the current split, then refined around the best
    rank with steps halving down to one image. Returns (thresholds, key).
    """
    _, s, _ = _reaching(p, taus, e)
    seen: dict[int, tuple] = {}

    def at(k: int):
        k = _split(s, k)
        if k not in seen:
            trial = [*taus[:e], _tau(s, k), *taus[e + 1 :]]
            found = _scan(p, trial, f, obj)
            key = None if found is None else obj.keys(*found[1:])
            seen[k] = (key, [*trial[:f], found[0], *trial[f + 1 :]] if found else None)
        return seen[k][0]

    m = len(s)
    for i in range(PAIR_CANDIDATES + 1):
        at(round(m * i / PAIR_CANDIDATES))
    at(int((s < taus[e]).sum()))
    feasible = [k for k, v in seen.items() if v[0] is not None]
    if not feasible:
        return None, None
    k = max(feasible, key=lambda j: seen[j][0])
    step = max(1, m // (2 * PAIR_CANDIDATES))
    while step >= 1:
        moves = [j for j in (k - step, k + step) if 0 <= j <= m and at(j) is not None]
        better = [j for j in moves if seen[_split(s, j)][0] > seen[k][0]]
        if better:
            k = _split(s, max(better, key=lambda j: seen[_split(s, j)][0]))
        else:
            step //= 2
    return seen[k][1], seen[k][0]


def _ascend(p: _Problem, obj: _Objective, taus: Sequence[float]) -> list[float]:
    """Coordinate ascent from a feasible start until no single or pair move gains."""
    taus = list(taus)
    current = obj.keys(*p.evaluate(taus))
    for _ in range(MAX_ROUNDS):
        moved = False
        for e in range(len(taus)):
            found = _scan(p, taus, e, obj)
            if found is not None and obj.keys(*found[1:]) > current:
                taus[e], current, moved = found[0], obj.keys(*found[1:]), True
        for e, f in itertools.permutations(range(len(taus)), 2):
            pair, key = _pair_search(p, taus, e, f, obj)
            if pair is not None and key > current:
                taus, current, moved = pair, key, True
        if not moved:
            break
    return taus


def _profile(p: _Problem, log_q: float) -> list[float]:
    """MSDNet's geometric exit profile: a share proportional to q^i leaves at exit i.

    Thresholds are set exit by exit on the images still running (the largest
    split at or below the wanted count, so equal scores leave together).
    """
    num_exits, n = p.scores.shape
    w = np.exp(log_q * np.arange(num_exits))
    leave_by = np.floor(n * np.cumsum(w / w.sum())).astype(np.int64)
    running = np.ones(n, dtype=bool)
    taus = []
    for e in range(num_exits - 1):
        s = p.scores[e, p.order[e][running[p.order[e]]]]
        want = int(leave_by[e]) - (n - int(running.sum()))
        taus.append(_tau(s, _split(s, want)))
        running &= ~(p.scores[e] < taus[-1])
    return taus


def _profile_start(p: _Problem, budget: float, steps: int = 40) -> list[float]:
    """Bisection on log q for the profile whose real cost is the highest within budget."""
    obj = _Objective("budget", budget, p.n)
    best = [math.inf] + [0.0] * (p.scores.shape[0] - 2)  # all leave at exit 1: feasible
    best_total = p.evaluate(best)[1]
    lo, hi = -30.0, 30.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        taus = _profile(p, mid)
        right, total = p.evaluate(taus)
        if obj.feasible(right, total):
            lo = mid
            if total > best_total:
                best, best_total = taus, total
        else:
            hi = mid
    return best


def _solve_budget(p: _Problem, budget: float) -> list[float]:
    """The budget search on a prepared problem (`control_table` runs many on one)."""
    num_early = p.scores.shape[0] - 1
    if budget >= p.flops[-1]:
        return [0.0] * num_early
    obj = _Objective("budget", budget, p.n)
    starts = [_profile_start(p, budget)]
    if num_early > 1:
        starts.append([math.inf] + [0.0] * (num_early - 1))
    ends = [_ascend(p, obj, s) for s in starts]
    return max(ends, key=lambda t: obj.keys(*p.evaluate(t)))


def _calibration(logits, labels, cost, policy, scores, taus, target) -> Calibration:
    logits = [lg.detach().cpu() for lg in logits]
    predicted = simulate(logits, labels.cpu(), cost, taus, policy, scores=scores)
    return Calibration(tuple(predicted.thresholds), policy, target, predicted)


def calibrate_budget(
    logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    cost: ModelCost,
    budget_flops: float,
    policy: str = "entropy",
) -> Calibration:
    """Thresholds of the highest accuracy whose average FLOPs per image stay <= budget.

    budget_flops is absolute FLOPs per image (SPEC's C_EE, with the real exit
    counts); for a fraction of the full path pass fraction * cost.total_flops.
    Exact for two exits; coordinate ascent from the budget-solved MSDNet
    profile (and from "all leave at exit 1") for more. A budget at or above
    the full path's cost gives no early exit (all thresholds 0).
    """
    p, scores = _prepare(logits, labels, cost, policy)
    budget = _real(budget_flops, "budget_flops")
    cheapest = cost.exits[0].cumulative_flops
    if budget < cheapest:
        raise ValueError(
            f"budget_flops={budget:.6g} is below the cheapest possible average cost, "
            f"{cheapest} FLOPs (every image leaving at exit 1); budget_flops is in FLOPs "
            f"per image, e.g. 0.7 * cost.total_flops = {0.7 * cost.total_flops:.6g}"
        )
    taus = _solve_budget(p, budget)
    return _calibration(logits, labels, cost, policy, scores, taus, {"budget_flops": budget})


def calibrate_max_drop(
    logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    cost: ModelCost,
    max_drop: float,
    policy: str = "entropy",
) -> Calibration:
    """Thresholds of the lowest average FLOPs whose accuracy stays >= full-path accuracy - max_drop.

    max_drop is a fraction of the images, i.e. accuracy points / 100: 0.01
    allows one point (e.g. 84.9 % -> 83.9 %), 0 allows none. It must lie in
    [0, 1). The reference is the last exit's accuracy (no early exit) on the
    same data. Exact for two exits; coordinate ascent from "no early exit"
    for more.
    """
    p, scores = _prepare(logits, labels, cost, policy)
    drop = _real(max_drop, "max_drop")
    if not 0 <= drop < 1:
        raise ValueError(
            f"max_drop={drop!r} is outside [0, 1): it is a fraction of accuracy, "
            "0.01 = one accuracy point"
        )
    full_right = int(p.correct[-1].sum())
    floor = math.ceil(full_right - drop * p.n - 1e-9)  # fewest right answers allowed
    obj = _Objective("floor", floor, p.n)
    taus = _ascend(p, obj, [0.0] * (len(logits) - 1))
    return _calibration(logits, labels, cost, policy, scores, taus, {"max_drop": drop})
