"""Plain-text tables of costs, accuracies and early-exit results."""

from __future__ import annotations

from collections.abc import Sequence

from ravit.cost import ModelCost, format_flops
from ravit.exits.simulation import EarlyExitResult


def anytime_table(cost: ModelCost, accuracy: Sequence[float]) -> str:
    """Accuracy and cumulative FLOPs if every image left at exit i."""
    lines = [f"{'exit':>4} {'res':>5} {'layers':>6} {'FLOPs':>10} {'% full':>7} {'accuracy':>9}"]
    for e, acc in zip(cost.exits, accuracy):
        lines.append(
            f"{e.exit + 1:>4} {e.resolution:>5} {e.layers:>6} "
            f"{format_flops(e.cumulative_flops):>10} "
            f"{100 * e.cumulative_flops / cost.total_flops:>6.1f}% {100 * acc:>8.2f}%"
        )
    return "\n".join(lines)


def early_exit_table(
    results: Sequence[EarlyExitResult],
    policy: str = "entropy",
    notes: Sequence[str] | None = None,
) -> str:
    """One row per threshold setting: accuracy, average FLOPs, exit fractions.

    notes: one per row, printed after it ("<- test"), e.g. which split it is on.
    """
    if notes is not None and len(notes) != len(results):
        raise ValueError(f"{len(notes)} notes for {len(results)} rows: expected one per row")
    lines = [
        f"{policy + ' thresholds':<22} {'accuracy':>9} {'avg FLOPs':>10} {'% full':>7}  "
        "leaving at each exit"
    ]
    for i, r in enumerate(results):
        taus = ",".join(_tau(t) for t in r.thresholds) or "-"
        fr = " ".join(f"{100 * f:5.1f}%" for f in r.exit_fractions)
        note = f"   <- {notes[i]}" if notes is not None else ""
        lines.append(
            f"{taus:<22} {100 * r.accuracy:>8.2f}% {format_flops(r.avg_flops):>10} "
            f"{100 * r.flops_ratio:>6.1f}%  {fr}{note}"
        )
    return "\n".join(lines)


def _tau(t: float) -> str:
    return "inf" if t == float("inf") else f"{t:.4g}"
