from __future__ import annotations

import torch
from torch import nn


class LinearHead(nn.Module):
    """The paper's exit: one linear layer on the CLS token.

    The LayerNorm in front is the pre-norm encoder's final norm (as in ViT),
    kept in the head so that the CLS token handed to the next branch is the
    raw residual stream. Reads only token 0; MACs D x classes (neglected by
    the paper's cost model).
    """

    def __init__(self, *, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens: (B, 1 + N, D); the CLS token is token 0.
        return self.fc(self.norm(tokens[:, 0]))
