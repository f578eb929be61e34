"""Classify image files with real early exit: one answer, or one error, per file.

`predict` reads files in batches (decoded on a thread pool, the next batch
while the model runs on this one), normalises them as evaluation does
(`ravit.evaluation.eval_transform`), and runs `RAViT.early_exit`, which
compacts the batch after each exit. A file that cannot be read becomes a
`PredictError` in its place; the other files of its batch still get answers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from ravit.cost import model_cost
from ravit.data.base import describe_error
from ravit.evaluation import eval_transform
from ravit.exits import POLICIES, normalize_thresholds
from ravit.models import RAViT
from ravit.runtime.images import collect_image_paths, load_image


@dataclass(frozen=True)
class Prediction:
    """The answer for one file."""

    path: Path
    class_index: int
    class_name: str
    probability: float  # softmax probability of the predicted class at the exit taken
    exit: int  # the exit that answered, 1-based (1 .. number of exits)
    entropy: float  # softmax entropy (nats) at that exit
    flops: int  # the analytic FLOPs spent on this image: cumulative cost up to that exit
    ok: ClassVar[bool] = True

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "class_index": self.class_index,
            "class_name": self.class_name,
            "probability": self.probability,
            "exit": self.exit,
            "entropy": self.entropy,
            "flops": self.flops,
        }


@dataclass(frozen=True)
class PredictError:
    """A file that got no answer, with a one-line message that names it."""

    path: Path
    message: str
    ok: ClassVar[bool] = False

    def to_dict(self) -> dict:
        return {"path": str(self.path), "error": self.message}


def predict(
    model: RAViT,
    data_info: dict,
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    thresholds: float | Sequence[float] | None = None,
    policy: str = "entropy",
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> Iterator[Prediction | PredictError]:
    """Per file of `collect_image_paths(paths)`, in that order: a Prediction or a PredictError.

    data_info needs "classes" (one name per model class), "mean" and "std"
    (the checkpoint's data section has them). device None keeps the model
    where it is; a device moves the model there (as `model.to(device)`).
    The model is put in eval mode while the iterator runs. Bad arguments
    raise here, before any file is read.
    """
    classes = _check_args(model, data_info, policy, batch_size)
    taus = normalize_thresholds(thresholds, model.num_exits)
    if device is not None:
        model.to(device)
    files = collect_image_paths(paths)
    return _predict(model, data_info, classes, files, taus, policy, batch_size)


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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return classes


def _predict(
    model: RAViT,
    data_info: dict,
    classes: list[str],
    files: list[Path],
    taus: tuple[float, ...],
    policy: str,
    batch_size: int,
) -> Iterator[Prediction | PredictError]:
    cfg = model.cfg
    transform = eval_transform(model, data_info)
    flops = model_cost(cfg).cumulative_flops
    device = model.cls_token.device
    chunks = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    was_training = model.training
    model.eval()
    workers = min(8, os.cpu_count() or 1)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="ravit-predict") as pool:

            def submit(chunk: list[Path]) -> list[Future]:
                return [pool.submit(_read, f, cfg.in_chans, cfg.image_size) for f in chunk]

            pending = submit(chunks[0]) if chunks else []
            for k, chunk in enumerate(chunks):
                loaded = [f.result() for f in pending]
                pending = submit(chunks[k + 1]) if k + 1 < len(chunks) else []
                good = [i for i, item in enumerate(loaded) if isinstance(item, torch.Tensor)]
                answers = _classify(model, transform, loaded, good, taus, policy, device)
                for i, path in enumerate(chunk):
                    if i in answers:
                        c, p, e, h = answers[i]
                        yield Prediction(path, c, classes[c], p, e + 1, h, flops[e])
                    else:
                        yield PredictError(path, loaded[i])
    finally:
        model.train(was_training)


def _read(path: Path, channels: int, size: int) -> torch.Tensor | str:
    """The image as uint8 (C, S, S), or a one-line message naming the file."""
    try:
        return load_image(path, channels, size)
    except (OSError, ValueError) as err:
        text = str(err).strip().splitlines()
        message = text[0] if text else describe_error(err)
        return message if str(path) in message else f"{path}: {message}"


def _classify(model, transform, loaded, good, taus, policy, device) -> dict[int, tuple]:
    """{position: (class, probability, exit, entropy)} for the decoded images of a batch."""
    if not good:
        return {}
    x = transform(torch.stack([loaded[i] for i in good]).to(device, non_blocking=True))
    out = model.early_exit(x, taus, policy)
    prob = torch.softmax(out.logits.float(), dim=-1).gather(1, out.prediction[:, None])[:, 0]
    rows = zip(
        out.prediction.tolist(), prob.tolist(), out.exit_index.tolist(), out.entropy.tolist()
    )
    return dict(zip(good, rows))
