"""Where a bf16 training step of the cifar10 ViT 0-4 spends its time (issue 17).

One step = forward and loss under `torch.autocast("cpu", dtype=torch.bfloat16)`,
backward, AdamW; batch 128 of random images. Prints torch.profiler's top rows
by self CPU time over `--steps` steps, after two warm-up steps.

    python benchmarks/profile_bf16_step.py            # as ravit runs now
    python benchmarks/profile_bf16_step.py --before   # attention through the fused
                                                      # SDPA kernel in bf16, as before
    python benchmarks/profile_bf16_step.py --fp32     # the same step in fp32
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import ravit
import ravit.layers.attention as attention
from ravit.models import RAViT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", action="store_true",
                    help="bf16 attention through the fused kernel, as before issue 17")  # fmt: skip
    ap.add_argument("--fp32", action="store_true", help="no autocast")
    ap.add_argument("--layers", default="0-4")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rows", type=int, default=15)
    args = ap.parse_args()
    if args.before:
        attention._slow_fused = lambda t: False
    torch.manual_seed(0)
    model = RAViT(ravit.model_config("cifar10", args.layers))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)

    def step() -> None:
        ctx = contextlib.nullcontext() if args.fp32 else torch.autocast("cpu", torch.bfloat16)
        with ctx:
            loss = sum(F.cross_entropy(lg.float(), y) for lg in model(x).logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    ips = args.steps * args.batch / (time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    mode = "fp32" if args.fp32 else ("bf16, fused attention (before)" if args.before else "bf16")
    print(f"cifar10 {args.layers}, batch {args.batch}, {mode}, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.2f}: {ips:.0f} images/s unprofiled")  # fmt: skip
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
