"""The training loop: AdamW, warm-up + cosine, weighted exit losses, exact resume.

Exact resume: everything random in an epoch (the shuffle, the augmentation,
dropout) is seeded from (seed, epoch, step), and the learning rate is a pure
function of the global step. A checkpoint at the end of every epoch holds the
model, the optimiser and the epoch count, so a run resumed from it ends with
the same weights as an uninterrupted run (same device, same seed).

SIGINT / SIGTERM (`ravit.training.stopping`) stop the run at the next step
boundary: the checkpoint then also holds the steps done in the current epoch
("step"), that epoch's running sums and the AMP grad scaler, and a resume
continues the epoch from that step, again with the same weights as an
uninterrupted run. A run folder is trained by one process at a time
(`ravit.runs.lock`).

The same loop runs alone or in every process of a torchrun launch (data
parallel, DDP); `ravit.training.distributed` says how a global batch is
shared out. Only rank 0 writes the run folder and logs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ravit.config import ModelConfig, RunConfig, build_model_config, resolve_config
from ravit.data import data_info, load_data, make_transform, split_indices
from ravit.data.base import BadImageError
from ravit.data.loader import batch_loader, default_workers
from ravit.devices import Precision, select_device
from ravit.errors import Interrupted, describe_error
from ravit.evaluation import collect_logits
from ravit.models import RAViT
from ravit.runs import folder as runfs
from ravit.runs.checkpoint import load_checkpoint, model_from_state, save_checkpoint
from ravit.runs.lock import hold_run
from ravit.training import distributed
from ravit.training.distributed import (
    AUGMENT_STREAM,
    DROPOUT_STREAM,
    LOADER_STREAM,
    DistContext,
    GlobalBatchSampler,
    step_seed,
)
from ravit.training.loss import exit_weights, multi_exit_loss
from ravit.training.schedule import lr_at
from ravit.training.stopping import StopRequest

log = logging.getLogger(__name__)

# A hook for an extra training loss (distillation, ravit.training.distill):
# (every exit's logits, the augmented input batch, the labels) -> one term per
# exit, added to that exit's cross-entropy before the exit weights apply.
ExtraLoss = Callable[[list[torch.Tensor], torch.Tensor, torch.Tensor], list[torch.Tensor]]


@dataclass
class TrainPlan:
    """How a prepared run is fed and stepped, built once (see `train_plan`)."""

    sampler: GlobalBatchSampler  # this process's micro-batches, epoch by epoch
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]]  # their uint8 images and labels
    engine: torch.nn.Module  # the model as the step calls it: compiled and/or in DDP
    workers: int  # data-loading worker processes (0: in this process)


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
    dist: DistContext = field(default_factory=DistContext)  # this process in its group
    plan: TrainPlan | None = None  # built on the first epoch
    dropped: list[str] = field(default_factory=list)  # files left out at indexing (skip_bad)
    precision: Precision | None = None  # the training step's autocast (train.amp, resolved)

    def eval_precision(self) -> Precision:
        """The autocast of validation: train.amp resolved for the evaluation batch."""
        return self.model.cfg.precision(self.cfg.train.amp, self.device,
                                        self.cfg.data.eval_batch_size)  # fmt: skip


@dataclass
class EpochProgress:
    """How far an epoch got when a stop was requested (saved in a mid-epoch checkpoint)."""

    step: int  # global batches done in the epoch
    sums: torch.Tensor  # the epoch's running sums so far (see train_epoch)
    seconds: float  # training time spent on those steps
    scaler: dict  # the AMP grad scaler's state

    def to_state(self) -> dict[str, Any]:
        partial = {"sums": self.sums.cpu(), "seconds": self.seconds, "scaler": self.scaler}
        return {"step": self.step, "partial": partial}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpochProgress | None:
        if not state.get("step"):
            return None
        partial = state["partial"]
        return cls(int(state["step"]), partial["sums"], float(partial["seconds"]),
                   dict(partial["scaler"]))  # fmt: skip


class _Stopped(Exception):
    """Raised inside train_epoch at a step boundary: a stop was requested, or (`error`)
    an image failed to decode and the data set does not skip bad files."""

    def __init__(self, progress: EpochProgress, error: BadImageError | None = None):
        self.progress, self.error = progress, error


def prepare(
    cfg: RunConfig,
    val_indices: list[int] | None = None,
    *,
    dist: DistContext | None = None,
    initialise: bool = True,
) -> Prepared:
    """The run's data, model and optimiser. initialise=False skips train.init's weights (a
    resumed run loads its own checkpoint instead)."""
    dist = dist or DistContext()
    if dist.is_distributed:
        device = distributed.process_device(cfg.train.device, dist)
    else:
        device = select_device(cfg.train.device)
    full = load_data(cfg.data.spec, "train")
    if val_indices is None:
        train_idx, val_idx = split_indices(len(full), cfg.data.val_size, cfg.train.seed)
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
    model = RAViT(model_cfg)
    if initialise and cfg.train.init is not None:  # another run's weights (ravit convert, ...)
        init_weights(model, cfg.train.init)
    model = model.to(device)
    optimizer = make_optimizer(model, cfg)
    info = data_info(full, cfg.data.spec)
    micro = max(1, cfg.train.batch_size // (cfg.train.grad_accum * dist.world_size))
    return Prepared(
        cfg, train_data, val_data, info, model, optimizer, device, val_idx.tolist(), dist,
        dropped=list(getattr(full, "dropped", [])),
        precision=model_cfg.precision(cfg.train.amp, device, micro),
    )  # fmt: skip


def init_weights(model: RAViT, run: str) -> None:
    """Start `model` from the weights of the run folder `run` (the same model config)."""
    source, _ = runfs.load_run_model(run)
    if source.cfg != model.cfg:
        raise ValueError(
            f"train.init={run}: its model is {source.cfg.layers!r} ({source.cfg.embed_dim} wide), "
            f"not the {model.cfg.layers!r} ({model.cfg.embed_dim} wide) this run builds"
        )
    model.load_state_dict(source.state_dict())


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
    return torch.optim.AdamW(groups, lr=cfg.train.peak_lr(), betas=tuple(cfg.train.betas))


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


def train_plan(p: Prepared) -> TrainPlan:
    """The sampler, loader and stepped module of `p`, built on first use and then kept.

    Kept so that the loader's worker processes live from epoch to epoch.
    """
    if p.plan is None:
        t, d = p.cfg.train, p.cfg.data
        sampler = GlobalBatchSampler(
            len(p.train_data), t.batch_size, seed=t.seed, world_size=p.dist.world_size,
            rank=p.dist.rank, grad_accum=t.grad_accum,
        )  # fmt: skip
        workers = d.workers
        if workers is None:
            workers = default_workers(p.train_data, p.dist.local_world_size)
        loader = batch_loader(
            p.train_data, sampler, workers=workers, pin_memory=p.device.type == "cuda",
            prefetch=d.prefetch, seed=step_seed(t.seed, 0, 0, p.dist.rank, LOADER_STREAM),
        )  # fmt: skip
        engine = distributed.wrap_model(p.model, p.dist, p.device, compile=t.compile)
        p.plan = TrainPlan(sampler, loader, engine, workers)
    return p.plan


def train_epoch(
    p: Prepared,
    epoch: int,
    transform: Callable,
    *,
    progress: bool = False,
    extra_loss: ExtraLoss | None = None,
    resume_from: EpochProgress | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """One pass over the training data; returns the epoch's metrics over all processes.

    `resume_from` continues an epoch a stop interrupted; `stop` is asked before
    every step, and when it says so the epoch raises `_Stopped` with its progress.
    """
    from tqdm import tqdm

    t, plan = p.cfg.train, train_plan(p)
    sampler = plan.sampler
    first = resume_from.step if resume_from else 0
    sampler.set_epoch(epoch, first)
    steps, opt = sampler.steps_per_epoch, p.optimizer
    total_steps, warmup = steps * t.epochs, round(steps * t.warmup_epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=p.precision.dtype == torch.float16)
    p.model.train()
    # images seen, total loss, each exit's loss, each exit's correct answers (sums)
    sums = torch.zeros(2 * p.model.num_exits + 2, dtype=_sum_dtype(p.device), device=p.device)
    spent = 0.0
    if resume_from is not None:
        sums.copy_(resume_from.sums.to(sums.dtype))
        if resume_from.scaler:
            scaler.load_state_dict(resume_from.scaler)
        spent = resume_from.seconds
    batches = iter(plan.loader)
    bar = tqdm(total=sampler.steps_run, initial=first, desc=f"epoch {epoch + 1}/{t.epochs}",
               disable=not (progress and p.dist.is_main), leave=False, unit="batch")  # fmt: skip
    start = time.perf_counter()
    for step in range(first, sampler.steps_run):
        if stop is not None and stop():
            bar.close()
            seconds = spent + time.perf_counter() - start
            scaled = scaler.state_dict() if scaler.is_enabled() else {}
            raise _Stopped(EpochProgress(step, sums.detach().clone(), seconds, scaled))
        lr = lr_at(epoch * steps + step, total_steps=total_steps, warmup_steps=warmup,
                   lr=t.peak_lr(), min_lr=t.min_lr)  # fmt: skip
        for group in opt.param_groups:
            group["lr"] = lr
        before = sums.clone()
        try:
            loss = _accumulate(p, plan, batches, (epoch, step), transform, sums, scaler,
                               extra_loss)  # fmt: skip
        except BadImageError as err:  # a file that changed after indexing: stop resumably
            bar.close()
            seconds = spent + time.perf_counter() - start
            scaled = scaler.state_dict() if scaler.is_enabled() else {}
            raise _Stopped(EpochProgress(step, before, seconds, scaled), err) from None
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"epoch {epoch + 1}, step {step}: the loss is {loss}; lower train.lr "
                f"(now {t.lr}) or enable train.grad_clip"
            )
        if t.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(p.model.parameters(), t.grad_clip)
        scaler.step(opt)
        scaler.update()
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
    bar.close()
    totals = distributed.all_reduce_sum(sums, p.dist).double().cpu()
    elapsed, seen, e = spent + time.perf_counter() - start, totals[0].item(), p.model.num_exits
    return {
        "train_loss": totals[1].item() / seen,
        "train_loss_exits": (totals[2 : e + 2] / seen).tolist(),
        "train_acc_exits": (totals[e + 2 :] / seen).tolist(),
        "lr": lr,
        "images_per_s": seen / elapsed,
        "epoch_seconds": elapsed,
    }


def seed_device(seed: int, device: torch.device) -> None:
    """Seed the generator dropout draws from on `device` (and the CPU's).

    torch.manual_seed would do it too, but it seeds every backend and costs
    0.6 ms a call on a CPU; this runs once per micro-batch.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
    elif device.type == "mps":
        torch.mps.manual_seed(seed)


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _accumulate(
    p: Prepared,
    plan: TrainPlan,
    batches: Iterable,
    at: tuple[int, int],
    transform: Callable,
    sums: torch.Tensor,
    scaler: torch.amp.GradScaler,
    extra_loss: ExtraLoss | None = None,
) -> float:
    """Forward and backward of this process's micro-batches of global batch `at` (epoch, step).

    Adds their metrics to `sums`; returns the global batch's mean loss, the
    same on every process (so that all of them agree to stop on a NaN).
    """
    (epoch, step), t = at, p.cfg.train
    size = plan.sampler.step_size(step)  # images in the global batch, all processes
    weights = exit_weights(t.exit_weights, p.model.num_exits)
    step_loss = torch.zeros((), dtype=sums.dtype, device=p.device)
    p.optimizer.zero_grad(set_to_none=True)
    for micro in range(t.grad_accum):
        images, labels = next(batches)
        if len(labels) == 0:  # every image of it failed to decode (skip_bad): nothing to learn
            continue
        piece = plan.sampler.piece(micro)
        aug = torch.Generator().manual_seed(step_seed(t.seed, epoch, step, piece, AUGMENT_STREAM))
        seed_device(step_seed(t.seed, epoch, step, piece, DROPOUT_STREAM), p.device)
        x = transform(images.to(p.device, non_blocking=True), aug)
        y = labels.to(p.device, non_blocking=True)
        b = len(y)
        with distributed.gradient_sync(plan.engine, micro == t.grad_accum - 1):
            with p.precision.autocast(p.device):
                logits = plan.engine(x).logits
            loss, per_exit = multi_exit_loss(logits, y, weights, t.label_smoothing)
            if extra_loss is not None:  # e.g. distillation: one more term per exit
                extra = extra_loss(logits, x, y)
                loss = loss + sum(w * term for w, term in zip(weights, extra))
                per_exit = [a + b for a, b in zip(per_exit, extra)]
            # This piece's share of the global batch, times the number of processes
            # because DDP averages the gradients over them: the sum is the global mean.
            scaler.scale(loss * (b * p.dist.world_size / size)).backward()
        with torch.no_grad():
            correct = torch.stack([(lg.argmax(-1) == y).sum() for lg in logits])
            losses = torch.stack([loss, *per_exit]).to(sums.dtype) * b
            sums[0] += b
            sums[1:] += torch.cat([losses, correct.to(sums.dtype)])
            step_loss += losses[0]
    return distributed.all_reduce_sum(step_loss, p.dist).item() / size


def validate(p: Prepared, transform: Callable, *, progress: bool = False) -> dict[str, Any]:
    """Validation loss and accuracy per exit; the processes of a group share the images."""
    if p.val_data is None:
        return {}
    data = p.val_data
    if p.dist.is_distributed:
        data = data.subset(torch.arange(len(data)).tensor_split(p.dist.world_size)[p.dist.rank])
    res = collect_logits(p.model, data, transform, batch_size=p.cfg.data.eval_batch_size,
                         device=p.device, progress=progress and p.dist.is_main,
                         desc="val", precision=p.eval_precision())  # fmt: skip
    y = res.labels
    sums = torch.tensor(
        [float(len(y))]
        + [F.cross_entropy(lg.float(), y, reduction="sum").item() for lg in res.logits]
        + [(lg.argmax(-1) == y).sum().item() for lg in res.logits],
        dtype=torch.float64,
    )
    if p.dist.is_distributed:  # on the device: NCCL reduces CUDA tensors, Gloo CPU ones
        sums = distributed.all_reduce_sum(sums.to(p.device), p.dist).cpu()
    n, e = sums[0].item(), len(res.logits)
    return {
        "val_loss_exits": (sums[1 : e + 1] / n).tolist(),
        "val_acc_exits": (sums[e + 1 :] / n).tolist(),
    }


def checkpoint_state(p: Prepared, epoch: int) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "optimizer": p.optimizer.state_dict(),
        "run_config": p.cfg.to_dict(),
        "data": p.data_info,
    }


def _start_new(run: Path, cfg: RunConfig, dist: DistContext | None = None) -> Prepared:
    """Prepare a new run; rank 0 checks that `run` is new and writes its first files."""
    dist = dist or DistContext()
    if dist.is_main:
        runfs.check_new(run)
    p = prepare(cfg, dist=dist)
    if not dist.is_main:
        return p
    run.mkdir(parents=True, exist_ok=True)
    env = runfs.environment(str(p.device))
    amp = {"setting": cfg.train.amp, "train": p.precision.to_dict(),
           "eval": p.eval_precision().to_dict()}  # fmt: skip
    runfs.write_env(run, {**env, "world_size": dist.world_size, "amp": amp})
    runfs.write_split(run, cfg.train.seed, p.val_indices)
    if p.dropped:
        runfs.write_dropped(run, p.dropped, [])
    # config.yaml last: it marks a run, so a run killed before it is simply trained anew
    runfs.write_config(run, cfg.to_dict(), p.model.cfg.to_dict())
    return p


def _resume(
    run: Path, overrides: list[str], dist: DistContext | None = None
) -> tuple[Prepared, int, EpochProgress | None]:
    """Every rank reads the run folder (shared by all nodes); rank 0 trims its metrics."""
    dist = dist or DistContext()
    sections, saved_model = runfs.read_config(run)
    cfg = resolve_config(overrides=overrides, base=sections)
    ckpt = run / runfs.CHECKPOINT
    p = prepare(cfg, val_indices=runfs.read_split(run), dist=dist, initialise=not ckpt.exists())
    saved_cfg = ModelConfig.from_dict(saved_model)
    if p.model.cfg != saved_cfg:
        raise ValueError(
            f"{run / runfs.CONFIG}: its model section (with the overrides) gives another model "
            f"than its resolved_model ({runfs.model_difference(p.model.cfg, saved_cfg)}); "
            "only train settings may change on resume"
        )
    if not ckpt.exists():  # killed before the first epoch ended: start over, same seed
        return p, 0, None
    state = load_checkpoint(ckpt)
    model = model_from_state(state, str(ckpt))
    if model.cfg != p.model.cfg:
        raise ValueError(
            f"{ckpt} holds a model {model.cfg.layers!r} ({model.cfg.embed_dim} wide) that is "
            f"not the one {run / runfs.CONFIG} describes ({p.model.cfg.layers!r}; "
            f"{runfs.model_difference(model.cfg, p.model.cfg)}): a checkpoint of another model"
        )
    if "optimizer" not in state:
        raise ValueError(
            f"{ckpt} holds no optimiser state: {run} is a starting point (ravit convert), not "
            "a run to resume; train a new run from it with train.init"
        )
    p.model.load_state_dict(model.state_dict())
    try:
        p.optimizer.load_state_dict(state["optimizer"])
    except (KeyError, ValueError) as err:
        raise ValueError(
            f"{ckpt}: its optimiser state does not fit the model ({describe_error(err)}); "
            "not a checkpoint of this run"
        ) from None
    if dist.is_main:
        runfs.truncate_metrics(run, state["epoch"])
        before = runfs.read_dropped(run)
        if p.dropped or before["count"]:
            runfs.write_dropped(run, p.dropped, before["training"])
    return p, int(state["epoch"]), EpochProgress.from_state(state)


def _open(
    run: Path, cfg: RunConfig | None, resume: bool, overrides: list[str], dist: DistContext
) -> tuple[Prepared, int, EpochProgress | None]:
    """The prepared run, the epoch to start from and how far into it."""
    if resume:
        return _resume(run, overrides, dist)
    return _start_new(run, cfg or resolve_config(overrides=overrides), dist), 0, None


def _record_failures(p: Prepared, run: Path, epoch: int) -> int:
    """Add the files that failed to decode this epoch (skip_bad) to RUN/dropped.json.

    Returns the number of files left out so far (at indexing and in training).
    """
    failed = getattr(p.plan.loader, "failed", []) if p.plan else []
    if not failed and not p.dropped:
        return 0
    if not p.dist.is_main:
        return len(p.dropped) + len(failed)
    saved = runfs.read_dropped(run)
    training, seen = list(saved["training"]), {r["file"] for r in saved["training"]}
    for f in dict.fromkeys(failed):  # each file once, with the first epoch it failed in
        if f not in seen:
            training.append({"epoch": epoch + 1, "file": f})
    failed.clear()
    return runfs.write_dropped(run, p.dropped, training)["count"]


def _agreed(p: Prepared, flag: bool) -> bool:
    """True on every process when it is true on any (one collective, when distributed)."""
    if not p.dist.is_distributed:
        return flag
    value = torch.tensor([float(flag)], dtype=_sum_dtype(p.device), device=p.device)
    return distributed.all_reduce_sum(value, p.dist).item() > 0


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

    Under torchrun every process calls fit with the same arguments: they
    train together, rank 0 writes the run folder, and every rank gets the
    records and calls `on_epoch`. An error in setting up on any rank (a bad
    config, an existing run folder) is raised on all of them. `extra_loss`
    adds a term per exit to the training loss (see ExtraLoss).
    """
    run = Path(run_dir)
    request = StopRequest()
    with distributed.process_group() as dist, contextlib.ExitStack() as held:

        def open_run() -> tuple[Prepared, int, EpochProgress | None]:
            if dist.is_main:  # one training process per run folder (RUN/.lock)
                held.enter_context(hold_run(run))
            return _open(run, cfg, resume, list(overrides or []), dist)

        p, start, partial = distributed.agree(dist, open_run)
        held.enter_context(request.installed())
        train_tf, eval_tf = transforms_for(p)
        if dist.is_main:
            log.info("training %s on %s (%d processes) from epoch %d",
                     p.model.cfg.layers, p.device, dist.world_size, start + 1)  # fmt: skip

        def stop_here(epoch: int, progress: EpochProgress | None, where: str) -> Interrupted:
            if dist.is_main:
                extra = progress.to_state() if progress else {}
                save_checkpoint(run / runfs.CHECKPOINT, p.model,
                                **checkpoint_state(p, epoch), **extra)  # fmt: skip
            return Interrupted(request.signum or 15, str(run), where, str(run / runfs.CHECKPOINT))

        for epoch in range(start, p.cfg.train.epochs):
            try:
                metrics = train_epoch(
                    p, epoch, train_tf, progress=progress, extra_loss=extra_loss,
                    resume_from=partial if epoch == start else None,
                    stop=lambda: _agreed(p, request.requested),
                )  # fmt: skip
            except _Stopped as stopped:
                done = stopped.progress.step
                where = f"in epoch {epoch + 1} after step {done} of {p.plan.sampler.steps_run}"
                interrupted = stop_here(epoch, stopped.progress, where)
                if stopped.error is None:
                    raise interrupted from None
                raise ValueError(
                    f"{stopped.error}; training stopped {where} with a checkpoint: replace the "
                    "file with a readable image and resume (or train anew with skip_bad=1 in "
                    "the data spec)"
                ) from None
            record = {"epoch": epoch + 1, **metrics}
            dropped = _record_failures(p, run, epoch)
            if dropped:
                record["dropped_files"] = dropped
            record.update(validate(p, eval_tf, progress=progress))
            record["world_size"] = dist.world_size
            if dist.is_main:
                # Metrics first: a kill between the two leaves a record that resume drops.
                runfs.append_metrics(run, record)
                save_checkpoint(run / runfs.CHECKPOINT, p.model, **checkpoint_state(p, epoch + 1))
            if on_epoch:
                on_epoch(record)
            if epoch + 1 < p.cfg.train.epochs and _agreed(p, request.requested):
                raise Interrupted(request.signum or 15, str(run), f"after epoch {epoch + 1}",
                                  str(run / runfs.CHECKPOINT))  # fmt: skip
        return distributed.broadcast_object(runfs.read_metrics(run) if dist.is_main else None, dist)
