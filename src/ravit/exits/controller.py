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

Both live in `ravit.exits.budget` (no torch: the exported runtime shares
them); this module builds the table from logits and simulates streams.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ravit.cost import ModelCost
from ravit.exits.budget import BudgetController, ControlTable, _int
from ravit.exits.calibration import _prepare, _solve_budget
from ravit.exits.policy import exit_score
from ravit.exits.rule import first_exit
from ravit.exits.simulation import exit_scores


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
    n = scores.shape[1]
    changes = _schedule(schedule, n)
    if labels is not None and tuple(labels.shape) != (n,):
        raise ValueError(f"labels of shape {tuple(labels.shape)} for {n} images: expected ({n},)")
    rows = {k: [] for k in ("exit", "target", "knob", "taus", "avg")}
    for i in range(n):
        if i in changes:
            ctl.set_target(changes[i])
        taus = ctl.thresholds
        e = int(first_exit(scores[:, i], taus))  # the exit this image leaves at
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


@dataclass(frozen=True)
class Segment:
    """How a stream kept one target, from the image it was set on to the next change."""

    target: float  # fraction of the full path
    start: int  # first image under this target
    end: int  # one past the last
    final_average: float  # the window average at the segment's last image
    settled_after: int | None  # images after the change until the error stays in the band
    worst_after: int  # images after the change from which `worst_error` is measured
    worst_error: float  # the largest relative error from then on (nan: segment too short)


def settled_after(errors: Sequence[float], band: float) -> int | None:
    """How many images after a change the relative error stays within band (None: never)."""
    for i in range(len(errors) - 1, -1, -1):
        if errors[i] > band:
            return i + 1 if i + 1 < len(errors) else None
    return 0


def segments(
    trace: StreamTrace, schedule: Sequence[tuple[int, float]], band: float
) -> list[Segment]:
    """Per target change of `schedule` (as given to `simulate_stream`): how it was kept.

    The worst error is measured from one full window after the change to the
    segment's end (nan when the segment is no longer than the window).
    """
    err = trace.relative_error()
    n, out = len(err), []
    for i, (start, target) in enumerate(schedule):
        end = schedule[i + 1][0] if i + 1 < len(schedule) else n
        settle = min(end, start + trace.window)
        worst = float(err[settle:end].max()) if settle < end else float("nan")
        out.append(Segment(target, start, end, float(trace.window_average[end - 1]),
                           settled_after(err[start:end].tolist(), band), settle - start,
                           worst))  # fmt: skip
    return out
