"""Exit scores and the exit rule, as pure functions on logits.

Every policy maps logits to a score where *lower means more confident*, and
an image leaves exit i when score < threshold_i. A threshold of 0 therefore
never exits (no score is negative), which is the paper's "no early exit".

- "entropy": the softmax entropy H = -sum p log p (the paper), in nats.
- "normalized-entropy": H / log(num_classes), in [0, 1] for any class count,
  so that a threshold means the same across data sets.
- "confidence": 1 - max softmax probability, in [0, 1 - 1/C].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Softmax entropy in nats over the last dimension, computed stably in fp32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    h = -(logp.exp() * logp).sum(dim=-1)
    return h.clamp_min(0.0)


def _normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    return entropy(logits) / math.log(logits.shape[-1])


def _confidence(logits: torch.Tensor) -> torch.Tensor:
    return 1.0 - torch.softmax(logits.float(), dim=-1).amax(dim=-1)


EXIT_SCORES = {
    "entropy": entropy,
    "normalized-entropy": _normalized_entropy,
    "confidence": _confidence,
}
POLICIES = tuple(EXIT_SCORES)


def exit_score(logits: torch.Tensor, policy: str = "entropy") -> torch.Tensor:
    if policy not in EXIT_SCORES:
        raise ValueError(f"unknown exit policy {policy!r}; expected one of {list(POLICIES)}")
    return EXIT_SCORES[policy](logits)


def exit_mask(score: torch.Tensor, threshold: float) -> torch.Tensor:
    """True where the image leaves: score strictly below the threshold."""
    return score < threshold


def normalize_thresholds(
    thresholds: float | Sequence[float] | None, num_exits: int
) -> tuple[float, ...]:
    """One threshold per exit but the last (which always answers).

    Accepts a single number (used for every early exit), num_exits - 1 values,
    or num_exits values (the last one is ignored). None means no early exit.
    """
    n = num_exits - 1
    if thresholds is None:
        return (0.0,) * n
    if isinstance(thresholds, (int, float)):
        values = (float(thresholds),) * n
    else:
        values = tuple(float(t) for t in thresholds)
        if len(values) == num_exits:
            values = values[:n]
        if len(values) != n:
            raise ValueError(
                f"got {len(values)} thresholds for {num_exits} exits: expected 1, "
                f"{n} (one per early exit) or {num_exits}"
            )
    # +inf is allowed: it forces every image out at that exit.
    if any(math.isnan(t) or t < 0 for t in values):
        raise ValueError(f"thresholds must be >= 0 (inf forces the exit), got {list(values)}")
    return values
