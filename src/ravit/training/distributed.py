"""Data-parallel training over processes started by torchrun, or one process alone.

torchrun (``torchrun --nproc-per-node N``, ``--nnodes M``) starts one process
per GPU and sets RANK, WORLD_SIZE and LOCAL_RANK in each one's environment;
`process_group` reads them and joins the group (NCCL for CUDA tensors, Gloo
for CPU ones). Without them nothing is set up and training is plain
single-process training: no launcher, no environment variables needed.

The number of processes is an implementation detail of a run, not a
hyper-parameter:

- ``train.batch_size`` is the global batch of one optimiser step. Each
  process runs ``batch_size / (world_size x grad_accum)`` images at a time.
- Epoch e's order is a permutation seeded by (seed, e) alone, and global
  batch s is ``order[s*B:(s+1)*B]`` whatever the world size, so every image
  is seen once per epoch and a run may resume under another process count.
- Global batch s is cut into ``world_size x grad_accum`` contiguous pieces
  (sizes differ by at most one); process r trains on pieces
  ``r*grad_accum ... r*grad_accum + grad_accum - 1``. A piece's loss is
  weighted by its share of the global batch, so the gradient DDP averages is
  the gradient of the mean loss over the global batch, however it was cut.
- The augmentation and dropout of a piece are seeded by (seed, epoch, step,
  piece): runs with the same ``world_size x grad_accum`` draw the same ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")
# Random streams of one micro-batch, and of the data-loading workers (see `step_seed`).
AUGMENT_STREAM, DROPOUT_STREAM, LOADER_STREAM = 1, 2, 3


class PeerError(ValueError):
    """Raised on ranks other than 0 when a rank failed: rank 0 reports the error."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the group; the defaults describe a process alone."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that prints and writes the run folder."""
        return self.rank == 0


def context_from_env(environ: Mapping[str, str] | None = None) -> DistContext:
    """The group torchrun describes in the environment, or a process alone.

    Raises ValueError for variables that are not integers or not consistent
    (RANK outside [0, WORLD_SIZE), ...), naming them.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return DistContext()

    def read(name: str, default: int | None = None) -> int:
        raw = env.get(name)
        if raw is None and default is not None:
            return default
        try:
            return int(str(raw))
        except ValueError:
            raise ValueError(
                f"{name}={raw!r} in the environment; expected an integer "
                "(torchrun sets RANK, WORLD_SIZE and LOCAL_RANK together)"
            ) from None

    world = read("WORLD_SIZE")
    if world == 1:
        return DistContext()
    rank, local_rank = read("RANK"), read("LOCAL_RANK")
    local_world = read("LOCAL_WORLD_SIZE", world)
    if not (world >= 1 and 0 <= rank < world and 0 <= local_rank < local_world <= world):
        raise ValueError(
            f"inconsistent launcher environment: RANK={rank}, WORLD_SIZE={world}, "
            f"LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_world}; expected "
            "0 <= RANK < WORLD_SIZE and 0 <= LOCAL_RANK < LOCAL_WORLD_SIZE <= WORLD_SIZE"
        )
    return DistContext(rank, world, local_rank, local_world)


@contextlib.contextmanager
def process_group() -> Iterator[DistContext]:
    """Join the process group of a torchrun launch for the duration of the block.

    Alone, this does nothing. Under torchrun it initialises the default group
    from the environment (``env://``) with Gloo for CPU tensors and, when CUDA
    is present, NCCL for CUDA tensors (each process on the GPU of its
    LOCAL_RANK), and destroys it on the way out. A group the caller set up
    already is used as it is and left alone.
    """
    ctx = context_from_env()
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        yield DistContext(rank, world, ctx.local_rank, ctx.local_world_size) if world > 1 else ctx
        return
    if not ctx.is_distributed:
        yield ctx
        return
    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 asks for distributed training; this torch has none")
    backend = "gloo"
    if torch.cuda.is_available():
        backend = "cpu:gloo,cuda:nccl"
        if ctx.local_rank < torch.cuda.device_count():
            torch.cuda.set_device(ctx.local_rank)  # before NCCL picks a device
    dist.init_process_group(backend)
    try:
        yield ctx
    finally:
        dist.destroy_process_group()


def process_device(name: str, ctx: DistContext) -> torch.device:
    """The device of a process in a group: the GPU of its LOCAL_RANK, or the CPU."""
    if name == "cpu":
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        raise ValueError(
            f"train.device={name!r} in a distributed run; expected auto or cuda (each "
            "process takes the GPU of its LOCAL_RANK) or cpu"
        )
    if not torch.cuda.is_available():
        if name == "cuda":
            raise ValueError("train.device=cuda asked for, but torch sees no CUDA device")
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if ctx.local_rank >= count:
        raise ValueError(
            f"LOCAL_RANK {ctx.local_rank} but this node has {count} GPUs: start at most "
            f"{count} processes per node (--nproc-per-node)"
        )
    return torch.device("cuda", ctx.local_rank)


def is_main_process() -> bool:
    """True in rank 0 of a group (or in a process alone): the CLI prints only there."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    try:
        return context_from_env().is_main
    except ValueError:
        return True


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum `tensor` over the group, in place (nothing to do alone)."""
    if ctx.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: T, ctx: DistContext) -> T:
    """Rank 0's `obj` on every rank (picklable objects)."""
    if not ctx.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(ctx: DistContext, fn: Callable[[], T]) -> T:
    """Run `fn` on every rank; if it raised on any, raise on all instead of hanging.

    Rank 0 raises its own exception, or a ValueError naming the failed rank
    and its message; the other ranks raise `PeerError` (rank 0 reports).
    """
    if not ctx.is_distributed:
        return fn()
    try:
        result, error = fn(), None
    except Exception as err:  # any failure: the other ranks must not wait forever
        result, error = None, err
    messages: list[Any] = [None] * ctx.world_size
    text = None if error is None else (str(error) or type(error).__name__)
    dist.all_gather_object(messages, text)
    failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
    if not failed:
        return result  # type: ignore[return-value]
    if ctx.is_main and error is not None:
        raise error
    rank, message = failed[0]
    if ctx.is_main:
        raise ValueError(f"process {rank} of {ctx.world_size}: {message}")
    raise PeerError(f"process {rank} of {ctx.world_size} failed: {message}") from error


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """The seed of an epoch's data order (stream 0)."""
    return (seed * 1_000_003 + epoch * 101 + stream) % (2**63)


def step_seed(seed: int, epoch: int, step: int, piece: int, stream: int) -> int:
    """A seed for one piece of one global batch, unrelated to every other one's."""
    key = f"{seed}/{epoch}/{step}/{piece}/{stream}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") % (2**63)


class GlobalBatchSampler:
    """The micro-batches one process trains on, epoch by epoch (see the module doc).

    Iterating yields this rank's index lists, `grad_accum` per global batch,
    for the epoch set by `set_epoch`: a `batch_sampler` for a torch DataLoader.
    When the last global batch of an epoch has fewer images than there are
    pieces (world_size x grad_accum), it is skipped, so that no process gets
    an empty micro-batch; the learning-rate schedule counts it all the same.
    """

    def __init__(
        self, n: int, batch_size: int, *, seed: int, world_size: int = 1, rank: int = 0,
        grad_accum: int = 1,
    ) -> None:  # fmt: skip
        if n < 1 or batch_size < 1 or grad_accum < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"GlobalBatchSampler(n={n}, batch_size={batch_size}, rank={rank}, "
                f"world_size={world_size}, grad_accum={grad_accum}): expected positive "
                "sizes and 0 <= rank < world_size"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.grad_accum = rank, grad_accum
        self.pieces = world_size * grad_accum
        if batch_size < self.pieces:
            raise ValueError(
                f"train.batch_size={batch_size} is the global batch; it must hold at least one "
                f"image per micro-batch: {world_size} processes x grad_accum {grad_accum}"
            )
        # The schedule's steps per epoch; the ones run may be one fewer (see above).
        self.steps_per_epoch = math.ceil(n / batch_size)
        last = n - (self.steps_per_epoch - 1) * batch_size
        self.steps_run = self.steps_per_epoch - int(last < self.pieces)
        if self.steps_run == 0:
            raise ValueError(
                f"{n} training images cannot fill {self.pieces} micro-batches "
                f"({world_size} processes x grad_accum {grad_accum})"
            )
        self.set_epoch(0)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Hand out `epoch`'s batches from global batch `start_step` on (a resumed epoch)."""
        if not 0 <= start_step <= self.steps_run:
            raise ValueError(f"start_step={start_step} is outside [0, {self.steps_run}]")
        self.epoch, self.start_step = epoch, start_step
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, 0))
        self.order = torch.randperm(self.n, generator=gen)

    def step_size(self, step: int) -> int:
        """The number of images in global batch `step`, over all processes."""
        return min(self.batch_size, self.n - step * self.batch_size)

    def micro_batches(self, step: int) -> list[torch.Tensor]:
        """This rank's `grad_accum` index tensors of global batch `step`."""
        batch = self.order[step * self.batch_size : (step + 1) * self.batch_size]
        first = self.rank * self.grad_accum
        return list(batch.tensor_split(self.pieces)[first : first + self.grad_accum])

    def piece(self, micro: int) -> int:
        """The index among the global batch's pieces of this rank's micro-batch `micro`."""
        return self.rank * self.grad_accum + micro

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.steps_run):
            for idx in self.micro_batches(step):
                yield idx.tolist()

    def __len__(self) -> int:
        return (self.steps_run - self.start_step) * self.grad_accum


def wrap_model(
    model: nn.Module, ctx: DistContext, device: torch.device, *, compile: bool = False
) -> nn.Module:
    """The module the training step calls: `model`, compiled and/or in DDP.

    `model` itself stays a plain module (evaluated and saved as is); the
    compiled wrapper and DDP share its parameters. As PyTorch advises, the
    inner module is compiled and DDP wraps it (DDP's gradient hooks stay in
    eager code).
    """
    engine: nn.Module = model
    if compile:
        engine = torch.compile(model)  # type: ignore[assignment]
    if ctx.is_distributed:
        engine = nn.parallel.DistributedDataParallel(
            engine,
            device_ids=[device.index] if device.type == "cuda" else None,
            gradient_as_bucket_view=True,
        )
    return engine


def gradient_sync(engine: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """DDP's `no_sync` for all but the last micro-batch of an accumulated step."""
    if sync or not isinstance(engine, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return engine.no_sync()
