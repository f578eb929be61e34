"""`ravit distill`: train a student RAViT from a trained teacher run, exit by exit.

The student's settings start from the teacher's run config (its data, split,
schedule and model) and change where the flags or key=value overrides say,
e.g. `--layers 1-1` or `--embed-dim 64`. docs/distillation.md has the loss.
"""

from __future__ import annotations

import argparse
import sys

from ravit.cli import UsageError, _flag_updates, _print_epoch, add_model_args

DISTILL_FLAGS = ("temperature", "alpha", "beta")


def add_distill_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="train a student RAViT from a trained teacher run")
    p.add_argument("--teacher", metavar="RUN", help="the trained teacher's run folder")
    p.add_argument("--config", help="YAML file with model/data/train sections for the student")
    add_model_args(p, required=False)
    p.add_argument("--data", help="data spec (default: the teacher's)")
    p.add_argument("--train-size", type=float, help="train on a seeded subset: count or fraction")
    p.add_argument("--epochs", type=int, help="default: the teacher's")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, help="default: the teacher's (and so its val split)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"])
    g = p.add_argument_group("distillation (defaults in docs/distillation.md)")
    g.add_argument("--temperature", type=float, help="T, softens the KL term (default 4)")
    g.add_argument("--alpha", type=float, help="weight of the KL term (default 1)")
    g.add_argument("--beta", type=float, help="weight of the entropy term (default 0.5)")
    p.add_argument("--out", help="new run folder for the student")
    p.add_argument("--resume", metavar="RUN", help="continue the distillation run in RUN")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. model.embed_dim=64")
    p.set_defaults(func=cmd_distill)


def cmd_distill(args: argparse.Namespace) -> int:
    from ravit.training.distill import DistillConfig, distill, resume_distill, student_config

    progress = not args.no_progress and sys.stderr.isatty()
    settings = {k: getattr(args, k) for k in DISTILL_FLAGS if getattr(args, k) is not None}
    if args.resume:
        flags = _flag_updates(args)
        if set(flags) - {"train"} or args.config or args.teacher or settings:
            raise UsageError(
                "ravit distill --resume RUN: only train settings may change on resume "
                "(the teacher and the distillation settings are in RUN/distill.json)"
            )
        overrides = [f"train.{k}={v}" for k, v in flags.get("train", {}).items()]
        resume_distill(args.resume, overrides + args.overrides, progress=progress,
                       on_epoch=_print_epoch)  # fmt: skip
        print(f"resumed and finished: {args.resume}")
        return 0
    if not args.teacher:
        raise UsageError("ravit distill: give --teacher RUN (a trained run) and --out RUN")
    if not args.out:
        raise UsageError("ravit distill: give --out RUN (a new folder) or --resume RUN")
    cfg = student_config(args.teacher, args.config, args.overrides, flags=_flag_updates(args))
    distill(args.out, args.teacher, cfg, DistillConfig(**settings), progress=progress,
            on_epoch=_print_epoch)  # fmt: skip
    print(f"student run saved in {args.out} (teacher and settings in distill.json)")
    return 0
