"""The training loop: AdamW, warm-up + cosine, weighted exit losses, exact resume.

Exact resume: everything random in an epoch (the shuffle, the augmentation,
dropout) is seeded from (seed, epoch), and the learning rate is a pure
function of the global step. A checkpoint at the end of every epoch holds the
model, the optimiser and the epoch count, so a run resumed from it ends with
the same weights as an uninterrupted run (same device, same seed).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ravit.checkpoint import load_checkpoint, model_from_state, save_checkpoint
from ravit.config import ModelConfig
from ravit.data import load_data, make_transform, train_val_split
from ravit.evaluation import collect_logits
from ravit.models import RAViT
from ravit.training import run as runfs
from ravit.training.config import RunConfig, build_model_config, resolve_config
from ravit.training.loss import exit_weights, multi_exit_loss
from ravit.training.schedule import lr_at

log = logging.getLogger(__name__)

# A hook for an extra training loss (distillation, ravit.training.distill):
# (every exit's logits, the augmented input batch, the labels) -> one term per
# exit, added to that exit's cross-entropy before the exit weights apply.
ExtraLoss = Callable[[list[torch.Tensor], torch.Tensor, torch.Tensor], list[torch.Tensor]]


@dataclass
class Prepared:
    """A run's data, model and optimiser, ready to train."""

    cfg: RunConfig
    train_data: Any
    val_data: Any | None
    data_info: dict
    model: RAViT
    optimizer: torch.optim.Optimizer
    device: torch.device
    val_indices: list[int]


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
    return device


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision where the device supports it: bf16 (or fp16) on CUDA, off on CPU."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return (seed * 1_000_003 + epoch * 101 + stream) % (2**63)


def data_info(data, spec: str) -> dict:
    return {
        "spec": spec,
        "name": data.name,
        "classes": list(data.classes),
        "channels": data.channels,
        "image_size": data.image_size,
        "mean": list(data.mean),
        "std": list(data.std),
        "augment": data.augment,
    }


def prepare(cfg: RunConfig, val_indices: list[int] | None = None) -> Prepared:
    device = select_device(cfg.train.device)
    full = load_data(cfg.data.spec, "train")
    if val_indices is None:
        val = cfg.data.val_size  # >= 1: a count of images; below 1: a fraction
        val = int(val) if val >= 1 else float(val)
        train_idx, val_idx = train_val_split(len(full), val, cfg.train.seed)
    else:
        val_idx = torch.tensor(sorted(val_indices), dtype=torch.long)
        mask = torch.ones(len(full), dtype=torch.bool)
        mask[val_idx] = False
        train_idx = mask.nonzero().flatten()
    train_idx = keep_train_subset(train_idx, cfg.data.train_size, cfg.train.seed)
    train_data = full.subset(train_idx)
    val_data = full.subset(val_idx) if len(val_idx) else None
    model_cfg = build_model_config(cfg.model, num_classes=len(full.classes), in_chans=full.channels)
    torch.manual_seed(cfg.train.seed)
    model = RAViT(model_cfg).to(device)
    optimizer = make_optimizer(model, cfg)
    info = data_info(full, cfg.data.spec)
    return Prepared(cfg, train_data, val_data, info, model, optimizer, device, val_idx.tolist())


def keep_train_subset(train_idx: torch.Tensor, size: float | None, seed: int) -> torch.Tensor:
    """A seeded random subset of the training indices: `size` images (>= 1) or a fraction."""
    if size is None:
        return train_idx
    n = len(train_idx)
    count = int(size) if size >= 1 else round(size * n)
    if not 1 <= count <= n:
        raise ValueError(
            f"data.train_size={size} asks for {count} training images; {n} are left after val"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + 1))
    return train_idx[perm[:count]].sort().values


def make_optimizer(model: RAViT, cfg: RunConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms, embeddings and the CLS token."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "pos_embed" in name or "cls_token" in name else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=tuple(cfg.train.betas))


def transforms_for(p: Prepared) -> tuple[Callable, Callable]:
    mc, info = p.model.cfg, p.data_info
    common = dict(
        image_size=mc.image_size, channels=mc.in_chans, mean=info["mean"], std=info["std"]
    )
    augment = p.cfg.data.augment or info["augment"]
    return (
        make_transform(True, augment=augment, **common),
        make_transform(False, augment="none", **common),
    )


def train_epoch(
    p: Prepared,
    epoch: int,
    transform: Callable,
    *,
    progress: bool = False,
    extra_loss: ExtraLoss | None = None,
) -> dict[str, Any]:
    """One pass over the training data; returns the epoch's training metrics."""
    from tqdm import tqdm

    t = p.cfg.train
    model, opt = p.model, p.optimizer
    n = len(p.train_data)
    steps = math.ceil(n / t.batch_size)
    total_steps, warmup = steps * t.epochs, round(steps * t.warmup_epochs)
    weights = exit_weights(t.exit_weights, model.num_exits)
    amp = autocast_dtype(t.amp, p.device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(t.seed, epoch, 0)))
    aug_gen = torch.Generator().manual_seed(epoch_seed(t.seed, epoch, 1))
    torch.manual_seed(epoch_seed(t.seed, epoch, 2))  # dropout
    model.train()
    sums = torch.zeros(2 * model.num_exits + 1, dtype=torch.float64)
    start, seen = time.perf_counter(), 0
    bar = tqdm(order.split(t.batch_size), desc=f"epoch {epoch + 1}/{t.epochs}",
               disable=not progress, leave=False, unit="batch")  # fmt: skip
    for i, idx in enumerate(bar):
        lr = lr_at(epoch * steps + i, total_steps=total_steps, warmup_steps=warmup,
                   lr=t.lr, min_lr=t.min_lr)  # fmt: skip
        for group in opt.param_groups:
            group["lr"] = lr
        images, labels = p.train_data.get_batch(idx)
        x = transform(images.to(p.device, non_blocking=True), aug_gen)
        y = labels.to(p.device, non_blocking=True)
        ctx = torch.autocast(p.device.type, dtype=amp) if amp else contextlib.nullcontext()
        with ctx:
            logits = model(x).logits
        loss, per_exit = multi_exit_loss(logits, y, weights, t.label_smoothing)
        if extra_loss is not None:
            extra = extra_loss(logits, x, y)
            loss = loss + sum(w * term for w, term in zip(weights, extra))
            per_exit = [a + b for a, b in zip(per_exit, extra)]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"epoch {epoch + 1}, step {i}: the loss is {loss.item()}; lower train.lr "
                f"(now {t.lr}) or enable train.grad_clip"
            )
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if t.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        scaler.step(opt)
        scaler.update()
        b = len(idx)
        seen += b
        with torch.no_grad():
            correct = [(lg.argmax(-1) == y).sum().item() for lg in logits]
        sums += torch.tensor([loss.item() * b] + [lo.item() * b for lo in per_exit] + correct,
                             dtype=torch.float64)  # fmt: skip
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
    elapsed = time.perf_counter() - start
    e = model.num_exits
    return {
        "train_loss": sums[0].item() / seen,
        "train_loss_exits": (sums[1 : e + 1] / seen).tolist(),
        "train_acc_exits": (sums[e + 1 :] / seen).tolist(),
        "lr": lr,
        "images_per_s": seen / elapsed,
        "epoch_seconds": elapsed,
    }


def validate(p: Prepared, transform: Callable, *, progress: bool = False) -> dict[str, Any]:
    if p.val_data is None:
        return {}
    res = collect_logits(p.model, p.val_data, transform, batch_size=p.cfg.data.eval_batch_size,
                         device=p.device, progress=progress, desc="val")  # fmt: skip
    return {"val_loss_exits": res.loss(), "val_acc_exits": res.accuracy()}


def checkpoint_state(p: Prepared, epoch: int) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "optimizer": p.optimizer.state_dict(),
        "run_config": p.cfg.to_dict(),
        "data": p.data_info,
    }


def _start_new(run: Path, cfg: RunConfig) -> Prepared:
    if (run / runfs.CONFIG).exists() or (run / runfs.CHECKPOINT).exists():
        raise ValueError(
            f"{run} already holds a run: resume it with --resume {run}, or choose another --out"
        )
    p = prepare(cfg)
    run.mkdir(parents=True, exist_ok=True)
    runfs.write_config(run, cfg.to_dict(), p.model.cfg.to_dict())
    runfs.write_json(run / runfs.ENV, runfs.environment(str(p.device)))
    runfs.write_json(
        run / runfs.SPLIT,
        {"seed": cfg.train.seed, "val_size": len(p.val_indices), "val_indices": p.val_indices},
    )
    return p


def _resume(run: Path, overrides: list[str]) -> tuple[Prepared, int]:
    sections, saved_model = runfs.read_config(run)
    cfg = resolve_config(overrides=overrides, base=sections)
    split = runfs.read_json(run / runfs.SPLIT)
    p = prepare(cfg, val_indices=split["val_indices"])
    if p.model.cfg != ModelConfig.from_dict(saved_model):
        raise ValueError(f"{run}: the overrides change the model; only train settings may change")
    ckpt = run / runfs.CHECKPOINT
    if not ckpt.exists():  # killed before the first epoch ended: start over, same seed
        return p, 0
    state = load_checkpoint(ckpt)
    model = model_from_state(state, str(ckpt))
    if model.cfg != p.model.cfg:
        raise ValueError(
            f"{ckpt} holds a model {model.cfg.layers!r} ({model.cfg.embed_dim} wide) that is "
            f"not the one {run / runfs.CONFIG} describes ({p.model.cfg.layers!r})"
        )
    p.model.load_state_dict(model.state_dict())
    p.optimizer.load_state_dict(state["optimizer"])
    runfs.truncate_metrics(run, state["epoch"])
    return p, int(state["epoch"])


def fit(
    run_dir: str | Path,
    cfg: RunConfig | None = None,
    *,
    resume: bool = False,
    overrides: list[str] | None = None,
    progress: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
    extra_loss: ExtraLoss | None = None,
) -> list[dict]:
    """Train a new run into `run_dir`, or resume the run there; returns all epoch records.

    `extra_loss` adds a term per exit to the training loss (see ExtraLoss).
    """
    run = Path(run_dir)
    if resume:
        p, start = _resume(run, list(overrides or []))
    else:
        p, start = _start_new(run, cfg or resolve_config(overrides=overrides or [])), 0
    train_tf, eval_tf = transforms_for(p)
    log.info("training %s on %s from epoch %d", p.model.cfg.layers, p.device, start + 1)
    for epoch in range(start, p.cfg.train.epochs):
        metrics = train_epoch(p, epoch, train_tf, progress=progress, extra_loss=extra_loss)
        record = {"epoch": epoch + 1, **metrics}
        record.update(validate(p, eval_tf, progress=progress))
        # Metrics first: a kill between the two leaves a record that resume drops.
        runfs.append_metrics(run, record)
        save_checkpoint(run / runfs.CHECKPOINT, p.model, **checkpoint_state(p, epoch + 1))
        if on_epoch:
            on_epoch(record)
    return runfs.read_metrics(run)
