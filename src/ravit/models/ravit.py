"""The RAViT model: branches coarse to fine, CLS hand-over, one exit per branch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ravit.config import ModelConfig
from ravit.exits.policy import entropy, exit_score
from ravit.exits.rule import leaves, normalize_thresholds
from ravit.models.branch import Branch
from ravit.models.heads import HeadSpec, build_head


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
            build_head(cfg.branches[i].head, HeadSpec.of(cfg, i)) for i in cfg.present
        )
        # Linear layers keep PyTorch's fan-in scaled init (std 1 / sqrt(3 fan_in)). The
        # ViT/DeiT trunc-normal(0.02) is that scale only at D = 768; at the cifar10
        # preset's D = 128 it is 2.5x smaller and RAViT 1-3 under-fitted at its last
        # exit (issue 13: test 50.8 -> 55.4 %, seed 0; see docs/training.md).
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
        Compaction costs one `index_select` of the images and CLS tokens per
        exit that some (not all) images leave; an exit nobody leaves costs
        nothing beyond its score. Answers are put back in input order once,
        at the end.
        """
        self.check_input(x)
        taus = normalize_thresholds(thresholds, self.num_exits)
        last = self.num_exits - 1
        pos: torch.Tensor | None = None  # input positions still running; None: all, in order
        cls = self.initial_cls(x.shape[0])
        parts: list[_ExitPart] = []
        for e in range(self.num_exits):
            logits, cls = self.forward_exit(e, x, cls)
            ent = entropy(logits)
            score = ent if policy == "entropy" else exit_score(logits, policy)
            if e == last:
                parts.append(_ExitPart(e, pos, logits, ent, score))
                break
            leave = leaves(score, taus[e])
            go = leave.nonzero().squeeze(1)  # (k,) batch rows leaving here
            if go.numel() == 0:
                continue
            if go.numel() == leave.numel():  # everyone left: no later branch runs
                parts.append(_ExitPart(e, pos, logits, ent, score))
                break
            parts.append(_ExitPart(e, pos, logits, ent, score).select(go))
            stay = (~leave).nonzero().squeeze(1)
            x, cls = x.index_select(0, stay), cls.index_select(0, stay)
            pos = stay if pos is None else pos.index_select(0, stay)
        return _assemble(parts, x.device)


@dataclass
class _ExitPart:
    """The images that left at exit `exit`: their input positions (None: all, in order)."""

    exit: int
    pos: torch.Tensor | None
    logits: torch.Tensor
    entropy: torch.Tensor
    score: torch.Tensor

    def select(self, rows: torch.Tensor) -> _ExitPart:
        pos = rows if self.pos is None else self.pos.index_select(0, rows)
        pick = (self.logits, self.entropy, self.score)
        return _ExitPart(self.exit, pos, *(t.index_select(0, rows) for t in pick))


def _assemble(parts: list[_ExitPart], device: torch.device) -> EarlyExitOutput:
    """The answers in input order, from the per-exit parts: one scatter, not one per exit."""
    dtype = torch.get_default_dtype()
    exits = [
        torch.full((p.logits.shape[0],), p.exit, dtype=torch.long, device=device) for p in parts
    ]
    if len(parts) == 1:  # every image answered at the same exit, in input order
        (p,) = parts
        logits = p.logits.to(dtype)
        return EarlyExitOutput(logits.argmax(-1), exits[0], p.entropy, p.score, logits)
    pos = torch.cat([p.pos for p in parts])  # (B,) a permutation of the input positions
    fields = (
        torch.cat(exits),
        torch.cat([p.entropy for p in parts]),
        torch.cat([p.score for p in parts]),
        torch.cat([p.logits.to(dtype) for p in parts]),
    )
    exit_index, ent, score, logits = (torch.empty_like(t).index_copy_(0, pos, t) for t in fields)
    return EarlyExitOutput(logits.argmax(-1), exit_index, ent, score, logits)
