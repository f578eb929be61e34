"""The early-exit decision: pure functions on logits, outside the model."""

from ravit.exits.policy import (
    EXIT_SCORES,
    POLICIES,
    entropy,
    exit_mask,
    exit_score,
    normalize_thresholds,
)

__all__ = [
    "EXIT_SCORES",
    "POLICIES",
    "entropy",
    "exit_mask",
    "exit_score",
    "normalize_thresholds",
]
