"""Run-time budget control: thresholds adjusted image by image so that the average
cost over a sliding window of images stays at a target that may change at any time
(the paper suggests tying it to the battery level).

Two parts (equations in docs/early-exit.md):

- A `ControlTable`, built once on validation logits: a knob k, the expected
  cost as a fraction of the full path's FLOPs, mapped to per-exit thresholds.
  Its rows are budget calibrations (`calibrate_budget`) at evenly spaced
  budgets, made monotone (every threshold falls as k rises, so the cost of
  every single image rises with k, on any data) and interpolated linearly.
- A `BudgetController`: after each image it plans the next ones so that the
  window's sum of costs reaches target * window after `horizon` more images,
  counting the images that will have left the window by then (their costs are
  known), and it corrects the table for drift with a running estimate of
  (actual cost - expected cost), frozen while the knob is at a limit.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
import torch

from ravit.cost import ModelCost
from ravit.exits.calibration import _prepare, _solve_budget
from ravit.exits.policy import exit_score
from ravit.exits.simulate import exit_scores


@dataclass(frozen=True)
class ControlTable:
    """Knob (expected cost, fraction of the full path) -> thresholds, one row per knob."""

    policy: str
    exit_flops: tuple[int, ...]  # cumulative FLOPs C_i of every exit
    knobs: tuple[float, ...]  # strictly increasing, from C_1 / C_B (all leave at exit 1) to 1
    thresholds: tuple[tuple[float, ...], ...]  # per row, one finite threshold per early exit

    def __post_init__(self):
        rows = np.asarray(self.thresholds, dtype=np.float64).reshape(len(self.thresholds), -1)
        if len(self.knobs) < 2 or len(self.knobs) != len(rows):
            raise ValueError(
                f"a control table needs >= 2 rows and one knob per row, got "
                f"{len(self.knobs)} knobs and {len(rows)} rows"
            )
        if rows.shape[1] != len(self.exit_flops) - 1:
            raise ValueError(
                f"rows of {rows.shape[1]} thresholds for {len(self.exit_flops)} exits: "
                "expected one per early exit"
            )
        if np.any(np.diff(self.knobs) <= 0) or np.any(np.diff(rows, axis=0) > 0):
            raise ValueError(
                f"knobs {list(self.knobs)} must increase and every exit's thresholds "
                "must not increase from row to row"
            )
        if not np.all(np.isfinite(rows)) or np.any(rows < 0):
            raise ValueError("control-table thresholds must be finite and >= 0")

    @property
    def total_flops(self) -> int:
        return self.exit_flops[-1]

    @property
    def min_fraction(self) -> float:
        """The cheapest knob: every image leaves at exit 1."""
        return self.knobs[0]

    def at(self, knob: float) -> tuple[float, ...]:
        """Thresholds at a knob, linearly interpolated between rows (clamped to the ends)."""
        rows = np.asarray(self.thresholds, dtype=np.float64)
        return tuple(float(np.interp(knob, self.knobs, rows[:, e])) for e in range(rows.shape[1]))

    def to_dict(self) -> dict:
        return {
            "policy": self.policy,
            "exit_flops": list(self.exit_flops),
            "knobs": list(self.knobs),
            "thresholds": [list(r) for r in self.thresholds],
        }

    @classmethod
    def from_dict(cls, data: dict) -> ControlTable:
        missing = {"policy", "exit_flops", "knobs", "thresholds"} - set(data)
        if missing:
            raise ValueError(f"control-table dict lacks {sorted(missing)}: not from to_dict()")
        return cls(
            policy=str(data["policy"]),
            exit_flops=tuple(int(f) for f in data["exit_flops"]),
            knobs=tuple(float(k) for k in data["knobs"]),
            thresholds=tuple(tuple(float(t) for t in r) for r in data["thresholds"]),
        )


def _score_caps(logits: Sequence[torch.Tensor], scores: torch.Tensor, policy: str) -> np.ndarray:
    """Per early exit, a threshold above every score seen and the uniform answer's score
    (the highest any of the policies can give), so that it sends every image out."""
    uniform = float(exit_score(torch.zeros(1, logits[0].shape[-1]), policy)[0])
    top = np.maximum(scores[:-1].amax(dim=1).numpy(), uniform).astype(np.float32)
    return np.nextafter(top, np.float32(np.inf)).astype(np.float64)


def control_table(
    logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    cost: ModelCost,
    policy: str = "entropy",
    points: int = 21,
) -> ControlTable:
    """A control table from validation logits: `calibrate_budget` at `points` budgets
    evenly spaced from exit 1's cost to the full path's.

    Rows are made monotone by raising each row's thresholds to those of the
    next dearer row (this only lowers a row's cost, so it stays within its
    budget); infinite thresholds become a finite cap; every row's knob is its
    real cost on the validation data. Rows that cost the same are merged.
    """
    _int(points, "points", 2)
    if len(logits) < 2:
        raise ValueError(f"a model of {len(logits)} exit has no threshold to control")
    problem, scores = _prepare(logits, labels, cost, policy)  # scored once for every row
    low, high = cost.exits[0].cumulative_flops, cost.total_flops
    budgets = [low + (high - low) * i / (points - 1) for i in range(points)]
    rows = np.array([_solve_budget(problem, b) for b in budgets]).reshape(points, -1)
    rows = np.minimum(rows, _score_caps(logits, scores, policy))
    for i in range(points - 2, -1, -1):
        rows[i] = np.maximum(rows[i], rows[i + 1])
    knobs, kept = [], []
    for row in rows:
        ratio = problem.evaluate(row.tolist())[1] / problem.n / high
        if not knobs or ratio > knobs[-1]:
            knobs.append(ratio)
            kept.append(tuple(row.tolist()))
    return ControlTable(policy, tuple(cost.cumulative_flops), tuple(knobs), tuple(kept))


def _int(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name}={value} is outside [{low}, {'inf' if high is None else high}]")
    return value


class BudgetController:
    """Keeps the average cost over the last `window` images at a target, by thresholds.

    Use: before each image read `.thresholds` (one per early exit) and run
    the early exit with them; after it, call `.observe(exit_index)` (or
    `.update(flops)` with the FLOPs it really cost). The target, a fraction of
    the full path's FLOPs (or `flops=` absolute FLOPs), can change at any time
    with `.set_target`.

    horizon (default window // 20) is the number of images over which a gap
    between the window average and the target is closed: smaller tracks
    tighter, larger moves the thresholds less (which costs less accuracy).
    tolerance (relative, default 0) is a band around the target inside which
    the plan keeps the table's knob for the target instead of closing the gap:
    steadier thresholds, looser tracking. horizon = window with
    track_drift=False is pure feed-forward (the table alone).
    """

    def __init__(
        self,
        table: ControlTable,
        target: float | None = None,
        *,
        flops: float | None = None,
        window: int = 200,
        horizon: int | None = None,
        tolerance: float = 0.0,
        track_drift: bool = True,
    ):
        if not isinstance(table, ControlTable):
            raise TypeError(f"table must be a ControlTable, got {type(table).__name__}")
        self.table = table
        self.window = _int(window, "window", 1)
        default = max(1, self.window // 20)
        self.horizon = _int(default if horizon is None else horizon, "horizon", 1, self.window)
        if isinstance(tolerance, bool) or not isinstance(tolerance, Real):
            raise TypeError(f"tolerance must be a real number, got {tolerance!r}")
        if not 0 <= tolerance < 0.5:
            raise ValueError(f"tolerance={tolerance!r}: expected a relative band in [0, 0.5)")
        self.tolerance = float(tolerance)
        self.track_drift = bool(track_drift)
        self.drift = 0.0  # running estimate of (actual - expected) cost, fraction of full path
        self._costs: deque[float] = deque(maxlen=self.window)
        self._target = self._fraction(target, flops)
        self._plan()

    def _fraction(self, target: float | None, flops: float | None) -> float:
        if (target is None) == (flops is None):
            raise ValueError("give exactly one of target (fraction of the full path) or flops=")
        name = "target" if flops is None else "flops"
        value = target if flops is None else flops
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
        fraction = float(value) if flops is None else float(value) / self.table.total_flops
        low = self.table.min_fraction
        if not low <= fraction <= 1:  # also refuses nan
            raise ValueError(
                f"{name}={value!r} is {fraction:.4f} of the full path: expected a fraction in "
                f"[{low:.4f}, 1] (every image leaving at exit 1 costs {low:.4f})"
            )
        return fraction

    @property
    def target(self) -> float:
        """The target average cost, a fraction of the full path's FLOPs."""
        return self._target

    @property
    def thresholds(self) -> tuple[float, ...]:
        """Thresholds for the next image, one per early exit."""
        return self.table.at(self.knob)

    @property
    def window_average(self) -> float | None:
        """Average cost of the last `window` images (fraction of the full path); None before any."""
        return sum(self._costs) / len(self._costs) if self._costs else None

    def set_target(self, target: float | None = None, *, flops: float | None = None) -> None:
        self._target = self._fraction(target, flops)
        self._plan()

    def observe(self, exit_index: int) -> None:
        """Record that the last image left at exit `exit_index` (0-based)."""
        _int(exit_index, "exit_index", 0, len(self.table.exit_flops) - 1)
        self.update(self.table.exit_flops[exit_index])

    def update(self, flops: float) -> None:
        """Record the FLOPs the last image cost; it must have run at `.thresholds` as they
        were (before any `set_target`), which the drift estimate assumes."""
        if isinstance(flops, bool) or not isinstance(flops, Real):
            raise TypeError(f"flops must be a real number, got {type(flops).__name__} {flops!r}")
        if not 0 <= flops < math.inf:
            raise ValueError(f"flops={flops!r}: expected finite FLOPs >= 0")
        cost = float(flops) / self.table.total_flops
        limits = (self.table.min_fraction, 1.0)
        if self.track_drift and limits[0] < self.knob < limits[1]:  # frozen at a limit
            self.drift += (cost - self.knob - self.drift) / self.window
        self._costs.append(cost)
        self._plan()

    def _plan(self) -> None:
        """Knob for the next image: the expected cost per image u that brings the window's
        average to the target (or into the tolerance band) after `horizon` more images,
        counting the images that will have left the window by then; minus the drift."""
        h, n = self.horizon, len(self._costs)
        size = min(n + h, self.window)  # images in the window `horizon` images from now
        staying = sum(itertools.islice(self._costs, max(0, n + h - self.window), None))
        band = [self._target * size * (1 + s * self.tolerance) for s in (-1, 1)]
        low, high = ((b - staying) / h for b in band)
        u = min(max(self._target, low), high)
        self.knob = min(max(u - self.drift, self.table.min_fraction), 1.0)


@dataclass(frozen=True)
class StreamTrace:
    """Per image of a simulated stream (fractions are of the full path's FLOPs)."""

    window: int
    total_flops: int
    exit_index: torch.Tensor  # (N,) int64
    cost: torch.Tensor  # (N,) this image's cost
    window_average: torch.Tensor  # (N,) after this image
    target: torch.Tensor  # (N,) in force for this image
    knob: torch.Tensor  # (N,) used for this image
    thresholds: torch.Tensor  # (N, early exits) used for this image
    correct: torch.Tensor | None  # (N,) bool, when labels were given

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else float(self.correct.float().mean())

    @property
    def mean_cost(self) -> float:
        return float(self.cost.mean())

    def relative_error(self) -> torch.Tensor:
        """|window average - target| / target, per image."""
        return (self.window_average - self.target).abs() / self.target


def _schedule(schedule, n: int) -> dict[int, float]:
    changes = {}
    for item in schedule:
        if len(item) != 2 or isinstance(item[0], bool) or not isinstance(item[0], int):
            raise ValueError(f"schedule item {item!r}: expected (image_index, target)")
        if not 0 <= item[0] < n:
            raise ValueError(f"schedule index {item[0]} is outside the stream's [0, {n})")
        changes[item[0]] = item[1]
    return changes


def simulate_stream(
    logits: Sequence[torch.Tensor],
    cost: ModelCost,
    controller: BudgetController,
    schedule: Sequence[tuple[int, float]] = (),
    policy: str | None = None,
    labels: torch.Tensor | None = None,
) -> StreamTrace:
    """Run a controller over a stream of images (cached logits, in stream order).

    schedule lists (image_index, target) changes, target a fraction of the full
    path, applied before that image. The controller given is copied, not
    advanced. The exits taken are those of the real early exit at the
    thresholds in force for each image.
    """
    table = controller.table
    if list(table.exit_flops) != cost.cumulative_flops or len(logits) != len(cost.exits):
        raise ValueError(
            f"controller table for exits costing {list(table.exit_flops)}, cost model "
            f"{cost.cumulative_flops} and logits of {len(logits)} exits: expected one model"
        )
    if policy is not None and policy != table.policy:
        raise ValueError(f"policy {policy!r} differs from the table's {table.policy!r}")
    ctl = copy.deepcopy(controller)
    scores = exit_scores([lg.detach().cpu() for lg in logits], table.policy).numpy()
    n, last = scores.shape[1], len(logits) - 1
    changes = _schedule(schedule, n)
    if labels is not None and tuple(labels.shape) != (n,):
        raise ValueError(f"labels of shape {tuple(labels.shape)} for {n} images: expected ({n},)")
    rows = {k: [] for k in ("exit", "target", "knob", "taus", "avg")}
    for i in range(n):
        if i in changes:
            ctl.set_target(changes[i])
        taus = ctl.thresholds
        below = scores[:last, i] < np.asarray(taus, dtype=np.float32)  # as torch compares
        e = int(np.argmax(below)) if below.any() else last  # the first exit left
        rows["exit"].append(e)
        rows["target"].append(ctl.target)
        rows["knob"].append(ctl.knob)
        rows["taus"].append(taus)
        ctl.observe(e)
        rows["avg"].append(ctl.window_average)
    return _trace(rows, ctl, cost, logits, labels)


def _trace(rows: dict, ctl: BudgetController, cost: ModelCost, logits, labels) -> StreamTrace:
    exits = torch.tensor(rows["exit"], dtype=torch.int64)
    frac = torch.tensor(cost.cumulative_flops, dtype=torch.float64) / cost.total_flops
    correct = None
    if labels is not None:
        preds = torch.stack([lg.detach().cpu().argmax(-1) for lg in logits])
        correct = preds.gather(0, exits[None])[0] == labels.cpu()
    taus = torch.tensor(rows["taus"], dtype=torch.float64).reshape(len(exits), -1)
    return StreamTrace(
        window=ctl.window,
        total_flops=cost.total_flops,
        exit_index=exits,
        cost=frac[exits],
        window_average=torch.tensor(rows["avg"], dtype=torch.float64),
        target=torch.tensor(rows["target"], dtype=torch.float64),
        knob=torch.tensor(rows["knob"], dtype=torch.float64),
        thresholds=taus,
        correct=correct,
    )
