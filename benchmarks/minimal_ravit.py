"""An independent minimal RAViT / ViT trainer (issue 13): plain PyTorch, its own model.

The recipe of the issue's right-hand column: AdamW (weight decay 0.05 on every
parameter), linear warm-up then cosine to 0, no gradient clipping, per-image
random crop (4 px zero padding, in pixel space) + horizontal flip, exit weights
1, no label smoothing. Only the CIFAR reading is the project's (`load_data`).

The flags move one thing at a time toward the project's trainer, for bisecting:
  --wd-groups    no decay on biases, norms, pos_embed, cls (the project's groups)
  --clip 1.0     global gradient-norm clipping (the project's default)
  --min-lr 1e-5  the project's cosine floor
  --init trunc   trunc-normal(0.02) Linear weights, zero biases (the project's)
  --antialias    antialiased bilinear resize to 16 px for branch 1 (the project's)
  --hand normed  hand branch 1's *normed* CLS to branch 2 (project: raw residual)
  --detach       stop branch 2's gradient at the CLS hand-over

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/minimal_ravit.py \
        --data cifar10:/work/shared/data/cifar10-subset --layers 1-3 --seed 0 --out runs/min-s0.json
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from ravit.data import load_data

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.n2(x))))


class Branch(nn.Module):
    def __init__(self, res, depth, dim=128, heads=4, mlp=512, patch=4, classes=10):
        super().__init__()
        self.res = res
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, 1 + (res // patch) ** 2, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x, cls, args):
        if x.shape[-1] != self.res:
            x = F.interpolate(
                x,
                size=(self.res, self.res),
                mode="bilinear",
                align_corners=False,
                antialias=args.antialias,
            )
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = self.blocks(torch.cat([cls[:, None], t], 1) + self.pos)
        c = self.norm(t[:, 0])
        out = c if args.hand == "normed" else t[:, 0]
        return self.head(c), (out.detach() if args.detach else out)


class Model(nn.Module):
    def __init__(self, layers, args):
        super().__init__()
        depths = [int(d) for d in layers.split("-")]
        self.cls = nn.Parameter(torch.randn(1, 128) * 0.02)
        self.branches = nn.ModuleList(Branch(r, d) for r, d in zip((16, 32), depths) if d)
        self.args = args
        if args.init == "trunc":
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        cls, outs = self.cls.expand(len(x), -1), []
        for br in self.branches:
            lg, cls = br(x, cls, self.args)
            outs.append(lg)
        return outs


def augment(u8, gen):
    """Per image: zero-pad 4 px (pixel 0), random 32 x 32 window, flip with p = 0.5."""
    b = len(u8)
    x = F.pad(u8, (4, 4, 4, 4))
    top = torch.randint(0, 9, (b,), generator=gen)
    left = torch.randint(0, 9, (b,), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5
    out = torch.empty_like(u8)
    for i in range(b):
        w = x[i, :, top[i] : top[i] + 32, left[i] : left[i] + 32]
        out[i] = w.flip(-1) if flip[i] else w
    return out


def norm(u8):
    return (u8.float() / 255 - MEAN) / STD


@torch.no_grad()
def accuracy(model, images, labels):
    model.eval()
    chunks = (model(norm(images[i : i + 512])) for i in range(0, len(images), 512))
    outs = [torch.cat(o) for o in zip(*chunks)]
    model.train()
    return [float((o.argmax(-1) == labels).float().mean()) for o in outs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="cifar10:/work/shared/data/cifar10-subset")
    ap.add_argument("--layers", default="1-3")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup-epochs", type=float, default=1.5)
    ap.add_argument("--min-lr", type=float, default=0.0)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--wd-groups", action="store_true")
    ap.add_argument("--clip", type=float, default=0.0)
    ap.add_argument("--init", choices=("torch", "trunc"), default="torch")
    ap.add_argument("--antialias", action="store_true")
    ap.add_argument("--hand", choices=("raw", "normed"), default="raw")
    ap.add_argument("--detach", action="store_true")
    ap.add_argument("--exit-weights", default=None, help="e.g. 1,1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    train, test = load_data(args.data, "train"), load_data(args.data, "test")
    xs, ys = train.images, train.labels
    model = Model(args.layers, args)
    if args.wd_groups:
        nd = lambda n, p: p.ndim < 2 or n.endswith(".pos") or n == "cls"  # noqa: E731
        params = [
            {"params": [p for n, p in model.named_parameters() if not nd(n, p)]},
            {"params": [p for n, p in model.named_parameters() if nd(n, p)], "weight_decay": 0.0},
        ]
    else:
        params = model.parameters()
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.wd)
    steps = math.ceil(len(xs) / args.batch_size)
    total, warm = steps * args.epochs, round(steps * args.warmup_epochs)

    def lr_at(s):
        if s < warm:
            return args.lr * (s + 1) / warm
        p = (s - warm) / max(1, total - warm)
        return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * p))

    weights = [float(w) for w in args.exit_weights.split(",")] if args.exit_weights else None
    gen = torch.Generator().manual_seed(args.seed + 1000)
    history, t0, step = [], time.time(), 0
    for epoch in range(args.epochs):
        order = torch.randperm(len(xs), generator=gen)
        for i in range(0, len(xs), args.batch_size):
            idx = order[i : i + args.batch_size]
            x, y = norm(augment(xs[idx], gen)), ys[idx]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            outs = model(x)
            w = weights or [1.0] * len(outs)
            loss = sum(wi * F.cross_entropy(o, y) for wi, o in zip(w, outs))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            step += 1
        history.append({"epoch": epoch + 1, "loss": loss.item(), "s": round(time.time() - t0)})
        print(json.dumps(history[-1]), flush=True)
    res = {
        "args": vars(args),
        "test_acc": accuracy(model, test.images, test.labels),
        "train_b1_acc": accuracy(model, xs[:1017], ys[:1017]),
        "wall_s": round(time.time() - t0),
        "history": history,
    }
    print(json.dumps({k: res[k] for k in ("test_acc", "train_b1_acc", "wall_s")}))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
