"""Early exit on cached logits: what the real procedure would answer, and its cost.

An exit's logits do not depend on which other images left earlier, so the
decisions taken on the full path's cached logits are exactly those of the
real early-exit run (`RAViT.early_exit`), and a sweep over thresholds costs
no forward pass at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ravit.cost import ModelCost
from ravit.exits.policy import exit_score
from ravit.exits.rule import first_exit, normalize_thresholds


@dataclass(frozen=True)
class EarlyExitResult:
    thresholds: tuple[float, ...]
    accuracy: float
    avg_flops: float
    flops_ratio: float  # of the full path's FLOPs
    exit_counts: tuple[int, ...]

    @property
    def exit_fractions(self) -> list[float]:
        n = sum(self.exit_counts)
        return [c / n for c in self.exit_counts]

    def to_dict(self) -> dict:
        return {**asdict(self), "exit_fractions": self.exit_fractions}


def exit_scores(logits: Sequence[torch.Tensor], policy: str = "entropy") -> torch.Tensor:
    """(num_exits, N) policy scores of every exit."""
    return torch.stack([exit_score(lg, policy) for lg in logits])


def exit_decisions(scores: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """Exit taken by each image (`ravit.exits.rule.first_exit` on (E, N) CPU scores)."""
    return torch.from_numpy(first_exit(scores.numpy(), list(thresholds)))


def simulate(
    logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    cost: ModelCost,
    thresholds: float | Sequence[float] | None,
    policy: str = "entropy",
    scores: torch.Tensor | None = None,
) -> EarlyExitResult:
    """Accuracy and average FLOPs (SPEC's C_EE with real exit counts) at given thresholds."""
    taus = normalize_thresholds(thresholds, len(logits))
    scores = exit_scores(logits, policy) if scores is None else scores
    taken = exit_decisions(scores, taus)
    preds = torch.stack([lg.argmax(-1) for lg in logits])  # (E, N)
    answer = preds.gather(0, taken[None]).squeeze(0)
    counts = torch.bincount(taken, minlength=len(logits)).tolist()
    avg = cost.early_exit_flops(counts)
    return EarlyExitResult(
        thresholds=taus,
        accuracy=float((answer == labels).float().mean()),
        avg_flops=avg,
        flops_ratio=avg / cost.total_flops,
        exit_counts=tuple(counts),
    )


def sweep(
    logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    cost: ModelCost,
    policy: str = "entropy",
    points: int = 21,
) -> list[EarlyExitResult]:
    """One threshold for every early exit, from 'nobody leaves' to 'all leave at exit 1'.

    The candidate thresholds are quantiles of the early exits' scores, so the
    curve's points spread evenly over the exit fractions whatever the policy
    or the number of classes. Sorted by cost.
    """
    if len(logits) < 2:
        return [simulate(logits, labels, cost, None, policy)]
    scores = exit_scores(logits, policy)
    pooled = scores[:-1].flatten()
    qs = torch.linspace(0, 1, points, dtype=pooled.dtype)
    candidates = {0.0, float("inf")} | {float(v) for v in torch.quantile(pooled, qs)}
    results = {}  # thresholds that send the same images to the same exits are one point
    for t in sorted(candidates):
        r = simulate(logits, labels, cost, t, policy, scores)
        results.setdefault((r.exit_counts, r.accuracy), r)
    return sorted(results.values(), key=lambda r: (r.avg_flops, -r.accuracy))
