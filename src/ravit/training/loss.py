from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def exit_weights(weights: Sequence[float] | None, num_exits: int) -> list[float]:
    """The loss weight of every exit: 1.0 each by default (the paper's sum)."""
    if weights is None:
        return [1.0] * num_exits
    if len(weights) != num_exits:
        raise ValueError(
            f"train.exit_weights has {len(weights)} values for a model with {num_exits} exits"
        )
    return [float(w) for w in weights]


def multi_exit_loss(
    logits: Sequence[torch.Tensor],
    target: torch.Tensor,
    weights: Sequence[float],
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss = sum_i w_i CE(logits_i, y); also returns each exit's (unweighted) loss."""
    per_exit = [
        F.cross_entropy(lg.float(), target, label_smoothing=label_smoothing) for lg in logits
    ]
    total = sum(w * loss for w, loss in zip(weights, per_exit))
    return total, per_exit
