"""Batch-1 early exit with little overhead: one image in, one answer out.

`RAViT.early_exit` is the batched procedure (it compacts the batch after each
exit). For one image at a time, a stream from a camera or a request queue,
its bookkeeping (masks, index tensors, scatters) costs more than the exit
decision itself, so `StreamingRunner` runs a leaner loop: the resize sizes
are worked out once, the score is turned into a Python float and compared
with a Python float, and nothing is indexed by a mask. It gives the same
answers as `early_exit` on the same image (up to the last bits of float
arithmetic that a different batch size can change).

The thresholds and the policy are plain attributes, checked when set, so a
budget controller can change them between two images::

    runner = StreamingRunner(model, thresholds=0.1)
    for image in stream:
        result = runner(image)
        runner.thresholds = controller.update(result)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ravit.exits import EXIT_SCORES, POLICIES, entropy, normalize_thresholds
from ravit.models import RAViT


@dataclass(frozen=True)
class StreamResult:
    """One image's answer. `exit_index` is 0-based, like `EarlyExitOutput.exit_index`."""

    prediction: int  # class index
    exit_index: int  # 0 .. num_exits - 1 (present exits only)
    entropy: float  # softmax entropy (nats) at the exit taken
    score: float  # the policy's score at the exit taken
    logits: torch.Tensor  # (num_classes,) the answering exit's logits

    @property
    def probabilities(self) -> torch.Tensor:
        """(num_classes,) softmax of the answering exit's logits, in fp32."""
        return torch.softmax(self.logits.float(), dim=-1)

    @property
    def probability(self) -> float:
        """The predicted class's probability."""
        return float(self.probabilities[self.prediction])


class StreamingRunner:
    """Early exit for one (C, H, W) image at a time, already normalised as the model expects.

    `thresholds` (None, one number, or one per early exit, as for
    `RAViT.early_exit`) and `policy` (see `ravit.exits.POLICIES`) may be
    reassigned between calls. The model is used as it is: put it in eval
    mode and on its device first; the image is moved to the model's device.
    """

    def __init__(
        self,
        model: RAViT,
        thresholds: float | Sequence[float] | None = None,
        policy: str = "entropy",
    ):
        if not isinstance(model, RAViT):
            raise TypeError(f"StreamingRunner expects a RAViT model, got {type(model).__name__}")
        self.model = model
        cfg = model.cfg
        self._shape = (cfg.in_chans, cfg.image_size, cfg.image_size)
        # Per exit: the branch, its head, and the side to resize to (None: the input's own).
        self._steps = [
            (branch, head, None if branch.resolution == cfg.image_size else branch.resolution)
            for branch, head in zip(model.branches, model.heads)
        ]
        self.thresholds = thresholds
        self.policy = policy

    @property
    def thresholds(self) -> tuple[float, ...]:
        """One threshold per early exit (the last exit always answers)."""
        return self._taus

    @thresholds.setter
    def thresholds(self, value: float | Sequence[float] | None) -> None:
        self._taus = normalize_thresholds(value, len(self._steps))

    @property
    def policy(self) -> str:
        return self._policy

    @policy.setter
    def policy(self, value: str) -> None:
        if value not in EXIT_SCORES:
            raise ValueError(f"unknown exit policy {value!r}; expected one of {list(POLICIES)}")
        self._policy = value
        self._score: Callable[[torch.Tensor], torch.Tensor] = EXIT_SCORES[value]

    def __call__(self, image: torch.Tensor) -> StreamResult:
        if not isinstance(image, torch.Tensor) or tuple(image.shape) != self._shape:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"expected one image of shape {self._shape}, got {shape}")
        with torch.inference_mode():
            return self._run(image)

    def _run(self, image: torch.Tensor) -> StreamResult:
        model, taus, score_fn = self.model, self._taus, self._score
        x = image.to(model.cls_token.device).unsqueeze(0)  # (1, C, S, S)
        cls = model.cls_token  # (1, D): the learned CLS token, batch 1
        last = len(self._steps) - 1
        for e, (branch, head, size) in enumerate(self._steps):
            xi = x if size is None else _resize(x, size)
            tokens = branch(xi, cls)  # (1, 1 + N, D)
            logits = head(tokens)  # (1, classes)
            if e == last:
                break
            tau = taus[e]
            # tau 0 never exits and tau inf always does: no score needed to decide.
            if tau > 0.0 and (tau == float("inf") or float(score_fn(logits)) < tau):
                break
            cls = tokens[:, 0]
        ent = entropy(logits)
        score = ent if score_fn is entropy else score_fn(logits)
        return StreamResult(int(logits.argmax()), e, float(ent), float(score), logits[0])


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """The same antialiased bilinear resize as `ravit.models.ravit.resize`, minus its checks."""
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
