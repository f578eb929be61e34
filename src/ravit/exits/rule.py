"""The exit rule shared by every backend: policy names, thresholds, and NumPy scores.

This module needs NumPy only, so that the exported-model runtime
(`ravit.runtime.exported`, onnxruntime without torch) decides exactly as
`RAViT.early_exit` does: the same policies, the same threshold rules, the
same comparison. The torch scores live in `ravit.exits.policy`; the NumPy
ones here follow them operation by operation, in float32, and the tests
hold the two to float32 rounding (tests/test_export.py).

The rule itself is `leaves` (one exit) and `first_exit` (all exits at once):
an image leaves exit i when score_i < tau_i, the score a float32 value and
tau_i rounded to float32 for the comparison. tau = 0 never exits, tau = inf
always does. Every backend decides through these two functions: the batched
model (`RAViT.early_exit`) and the streaming runner on torch scores, the
exported runtime, calibration, simulation and the controller on NumPy ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real

import numpy as np

from ravit.exits.names import POLICIES


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown exit policy {policy!r}; expected one of {list(POLICIES)}")
    return policy


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


def encode_threshold(t: float) -> float | str:
    """JSON-ready: an infinite threshold is written as the string "inf"."""
    return "inf" if math.isinf(t) else float(t)


def decode_threshold(value) -> float:
    if value == "inf":
        return math.inf
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"threshold {value!r} is neither a number nor 'inf'")
    return float(value)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def entropy_np(logits: np.ndarray) -> np.ndarray:
    """Softmax entropy in nats over the last axis, in float32 (`policy.entropy` in NumPy)."""
    logp = _log_softmax(logits)
    return np.maximum(-(np.exp(logp) * logp).sum(axis=-1), np.float32(0.0))


def _normalized_entropy_np(logits: np.ndarray) -> np.ndarray:
    return entropy_np(logits) / np.float32(math.log(logits.shape[-1]))


def _confidence_np(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return np.float32(1.0) - (e / e.sum(axis=-1, keepdims=True)).max(axis=-1)


EXIT_SCORES_NP: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "entropy": entropy_np,
    "normalized-entropy": _normalized_entropy_np,
    "confidence": _confidence_np,
}


def exit_score_np(logits: np.ndarray, policy: str = "entropy") -> np.ndarray:
    """(..., classes) logits -> (...) float32 scores; lower means more confident."""
    return EXIT_SCORES_NP[check_policy(policy)](logits)


def leaves(score, threshold: float):
    """The exit rule at one exit: True where the image leaves, score < threshold.

    `score` is a float32 torch tensor, a float32 NumPy array or a Python float
    (one image's float32 score); the threshold is rounded to float32 first,
    so that every backend compares the same two float32 values.
    """
    return score < float(np.float32(threshold))


def first_exit(scores, thresholds: Sequence[float]) -> np.ndarray:
    """The exit that answers each image: the first i whose score is below tau_i, else the last.

    scores: (E, N) float32 scores of every exit (NumPy, or a CPU torch tensor);
    thresholds: one per early exit (E - 1). Returns (N,) int64 exit indices.
    """
    scores = np.asarray(scores, dtype=np.float32)
    num_exits = scores.shape[0]
    if len(thresholds) != num_exits - 1:
        raise ValueError(
            f"{len(thresholds)} thresholds for {num_exits} exits: expected one per early exit"
        )
    taken = np.full(scores.shape[1:], num_exits - 1, dtype=np.int64)
    for e in reversed(range(num_exits - 1)):
        taken = np.where(leaves(scores[e], thresholds[e]), e, taken)
    return taken
