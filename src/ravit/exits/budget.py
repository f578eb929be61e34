"""The run-time budget controller's table and control law, in pure Python and NumPy.

`ControlTable` maps a knob (the expected cost, a fraction of the full
path's FLOPs) to per-exit thresholds; `BudgetController` moves the knob
image by image so that the average cost over a sliding window stays at a
target (equations in docs/early-exit.md). Neither needs torch, so the
exported-model runtime (`ravit.runtime.exported`) drives its thresholds with
the same controller; the table is built from validation logits by
`ravit.exits.controller.control_table` and travels in an export's manifest
(`ControlTable.to_dict`).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass
from numbers import Real

import numpy as np


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


def parse_budget(text: str, total_flops: int, cheapest_flops: float | None = None) -> float:
    """A budget as people write it -> absolute FLOPs per image.

    '0.7' or '70%' are fractions of the full path (`total_flops`); '60M',
    '1.2G' and '6e7' (any number above 1) are FLOPs. A budget above the full
    path (above 100 %) buys nothing more and is refused, as is one below
    `cheapest_flops` (the first exit's cost, when given: every image leaving
    there), whose message names that cheapest reachable budget. Exactly 100 %
    is allowed (no early exit).
    """
    t = text.strip().upper()
    scale = {"%": total_flops / 100, "M": 1e6, "G": 1e9}.get(t[-1:]) if t else None
    try:
        value = float(t[:-1] if scale else t)
    except ValueError:
        raise ValueError(
            f"budget {text!r}: expected a fraction of the full path (0.7 or 70%) or FLOPs "
            "(60M, 1.2G, 6e7)"
        ) from None
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"budget {text!r} must be positive and finite")
    if t.endswith("%"):
        flops = value / 100 * total_flops
    elif scale:
        flops = value * scale
    else:
        flops = value * total_flops if value <= 1 else value
    if flops > total_flops * (1 + 1e-9):
        raise ValueError(
            f"budget {text!r} is {_share(flops, total_flops)} of the full path: a budget can be "
            f"at most 100% ({_flops(total_flops)} FLOPs per image, no early exit)"
        )
    if cheapest_flops is not None and flops < cheapest_flops * (1 - 1e-9):
        raise ValueError(
            f"budget {text!r} ({_flops(flops)} FLOPs per image, {_share(flops, total_flops)} of "
            f"the full path) is below the cheapest reachable budget, "
            f"{_share(cheapest_flops, total_flops)} ({_flops(cheapest_flops)} FLOPs: every image "
            "leaving at exit 1)"
        )
    return min(flops, float(total_flops))


def _flops(flops: float) -> str:
    for unit, name in ((1e9, "G"), (1e6, "M")):
        if flops >= unit:
            return f"{flops / unit:.4g}{name}"
    return f"{flops:.4g}"


def _share(flops: float, total: float) -> str:
    return f"{100 * flops / total:.4g}%"
