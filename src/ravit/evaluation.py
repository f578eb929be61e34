"""Every exit's logits over a data set, computed once and cached in the run."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ravit.checkpoint import atomic_write
from ravit.models import RAViT


@dataclass
class ExitLogits:
    """Cached evaluation: logits[i] is (N, classes) of exit i; labels (N,)."""

    logits: list[torch.Tensor]
    labels: torch.Tensor

    def accuracy(self) -> list[float]:
        return [float((lg.argmax(-1) == self.labels).float().mean()) for lg in self.logits]

    def loss(self) -> list[float]:
        return [float(F.cross_entropy(lg.float(), self.labels)) for lg in self.logits]


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
) -> ExitLogits:
    """Run the full path (every exit) over `data` in order; logits land on the CPU."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    outs: list[list[torch.Tensor]] = [[] for _ in range(model.num_exits)]
    order = torch.arange(len(data))
    chunks = order.split(batch_size)
    for idx in tqdm(chunks, desc=desc, disable=not progress, leave=False, unit="batch"):
        images, _ = data.get_batch(idx)
        x = transform(images.to(device, non_blocking=True))
        for i, lg in enumerate(model(x).logits):
            outs[i].append(lg.float().cpu())
    model.train(was_training)
    logits = [torch.cat(o) if o else torch.empty(0, model.cfg.num_classes) for o in outs]
    return ExitLogits(logits, data.labels.clone())


def cache_key(**parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_cached(path: Path, key: str) -> ExitLogits | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a stale or broken cache is recomputed, never trusted
        return None
    if not isinstance(state, dict) or state.get("key") != key:
        return None
    return ExitLogits(list(state["logits"]), state["labels"])


def save_cached(path: Path, key: str, result: ExitLogits) -> None:
    state = {"key": key, "logits": result.logits, "labels": result.labels}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


@dataclass
class RunEvaluation:
    """A run's exit logits on one split, with what is needed to read them."""

    run: Path
    split: str
    logits: ExitLogits
    model: RAViT
    classes: list[str]
    cached: bool


def load_run_model(run: str | Path, device: torch.device | str = "cpu") -> tuple[RAViT, dict]:
    """The trained model of a run folder and its checkpoint state (without weights)."""
    from ravit.checkpoint import load_checkpoint, model_from_state
    from ravit.config import ModelConfig
    from ravit.training import run as runfs

    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} does not exist")
    path = run / runfs.CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"{run} has no {runfs.CHECKPOINT}: train it first (ravit train)")
    state = load_checkpoint(path)
    model = model_from_state(state, str(path)).to(device).eval()
    _, expected = runfs.read_config(run)
    expected = ModelConfig.from_dict(expected)
    if model.cfg != expected:
        raise ValueError(
            f"{path} holds a model {model.cfg.layers!r} that is not the one "
            f"{run / runfs.CONFIG} describes ({expected.layers!r}): a checkpoint of another model"
        )
    if "data" not in state:
        raise ValueError(f"{path} has no data section: not written by ravit train")
    state.pop("model")
    return model, state


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
    from ravit.training import run as runfs

    if split == "test":
        return load_data(spec, "test")
    if split != "val":
        raise ValueError(f"unknown split {split!r}; expected 'val' or 'test'")
    full = load_data(spec, "train")
    indices = runfs.read_json(run / runfs.SPLIT)["val_indices"]
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
) -> RunEvaluation:
    """Every exit's logits of a run on a split, computed once and cached in RUN/cache/."""
    run = Path(run)
    model, state = load_run_model(run, device)
    info = state["data"]
    spec = data_spec or info["spec"]
    key = cache_key(spec=spec, split=split, epoch=state["epoch"], cfg=model.cfg.to_dict())
    path = run / "cache" / f"logits-{split}-{key}.pt"
    cached = load_cached(path, key)
    if cached is not None:
        return RunEvaluation(run, split, cached, model, info["classes"], True)
    data = split_data(run, spec, split)
    if len(data.classes) != model.cfg.num_classes:
        raise ValueError(
            f"{spec} has {len(data.classes)} classes but {run}'s model predicts "
            f"{model.cfg.num_classes}: evaluate it on the data it was trained for"
        )
    res = collect_logits(model, data, eval_transform(model, info), batch_size=batch_size,
                         device=device, progress=progress, desc=f"eval {split}")  # fmt: skip
    save_cached(path, key, res)
    return RunEvaluation(run, split, res, model, info["classes"], False)
