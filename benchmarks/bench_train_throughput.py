"""Training throughput of the cifar10 plain ViT 0-4 against a reference ViT and a matmul.

One training step: batch 256 of random images (fixed seeds), forward,
cross-entropy on the model's single exit, backward and an AdamW step, fp32,
on the CPU. In one process the benchmark alternates timed rounds of

- ours: `RAViT(ravit.model_config("cifar10", "0-4"))`: D 128, 4 heads, MLP 512,
  patch 4, 64 patches + CLS = 65 tokens, 4 layers, one exit;
- the reference: the same ViT written the straightforward way, as the common
  einops-based "vit-pytorch" implementations do (`ReferenceViT` below);
  checked at start-up to compute the same function as ours;
- a 2048^3 fp32 matmul: the practical peak FLOP rate of this machine;

and reports medians, because single figures on a shared 2-core machine vary
by 15-40 % (shared/PERF-NOTES.md). The order of the two models flips every
round. Two bounds, from the project's issue:

- SPEED RATIO: ours / reference images/s, median over rounds, >= 1.0;
- FLOP FRACTION: 3 x `model_cost(cfg).total_flops` per image (forward plus a
  backward of twice its cost, the paper's cost model: patch embedding, head,
  LayerNorm, GELU and softmax count for nothing) x images/s, over the matmul
  rate of the same round; median over rounds, >= 0.55.

It exits with status 1 when a bound fails, unless `--no-check`.

First thing, the process re-executes itself with glibc malloc settings that
keep freed memory in the process (`ravit.allocator`); `RAVIT_NO_MALLOC_TUNING=1`
measures glibc's defaults instead.

    python benchmarks/bench_train_throughput.py --quick   # 45 s on an idle 2-core CPU
    python benchmarks/bench_train_throughput.py           # 1.5 min (busy machine: up to 5)
    RAVIT_NO_MALLOC_TUNING=1 python benchmarks/bench_train_throughput.py --quick
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

import ravit
from ravit.allocator import (
    OPT_OUT_VAR,
    TUNED_MALLOC_ENV,
    allocator_status,
    reexec_with_tuned_allocator,
)
from ravit.models import RAViT

MIN_SPEED_RATIO = 1.0
MIN_FLOP_FRACTION = 0.55
MATMUL_N = 2048
# CPU time / wall time below this share of the thread count: other processes had the CPUs.
BUSY_CPU_SHARE = 0.85


# -- the reference ViT --------------------------------------------------------------
# As vit-pytorch writes it: rearrange -> view/transpose, three q/k/v projections,
# attention as matmul, scale, softmax, matmul, pre-norm blocks, a final LayerNorm
# on all tokens and a linear head on the CLS token. Biases where ours has them,
# and the patch embedding as the linear map of each flattened patch (what our
# stride-P Conv2d computes), so that both models have the same parameters.


class ReferenceAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, -1).transpose(1, 2)  # b n (h d) -> b h n d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        q, k, v = (self.split_heads(f(x)) for f in (self.to_q, self.to_k, self.to_v))
        dots = torch.matmul(q, k.transpose(-1, -2)) * self.scale  # (B, heads, N, N)
        out = torch.matmul(dots.softmax(dim=-1), v)  # (B, heads, N, head_dim)
        b, h, n, d = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, h * d))  # b h n d -> b n (h d)


class ReferenceViT(nn.Module):
    def __init__(self, cfg: ravit.ModelConfig):
        super().__init__()
        if cfg.num_exits != 1:
            raise ValueError(f"the reference is a plain ViT with one exit, got layers {cfg.layers}")
        branch = cfg.branches[cfg.present[0]]
        dim, num_patches = cfg.embed_dim, cfg.num_patches(branch.resolution)
        self.patch = cfg.patch_size
        self.to_patch_embedding = nn.Linear(cfg.in_chans * cfg.patch_size**2, dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleList([ReferenceAttention(dim, cfg.num_heads), self._feed_forward(cfg)])
            for _ in range(branch.depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.mlp_head = nn.Linear(dim, cfg.num_classes)

    @staticmethod
    def _feed_forward(cfg: ravit.ModelConfig) -> nn.Sequential:
        d, h = cfg.embed_dim, cfg.mlp_dim
        return nn.Sequential(nn.LayerNorm(d), nn.Linear(d, h), nn.GELU(), nn.Linear(h, d))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = img.shape
        p = self.patch
        # b c (h p1) (w p2) -> b (h w) (p1 p2 c)
        patches = img.reshape(b, c, hh // p, p, ww // p, p).permute(0, 2, 4, 3, 5, 1)
        x = self.to_patch_embedding(patches.reshape(b, -1, p * p * c))
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1) + self.pos_embedding
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.mlp_head(self.norm(x)[:, 0])

    @torch.no_grad()
    def load_from(self, ours: RAViT) -> None:
        """Copy our weights in, so that both compute the same function."""
        branch, head = ours.branches[0], ours.heads[0]
        w = branch.patch_embed.proj.weight  # (D, C, P, P) -> (D, P * P * C), p1 p2 c order
        self.to_patch_embedding.weight.copy_(w.permute(0, 2, 3, 1).flatten(1))
        self.to_patch_embedding.bias.copy_(branch.patch_embed.proj.bias)
        self.pos_embedding.copy_(branch.pos_embed)
        self.cls_token.copy_(ours.cls_token.view(1, 1, -1))
        for (attn, ff), block in zip(self.layers, branch.blocks):
            attn.norm.load_state_dict(block.norm1.state_dict())
            qkv_w, qkv_b = block.attn.qkv.weight.chunk(3), block.attn.qkv.bias.chunk(3)
            for lin, w_part, b_part in zip((attn.to_q, attn.to_k, attn.to_v), qkv_w, qkv_b):
                lin.weight.copy_(w_part)
                lin.bias.copy_(b_part)
            attn.to_out.load_state_dict(block.attn.proj.state_dict())
            ff[0].load_state_dict(block.norm2.state_dict())
            ff[1].load_state_dict(block.mlp.fc1.state_dict())
            ff[3].load_state_dict(block.mlp.fc2.state_dict())
        self.norm.load_state_dict(head.norm.state_dict())
        self.mlp_head.load_state_dict(head.fc.state_dict())


# -- measurement --------------------------------------------------------------------


@dataclass
class Trainer:
    """A model, its AdamW and a fixed random batch: `step()` is one training step."""

    model: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    autocast: torch.dtype | None = None  # bf16: the forward and loss under torch.autocast
    every_exit: bool = False  # the loss sums every exit's cross-entropy (as ravit trains)
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        self.model.train()
        # The fused CPU kernel, for both models alike: about 1 ms a step here,
        # against 3-7 ms for the default for-loop implementation.
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=1e-4, weight_decay=0.05, fused=True
        )

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(images)
        return out.logits[-1] if isinstance(out, ravit.RAViTOutput) else out

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        ctx = torch.autocast("cpu", dtype=self.autocast) if self.autocast else nullcontext()
        with ctx:
            if self.every_exit:
                logits = self.model(self.images).logits
            else:
                logits = [self.logits(self.images)]
            loss = sum(F.cross_entropy(lg.float(), self.labels) for lg in logits)
        loss.backward()
        self.optimizer.step()

    def images_per_second(self, steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        return steps * self.images.shape[0] / (time.perf_counter() - t0)


def random_batch(cfg: ravit.ModelConfig, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    s = cfg.image_size
    images = torch.randn(batch, cfg.in_chans, s, s, generator=gen)
    return images, torch.randint(0, cfg.num_classes, (batch,), generator=gen)


class Matmul:
    """FLOP/s of n x n x n matmuls (fp32, or `dtype`) into a preallocated output."""

    def __init__(self, n: int = MATMUL_N, dtype: torch.dtype = torch.float32):
        gen = torch.Generator().manual_seed(2)
        self.a, self.b = (torch.randn(n, n, generator=gen).to(dtype) for _ in range(2))
        self.out = torch.empty(n, n, dtype=dtype)
        self.flops = 2 * n**3

    def flops_per_second(self, reps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(self.a, self.b, out=self.out)
        return reps * self.flops / (time.perf_counter() - t0)


def _rusage():
    """This process's resource usage, or None where the `resource` module is missing."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF)


@dataclass
class Rounds:
    ours: list[float] = field(default_factory=list)  # images/s
    reference: list[float] = field(default_factory=list)  # images/s
    matmul: list[float] = field(default_factory=list)  # FLOP/s
    cpus_used: float = 0.0  # process CPU time / wall time over the rounds
    faults_per_step: float = float("nan")  # minor page faults per training step
    sys_ms_per_step: float = float("nan")  # kernel CPU time per training step


def measure(ours: Trainer, ref: Trainer, *, rounds: int, steps: int, warmup: int) -> Rounds:
    """`rounds` x (both models in alternating order, then two matmuls)."""
    mm = Matmul()
    for t in (ours, ref):
        t.images_per_second(warmup)
    mm.flops_per_second(1)
    res = Rounds()
    wall, cpu, usage = time.perf_counter(), time.process_time(), _rusage()
    for r in range(rounds):
        if r % 2 == 0:
            res.ours.append(ours.images_per_second(steps))
            res.reference.append(ref.images_per_second(steps))
        else:
            res.reference.append(ref.images_per_second(steps))
            res.ours.append(ours.images_per_second(steps))
        res.matmul.append(mm.flops_per_second(2))
        print(
            f"  round {r + 1:2d}/{rounds}: ours {res.ours[-1]:6.1f}  "
            f"reference {res.reference[-1]:6.1f} images/s   "
            f"matmul {res.matmul[-1] / 1e9:6.1f} GFLOP/s",
            flush=True,
        )
    res.cpus_used = (time.process_time() - cpu) / (time.perf_counter() - wall)
    if usage is not None:  # what the allocator settings change: faults and kernel time
        end, n = _rusage(), 2 * rounds * steps
        res.faults_per_step = (end.ru_minflt - usage.ru_minflt) / n
        res.sys_ms_per_step = 1e3 * (end.ru_stime - usage.ru_stime) / n
    return res


# -- report -------------------------------------------------------------------------


def summarize(res: Rounds, train_flops: int) -> dict[str, float]:
    """Medians; the two ratios pair each round's figures, then take the median."""
    med = statistics.median
    speed = [o / r for o, r in zip(res.ours, res.reference)]
    frac = [train_flops * o / m for o, m in zip(res.ours, res.matmul)]
    ref_frac = [train_flops * r / m for r, m in zip(res.reference, res.matmul)]
    return {
        "ours": med(res.ours),
        "ref": med(res.reference),
        "matmul": med(res.matmul) / 1e9,
        "ours_best": max(res.ours),
        "ref_best": max(res.reference),
        "matmul_best": max(res.matmul) / 1e9,
        "speed": med(speed),
        "speed_lo": min(speed),
        "speed_hi": max(speed),
        "frac": med(frac),
        "frac_lo": min(frac),
        "frac_hi": max(frac),
        "ref_frac": med(ref_frac),
        "cpus_used": res.cpus_used,
        "faults": res.faults_per_step,
        "sys_ms": res.sys_ms_per_step,
        "gflop_per_s_per_ips": train_flops / 1e9,
    }


def machine_load() -> str:
    load = "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:  # Linux pressure stall information: time some task waited for a CPU
        with open("/proc/pressure/cpu") as f:
            some = f.readline().split()
        load += ", CPU pressure " + " ".join(some[1:3])
    except OSError:
        pass
    return load


def describe_setup(cfg: ravit.ModelConfig, ours: Trainer, ref: Trainer, max_diff: float) -> None:
    count = lambda t: sum(p.numel() for p in t.model.parameters())  # noqa: E731
    status = allocator_status(os.environ)
    if os.environ.get(OPT_OUT_VAR):
        status += f" ({OPT_OUT_VAR}={os.environ[OPT_OUT_VAR]})"
    settings = " ".join(f"{k}={os.environ[k]}" for k in TUNED_MALLOC_ENV if k in os.environ)
    print(
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"{torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}"
    )
    print(f"allocator: glibc malloc {status}" + (f": {settings}" if settings else ""))
    print(f"machine: {os.cpu_count()} CPUs, {machine_load()}")
    print(
        f"model: cifar10 {cfg.layers}: D {cfg.embed_dim}, {cfg.num_heads} heads, "
        f"MLP {cfg.mlp_dim}, patch {cfg.patch_size}, "
        f"{cfg.num_patches(cfg.image_size) + 1} tokens, {cfg.branches[-1].depth} layers, "
        f"fused_attention={cfg.fused_attention}"
    )
    print(
        f"parameters: ours {count(ours):,}, reference {count(ref):,}; reference with our "
        f"weights: max |logit difference| {max_diff:.1e}"
    )
    print(f"batch {ours.images.shape[0]}, fp32, cross-entropy, AdamW (fused)")


def report(s: dict[str, float], flops: int) -> None:
    print()
    print(
        f"analytic FLOPs per image: forward {ravit.format_flops(flops)}, "
        f"training step 3x = {ravit.format_flops(3 * flops)}"
    )
    g = s["gflop_per_s_per_ips"]
    print("                 median                       best round")
    for name, key in (("ours", "ours"), ("reference", "ref")):
        print(
            f"{name:<10} {s[key]:7.1f} images/s {g * s[key]:6.1f} GFLOP/s   "
            f"{s[key + '_best']:7.1f} images/s"
        )
    print(
        f"matmul {MATMUL_N}^3         {s['matmul']:6.1f} GFLOP/s   {s['matmul_best']:7.1f} GFLOP/s"
    )
    print(
        f"SPEED RATIO   ours / reference  = {s['speed']:.3f}   (rounds {s['speed_lo']:.3f}"
        f"-{s['speed_hi']:.3f}; bound >= {MIN_SPEED_RATIO:.2f})"
    )
    print(
        f"FLOP FRACTION ours / matmul     = {s['frac']:.3f}   (rounds {s['frac_lo']:.3f}"
        f"-{s['frac_hi']:.3f}; bound >= {MIN_FLOP_FRACTION:.2f}; "
        f"reference {s['ref_frac']:.3f})"
    )
    threads = torch.get_num_threads()
    print(
        f"per training step: {s['faults']:,.0f} minor page faults, {s['sys_ms']:.0f} ms "
        f"of kernel CPU time; CPU time / wall time: {s['cpus_used']:.2f} ({threads} threads)"
    )
    if s["cpus_used"] < BUSY_CPU_SHARE * threads:
        print(
            "NOTE: other processes had part of the CPUs during the run. A training step's "
            "many short kernels lose more to that than one big matmul does, so the FLOP "
            "fraction reads low: rerun on an idle machine."
        )


def failures(s: dict[str, float]) -> list[str]:
    out = []
    if s["speed"] < MIN_SPEED_RATIO:
        out.append(f"speed ratio {s['speed']:.3f} < {MIN_SPEED_RATIO}")
    if s["frac"] < MIN_FLOP_FRACTION:
        out.append(f"FLOP fraction {s['frac']:.3f} < {MIN_FLOP_FRACTION}")
    return out


# -- fp32 against bf16 (--amp) ------------------------------------------------------
# Issue 17: each case trains (or, for early exit, infers) in fp32 and in bf16 autocast
# from the same weights and batch, in alternating order every round, with the fp32 and
# the bf16 matmul timed in the same round.

MIN_WIDE_BF16_RATIO = 1.7  # the D = 768 model: bf16 / fp32 images/s, median over rounds
AMP_TRAIN_CASES = (("cifar10", "0-4", 128), ("cifar10", "1-3", 128), ("tiny-imagenet", "0-0-1", 16))
AMP_INFER_CASE = ("cifar10", "1-3", 256)


class EarlyExitBatch:
    """Batched early exit of a RAViT in inference mode; tau leaves about half at exit 1."""

    def __init__(self, model: RAViT, images: torch.Tensor, dtype: torch.dtype | None):
        self.model, self.images, self.dtype = model.eval(), images, dtype
        with torch.inference_mode():
            from ravit.exits.policy import entropy

            first = model.forward_exit(0, images, model.initial_cls(len(images)))[0]
            self.tau = float(entropy(first).median())
            out = model.early_exit(images, self.tau)
        cum = ravit.model_cost(model.cfg).cumulative_flops
        self.flops = sum(cum[e] for e in out.exit_index.tolist()) / len(images)

    def images_per_second(self, steps: int) -> float:
        ctx = torch.autocast("cpu", dtype=self.dtype) if self.dtype else nullcontext()
        t0 = time.perf_counter()
        with torch.inference_mode(), ctx:
            for _ in range(steps):
                self.model.early_exit(self.images, self.tau)
        return steps * self.images.shape[0] / (time.perf_counter() - t0)


def _amp_pair(preset: str, layers: str, batch: int, infer: bool):
    cfg = ravit.model_config(preset, layers)
    torch.manual_seed(0)
    model = RAViT(cfg)
    images, labels = random_batch(cfg, batch)
    if infer:
        pair = [EarlyExitBatch(model, images, d) for d in (None, torch.bfloat16)]
        return cfg, pair, pair[0].flops
    twin = RAViT(cfg)
    twin.load_state_dict(model.state_dict())
    pair = [Trainer(m, images, labels, autocast=d, every_exit=True)
            for m, d in ((model, None), (twin, torch.bfloat16))]  # fmt: skip
    return cfg, pair, 3 * ravit.model_cost(cfg).total_flops


def amp_main(args: argparse.Namespace) -> int:
    from ravit.devices import cpu_bf16_instructions

    rounds = args.rounds or (5 if args.quick else 10)
    start = time.perf_counter()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, bf16 instructions: "
        f"{cpu_bf16_instructions() or 'none'}"
    )
    print(f"machine: {os.cpu_count()} CPUs, {machine_load()}")
    cases = [(*c, False) for c in AMP_TRAIN_CASES] + [(*AMP_INFER_CASE, True)]
    built = [_amp_pair(*c) for c in cases]
    mms = {"fp32": Matmul(), "bf16": Matmul(dtype=torch.bfloat16)}
    for _, pair, _ in built:
        for t in pair:
            t.images_per_second(2)
    rates = {i: ([], []) for i in range(len(cases))}
    mm_rates = {k: [] for k in mms}
    for r in range(rounds):
        for i, (_, pair, _) in enumerate(built):
            order = (0, 1) if (r + i) % 2 == 0 else (1, 0)
            for j in order:
                rates[i][j].append(pair[j].images_per_second(args.steps))
        for k, mm in mms.items():
            mm_rates[k].append(mm.flops_per_second(2))
        print(f"  round {r + 1:2d}/{rounds}: " + "  ".join(
            f"{c[0]} {c[1]} {rates[i][0][-1]:.0f}/{rates[i][1][-1]:.0f}"
            for i, c in enumerate(cases)), flush=True)  # fmt: skip
    med = statistics.median
    mm = {k: med(v) / 1e9 for k, v in mm_rates.items()}
    print()
    print(f"matmul {MATMUL_N}^3: fp32 {mm['fp32']:.1f} GFLOP/s, bf16 {mm['bf16']:.1f} GFLOP/s "
          f"({mm['bf16'] / mm['fp32']:.2f}x)")  # fmt: skip
    print(f"{'case':<34} {'fp32 img/s':>10} {'bf16 img/s':>10} {'bf16/fp32':>9} "
          f"{'fp32 GF/s (of mm)':>18} {'bf16 GF/s (of mm)':>18}")  # fmt: skip
    failed = []
    for i, ((preset, layers, batch, infer), (cfg, _, flops)) in enumerate(zip(cases, built)):
        f32, b16 = (med(v) for v in rates[i])
        ratio = med([b / f for f, b in zip(*rates[i])])
        what = "early exit" if infer else "train"
        name = f"{preset} {layers} D{cfg.embed_dim} {what} b{batch}"
        g32, g16 = flops * f32 / 1e9, flops * b16 / 1e9
        print(
            f"{name:<34} {f32:10.1f} {b16:10.1f} {ratio:8.2f}x "
            f"{g32:8.1f} ({g32 / mm['fp32']:4.0%})    {g16:8.1f} ({g16 / mm['bf16']:4.0%})"
        )
        if not infer and cfg.embed_dim >= 768 and ratio < MIN_WIDE_BF16_RATIO:
            failed.append(f"{name}: bf16/fp32 {ratio:.2f} < {MIN_WIDE_BF16_RATIO}")
    print("(training FLOPs: 3x the analytic forward; early exit: the exits taken, forward only)")
    print(f"({time.perf_counter() - start:.0f} s; {machine_load()})")
    if not failed:
        print(f"OK: bf16 >= {MIN_WIDE_BF16_RATIO}x fp32 for the D = 768 model")
        return 0
    print(("FAIL: " if not args.no_check else "FAIL (not checked): ") + "; ".join(failed))
    return 0 if args.no_check else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="12 rounds instead of 30")
    p.add_argument("--no-check", action="store_true", help="only print; exit 0 either way")
    p.add_argument("--rounds", type=int, help="timed rounds (default 30, --quick 12)")
    p.add_argument("--steps", type=int, default=1, help="training steps per model and round")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument(
        "--explicit-attention",
        action="store_true",
        help="ours with fused_attention=False (matmul + softmax) instead of the preset's SDPA",
    )
    p.add_argument("--amp", action="store_true",
                   help="fp32 against bf16 autocast instead (issue 17): cifar10 0-4 and 1-3, "
                        "tiny-imagenet 0-0-1, and batch-256 early exit")  # fmt: skip
    args = p.parse_args(argv)
    if args.rounds is not None and args.rounds < 1 or args.steps < 1 or args.batch < 1:
        p.error("--rounds, --steps and --batch must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    # glibc reads its malloc settings when a process starts: run this same command
    # again with them (same pid; a no-op when set already or RAVIT_NO_MALLOC_TUNING=1).
    reexec_with_tuned_allocator()
    args = parse_args(argv)
    if args.amp:
        return amp_main(args)
    rounds = args.rounds or (12 if args.quick else 30)
    start = time.perf_counter()
    overrides = {"fused_attention": False} if args.explicit_attention else {}
    cfg = ravit.model_config("cifar10", "0-4", **overrides)
    torch.manual_seed(0)
    ours_model, ref_model = RAViT(cfg), ReferenceViT(cfg)
    ref_model.load_from(ours_model)
    images, labels = random_batch(cfg, args.batch)
    with torch.no_grad():
        probe = images[:8]
        max_diff = float((ours_model(probe).logits[-1] - ref_model(probe)).abs().max())
    ours, ref = Trainer(ours_model, images, labels), Trainer(ref_model, images, labels)
    describe_setup(cfg, ours, ref, max_diff)
    print(f"{rounds} rounds: {args.steps} step(s) of each model (order flips), 2 matmuls")
    res = measure(ours, ref, rounds=rounds, steps=args.steps, warmup=2)
    flops = ravit.model_cost(cfg).total_flops
    summary = summarize(res, 3 * flops)
    report(summary, flops)
    print(f"({time.perf_counter() - start:.0f} s; {machine_load()})")
    failed = failures(summary)
    if not failed:
        print("OK: both bounds hold")
        return 0
    print(("FAIL: " if not args.no_check else "FAIL (not checked): ") + "; ".join(failed))
    return 0 if args.no_check else 1


if __name__ == "__main__":
    sys.exit(main())
