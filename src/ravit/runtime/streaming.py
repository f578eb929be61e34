"""Batch-1 early exit with little overhead: one image in, one answer out.

`RAViT.early_exit` is the batched procedure (it compacts the batch after each
exit). For one image at a time, a stream from a camera or a request queue,
its bookkeeping (masks, index tensors, scatters) costs more than the exit
decision itself, so `StreamingRunner` runs a leaner loop over the model's
own exits (`RAViT.forward_exit`): the score is turned into a Python float
and decided by the same rule (`ravit.exits.rule.leaves`), and nothing is
indexed by a mask. It gives the same
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

from ravit.exits.names import POLICIES
from ravit.exits.policy import EXIT_SCORES, entropy
from ravit.exits.rule import leaves, normalize_thresholds
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
    `amp` as train.amp: "auto" runs in bf16 only where one image at a time is
    faster so (wide models on a CPU with bf16 instructions, `ravit.devices`),
    "off" in fp32; `precision` says what was chosen and why.
    """

    def __init__(
        self,
        model: RAViT,
        thresholds: float | Sequence[float] | None = None,
        policy: str = "entropy",
        amp: str = "auto",
    ):
        if not isinstance(model, RAViT):
            raise TypeError(f"StreamingRunner expects a RAViT model, got {type(model).__name__}")
        self.model = model
        cfg = model.cfg
        self.precision = cfg.precision(amp, model.cls_token.device, 1)
        self._shape = (cfg.in_chans, cfg.image_size, cfg.image_size)
        self.thresholds = thresholds
        self.policy = policy

    @property
    def thresholds(self) -> tuple[float, ...]:
        """One threshold per early exit (the last exit always answers)."""
        return self._taus

    @thresholds.setter
    def thresholds(self, value: float | Sequence[float] | None) -> None:
        self._taus = normalize_thresholds(value, self.model.num_exits)

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
        with torch.inference_mode(), self.precision.autocast(self.model.cls_token.device):
            return self._run(image)

    def _run(self, image: torch.Tensor) -> StreamResult:
        model, taus, score_fn = self.model, self._taus, self._score
        cls = model.initial_cls(1)  # (1, D): the learned CLS token, batch 1
        x = image.to(cls.device).unsqueeze(0)  # (1, C, S, S)
        last = model.num_exits - 1
        for e in range(model.num_exits):
            logits, cls = model.forward_exit(e, x, cls)  # (1, classes), (1, D)
            if e == last:
                break
            tau = taus[e]
            # tau 0 never exits and tau inf always does: no score needed to decide.
            if tau > 0.0 and (tau == float("inf") or leaves(float(score_fn(logits)), tau)):
                break
        ent = entropy(logits)
        score = ent if score_fn is entropy else score_fn(logits)
        return StreamResult(int(logits.argmax()), e, float(ent), float(score), logits[0].float())
