"""Classify image files with real early exit: one answer, or one error, per file.

`predict` reads files in batches (decoded on a thread pool, the next batch
while the model runs on this one), normalises them as evaluation does
(`ravit.evaluation.eval_transform`), and runs `RAViT.early_exit`, which
compacts the batch after each exit. A file that cannot be read becomes a
`PredictError` in its place; the other files of its batch still get answers.
The records and the file loop are `ravit.runtime.records`, shared with the
exported runtime (`ravit.runtime.exported`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ravit.cost import model_cost
from ravit.devices import Precision
from ravit.evaluation import eval_transform
from ravit.exits.rule import POLICIES, normalize_thresholds
from ravit.models import RAViT
from ravit.runtime.images import collect_image_paths
from ravit.runtime.records import PredictError, Prediction, answer_files, check_batch_size

__all__ = ["PredictError", "Prediction", "predict"]


def predict(
    model: RAViT,
    data_info: dict,
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    thresholds: float | Sequence[float] | None = None,
    policy: str = "entropy",
    batch_size: int = 64,
    device: torch.device | str | None = None,
    amp: str = "auto",
) -> Iterator[Prediction | PredictError]:
    """Per file of `collect_image_paths(paths)`, in that order: a Prediction or a PredictError.

    data_info needs "classes" (one name per model class), "mean" and "std"
    (the checkpoint's data section has them). device None keeps the model
    where it is; a device moves the model there (as `model.to(device)`).
    The model is put in eval mode while the iterator runs. `amp` as
    train.amp: "auto" runs the forward in bf16 where that is faster for
    batches of `batch_size` (`ravit.devices.resolve_precision`), "off" in fp32.
    Bad arguments raise here, before any file is read.
    """
    classes = _check_args(model, data_info, policy, batch_size)
    taus = normalize_thresholds(thresholds, model.num_exits)
    if device is not None:
        model.to(device)
    files = collect_image_paths(paths)
    precision = model.cfg.precision(amp, model.cls_token.device, min(batch_size, len(files) or 1))
    return _predict(model, data_info, classes, files, taus, policy, batch_size, precision)


def _check_args(model: RAViT, data_info: dict, policy: str, batch_size: int) -> list[str]:
    if not isinstance(model, RAViT):
        raise TypeError(f"predict expects a RAViT model, got {type(model).__name__}")
    missing = [k for k in ("classes", "mean", "std") if k not in data_info]
    if missing:
        raise ValueError(f"data_info lacks {missing}: expected classes, mean and std")
    classes = [str(c) for c in data_info["classes"]]
    if len(classes) != model.cfg.num_classes:
        raise ValueError(
            f"data_info names {len(classes)} classes but the model predicts "
            f"{model.cfg.num_classes}: expected one name per class"
        )
    if policy not in POLICIES:
        raise ValueError(f"unknown exit policy {policy!r}; expected one of {list(POLICIES)}")
    check_batch_size(batch_size)
    return classes


def _predict(
    model: RAViT,
    data_info: dict,
    classes: list[str],
    files: list[Path],
    taus: tuple[float, ...],
    policy: str,
    batch_size: int,
    precision: Precision,
) -> Iterator[Prediction | PredictError]:
    cfg = model.cfg
    transform = eval_transform(model, data_info)
    device = model.cls_token.device

    def classify(images: np.ndarray) -> list[tuple[int, float, int, float]]:
        x = transform(torch.from_numpy(images).to(device, non_blocking=True))
        with precision.autocast(device):
            out = model.early_exit(x, taus, policy)
        prob = torch.softmax(out.logits.float(), dim=-1).gather(1, out.prediction[:, None])[:, 0]
        fields = (out.prediction, prob, out.exit_index, out.entropy)
        return list(zip(*(t.tolist() for t in fields)))

    was_training = model.training
    model.eval()
    try:
        shape = (cfg.in_chans, cfg.image_size)
        flops = model_cost(cfg).cumulative_flops
        yield from answer_files(files, shape, classify, classes, flops, batch_size)
    finally:
        model.train(was_training)
