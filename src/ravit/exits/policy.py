"""Exit scores and the exit rule, as pure functions on logits.

Every policy maps logits to a score where *lower means more confident*, and
an image leaves exit i when score < threshold_i (`ravit.exits.rule.leaves`).
A threshold of 0 therefore never exits (no score is negative), which is the paper's "no early exit".

- "entropy": the softmax entropy H = -sum p log p (the paper), in nats.
- "normalized-entropy": H / log(num_classes), in [0, 1] for any class count,
  so that a threshold means the same across data sets.
- "confidence": 1 - max softmax probability, in [0, 1 - 1/C].

The policy names (`POLICIES`, the keys of `EXIT_SCORES`) live in
`ravit.exits.names`; the threshold rules (`normalize_thresholds`, `leaves`)
in `ravit.exits.rule`, which needs no torch and also holds the NumPy scores
of the exported runtime.
"""

from __future__ import annotations

import math

import torch

from ravit.exits.rule import check_policy

__all__ = ["EXIT_SCORES", "entropy", "exit_score"]


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


def exit_score(logits: torch.Tensor, policy: str = "entropy") -> torch.Tensor:
    return EXIT_SCORES[check_policy(policy)](logits)
