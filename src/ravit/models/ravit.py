"""The RAViT model: branches coarse to fine, CLS hand-over, one exit per branch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ravit.config import ModelConfig
from ravit.exits import entropy, exit_mask, exit_score, normalize_thresholds
from ravit.models.branch import Branch
from ravit.models.heads import LinearHead


@dataclass
class RAViTOutput:
    """Every exit's logits, coarse to fine: a list of (B, num_classes)."""

    logits: list[torch.Tensor]

    @property
    def final(self) -> torch.Tensor:
        return self.logits[-1]


@dataclass
class EarlyExitOutput:
    """Per image, in input order: what the early-exit procedure answered."""

    prediction: torch.Tensor  # (B,) int64 class index
    exit_index: torch.Tensor  # (B,) int64, 0 .. num_exits - 1 (present exits only)
    entropy: torch.Tensor  # (B,) softmax entropy (nats) at the exit taken
    score: torch.Tensor  # (B,) the policy's score at the exit taken
    logits: torch.Tensor  # (B, num_classes) the answering exit's logits


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Square resize; antialiased when downsampling so that small branches see no aliasing."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class RAViT(nn.Module):
    """Resolution-Adaptive ViT.

    Only present branches (depth > 0) are built: an absent branch has no
    parameters, no exit and no cost, and the CLS token skips over it.
    `forward` returns every exit's logits (training and evaluation);
    `early_exit` runs the exit procedure and skips the later branches for the
    images that left.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"RAViT expects a ModelConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.cls_token = nn.Parameter(torch.zeros(1, cfg.embed_dim))
        self.branches = nn.ModuleList(Branch(cfg, i) for i in cfg.present)
        self.heads = nn.ModuleList(
            LinearHead(dim=cfg.embed_dim, num_classes=cfg.num_classes) for _ in cfg.present
        )
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    @property
    def num_exits(self) -> int:
        return len(self.branches)

    @property
    def resolutions(self) -> list[int]:
        """The resolution each exit's branch sees."""
        return [b.resolution for b in self.branches]

    def check_input(self, x: torch.Tensor) -> None:
        c, s = self.cfg.in_chans, self.cfg.image_size
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected an image batch of shape (B, {c}, {s}, {s}), got {shape}")
        if tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(
                f"expected images of shape ({c}, {s}, {s}), got {tuple(x.shape[1:])}: "
                f"resize to {s}x{s} and give {c} channel(s)"
            )

    def forward_exit(
        self, e: int, x: torch.Tensor, cls: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exit e's branch and head on full-size images x: (logits, outgoing CLS)."""
        branch = self.branches[e]
        tokens = branch(resize(x, branch.resolution), cls)  # (B, 1 + N, D)
        return self.heads[e](tokens), tokens[:, 0]

    def initial_cls(self, batch: int) -> torch.Tensor:
        return self.cls_token.expand(batch, -1)

    def forward(self, x: torch.Tensor) -> RAViTOutput:
        self.check_input(x)
        cls = self.initial_cls(x.shape[0])
        logits = []
        for e in range(self.num_exits):
            out, cls = self.forward_exit(e, x, cls)
            logits.append(out)
        return RAViTOutput(logits)

    @torch.inference_mode()
    def early_exit(
        self,
        x: torch.Tensor,
        thresholds: float | Sequence[float] | None = None,
        policy: str = "entropy",
    ) -> EarlyExitOutput:
        """Run exits coarse to fine; an image leaves exit i when score_i < tau_i.

        After each exit the batch is compacted: the next branch runs only on
        the images still in it. The last exit answers for all that remain.
        """
        self.check_input(x)
        taus = normalize_thresholds(thresholds, self.num_exits)
        b = x.shape[0]
        prediction = torch.empty(b, dtype=torch.long, device=x.device)
        exit_index = torch.empty_like(prediction)
        ent = torch.empty(b, device=x.device)
        score = torch.empty(b, device=x.device)
        logits_out = torch.empty(b, self.cfg.num_classes, device=x.device)
        idx = torch.arange(b, device=x.device)  # input positions still running
        cls = self.initial_cls(b)
        for e in range(self.num_exits):
            logits, cls = self.forward_exit(e, x, cls)
            s = exit_score(logits, policy)
            last = e == self.num_exits - 1
            leave = torch.ones_like(s, dtype=torch.bool) if last else exit_mask(s, taus[e])
            out = idx[leave]
            prediction[out] = logits[leave].argmax(dim=-1)
            exit_index[out] = e
            ent[out] = entropy(logits[leave])
            score[out] = s[leave]
            logits_out[out] = logits[leave].to(logits_out.dtype)
            if last:
                break
            stay = ~leave
            idx, x, cls = idx[stay], x[stay], cls[stay]
            if idx.numel() == 0:
                break
        return EarlyExitOutput(prediction, exit_index, ent, score, logits_out)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
