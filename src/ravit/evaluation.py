"""Every exit's logits over a data set, computed once and cached in the run.

`collect_logits` runs a model's full path over a data set; `evaluate_run` does
it for a run folder's split (test, or the run's own validation indices),
through the run's logit cache (`ravit.runs.cache`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ravit.devices import Precision
from ravit.models import RAViT
from ravit.runs import folder
from ravit.runs.cache import ExitLogits, cache_key, cache_path, load_cached, save_cached


@torch.inference_mode()
def collect_logits(
    model: RAViT,
    data,
    transform: Callable,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "eval",
    precision: Precision | None = None,
) -> ExitLogits:
    """Run the full path (every exit) over `data` in order; logits land on the CPU, in fp32.

    `precision` is the forward's autocast (None: fp32; see `ravit.devices`).
    """
    from tqdm import tqdm

    autocast = precision.autocast(device) if precision else contextlib.nullcontext()

    was_training = model.training
    model.eval()
    outs: list[list[torch.Tensor]] = [[] for _ in range(model.num_exits)]
    order = torch.arange(len(data))
    chunks = order.split(batch_size)
    for idx in tqdm(chunks, desc=desc, disable=not progress, leave=False, unit="batch"):
        images, _ = data.get_batch(idx)
        x = transform(images.to(device, non_blocking=True))
        with autocast:
            out = model(x)
        for i, lg in enumerate(out.logits):
            outs[i].append(lg.float().cpu())
    model.train(was_training)
    logits = [torch.cat(o) if o else torch.empty(0, model.cfg.num_classes) for o in outs]
    return ExitLogits(logits, data.labels.clone())


@dataclass
class RunEvaluation:
    """A run's exit logits on one split, with what is needed to read them."""

    run: Path
    split: str
    logits: ExitLogits
    model: RAViT
    classes: list[str]
    cached: bool
    precision: str = "fp32"  # the forward's autocast dtype (ravit.devices)


def eval_transform(model: RAViT, info: dict) -> Callable:
    from ravit.data import make_transform

    cfg = model.cfg
    return make_transform(
        False,
        augment="none",
        image_size=cfg.image_size,
        channels=cfg.in_chans,
        mean=info["mean"],
        std=info["std"],
    )


def split_data(run: Path, spec: str, split: str):
    """The data of a split: "test", or "val" (the run's own carved indices)."""
    from ravit.data import load_data

    if split == "test":
        return load_data(spec, "test")
    if split != "val":
        raise ValueError(f"unknown split {split!r}; expected 'val' or 'test'")
    full = load_data(spec, "train")
    indices = folder.read_split(run)
    if not indices:
        raise ValueError(f"{run} was trained with data.val_size=0: it has no validation split")
    if max(indices) >= len(full):
        raise ValueError(f"{spec} has {len(full)} training images; {run}'s split needs more")
    return full.subset(torch.tensor(indices, dtype=torch.long))


def evaluate_run(
    run: str | Path,
    *,
    data_spec: str | None = None,
    split: str = "test",
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    progress: bool = False,
    amp: str = "auto",
) -> RunEvaluation:
    """Every exit's logits of a run on a split, computed once and cached in RUN/cache/.

    `amp` as train.amp: "auto" runs the forward in bf16 where that is faster
    (`ravit.devices.resolve_precision`), "off" in fp32. The cache keeps the
    logits of each precision apart.
    """
    run = Path(run)
    model, state = folder.load_run_model(run, device)
    info = state["data"]
    spec = data_spec or info["spec"]
    precision = model.cfg.precision(amp, device, batch_size)
    at = {"epoch": state["epoch"], **({"step": state["step"]} if state.get("step") else {})}
    if precision.dtype is not None:  # fp32 keeps the key it had before precisions were chosen
        at["precision"] = precision.name
    key = cache_key(spec=spec, split=split, **at, cfg=model.cfg.to_dict())
    path = cache_path(run, split, key)
    cached = load_cached(path, key)
    if cached is not None:
        return RunEvaluation(run, split, cached, model, info["classes"], True, precision.name)
    data = split_data(run, spec, split)
    if len(data.classes) != model.cfg.num_classes:
        raise ValueError(
            f"{spec} has {len(data.classes)} classes but {run}'s model predicts "
            f"{model.cfg.num_classes}: evaluate it on the data it was trained for"
        )
    res = collect_logits(model, data, eval_transform(model, info), batch_size=batch_size,
                         device=device, progress=progress, desc=f"eval {split}",
                         precision=precision)  # fmt: skip
    save_cached(path, key, res)
    return RunEvaluation(run, split, res, model, info["classes"], False, precision.name)
