"""`ravit train` and `ravit distill`: new runs, resumed runs, students of a teacher run.

A student's settings start from the teacher's run config (its data, split,
schedule and model) and change where the flags or key=value overrides say,
e.g. `--layers 1-1` or `--embed-dim 64`. docs/distillation.md has the loss.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ravit.cli.common import (
    EXIT_USAGE,
    UsageError,
    add_model_args,
    flag_updates,
    print_epoch,
    resume_overrides,
)
from ravit.config.run import AMP_MODES

DISTILL_FLAGS = ("temperature", "alpha", "beta")


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train a RAViT (or resume a run)")
    p.add_argument("--config", help="YAML file with model/data/train sections")
    add_model_args(p)
    p.add_argument("--data", help="data spec, e.g. cifar10:PATH, fashion-mnist:PATH, digits")
    p.add_argument("--val-size", type=float, help="validation split: count or fraction")
    p.add_argument(
        "--train-size", type=float, help="train on a seeded subset: count or fraction (default all)"
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch of one step, all processes")
    p.add_argument("--grad-accum", type=int, help="micro-batches per step (default 1)")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--amp", choices=AMP_MODES)
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile the model")
    p.add_argument("--workers", type=int, help="data-loading processes (default: auto)")
    p.add_argument("--out", help="new run folder")
    p.add_argument(
        "--init",
        metavar="RUN",
        help="start from RUN's weights and settings (ravit convert, a finished run)",
    )
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.lr=5e-4")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="train a student RAViT from a trained teacher run")
    p.add_argument("--teacher", metavar="RUN", help="the trained teacher's run folder")
    p.add_argument("--config", help="YAML file with model/data/train sections for the student")
    add_model_args(p)
    p.add_argument("--data", help="data spec (default: the teacher's)")
    p.add_argument("--train-size", type=float, help="train on a seeded subset: count or fraction")
    p.add_argument("--epochs", type=int, help="default: the teacher's")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, help="default: the teacher's (and so its val split)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--amp", choices=AMP_MODES)
    g = p.add_argument_group("distillation (defaults in docs/distillation.md)")
    g.add_argument("--temperature", type=float, help="T, softens the KL term (default 4)")
    g.add_argument("--alpha", type=float, help="weight of the KL term (default 1)")
    g.add_argument("--beta", type=float, help="weight of the entropy term (default 0.5)")
    p.add_argument("--out", help="new run folder for the student")
    p.add_argument("--resume", metavar="RUN", help="continue the distillation run in RUN")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. model.embed_dim=64")
    p.set_defaults(func=cmd_distill)


def _progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def _new_run(command: str, args: argparse.Namespace, train: Callable[[], object]) -> None:
    """Run `train` into args.out; a folder that holds a run gets the flags that fix it."""
    from ravit.runs.folder import RunExistsError

    try:
        train()
    except RunExistsError as err:
        raise UsageError(
            f"{err.run} already holds a run: resume it with ravit {command} --resume "
            f"{err.run}, or choose another --out"
        ) from None


def cmd_train(args: argparse.Namespace) -> int:
    """Alone, or in every process of a torchrun launch: only rank 0 prints."""
    from ravit.training.distributed import PeerError, is_main_process

    main_process = is_main_process()
    try:
        done = _train(args, progress=main_process and _progress(args),
                      on_epoch=print_epoch if main_process else None)  # fmt: skip
    except PeerError:
        return EXIT_USAGE  # another process failed; rank 0 reports why
    if main_process:
        print(done)
        run = args.resume or args.out
        if (dropped := _dropped(run)) is not None:
            print(dropped)
    return 0


def _dropped(run: str) -> str | None:
    """The line saying how many unreadable files were left out (skip_bad=1), if any."""
    from ravit.runs.folder import DROPPED, read_dropped

    count = read_dropped(run)["count"]
    if not count:
        return None
    files = f"{count} unreadable image file{'s' if count != 1 else ''}"
    return f"{files} left out (skip_bad=1): listed in {run}/{DROPPED}"


def _train(args: argparse.Namespace, *, progress: bool, on_epoch: Callable | None) -> str:
    from ravit.config import resolve_config
    from ravit.training import fit

    if args.resume:
        if args.init:
            raise UsageError("ravit train: --init starts a new run; --resume continues one")
        overrides = resume_overrides(args, "train")
        fit(args.resume, resume=True, overrides=overrides, progress=progress, on_epoch=on_epoch)
        return f"resumed and finished: {args.resume}"
    if not args.out:
        raise UsageError("ravit train: give --out RUN (a new folder) or --resume RUN")
    base, overrides = None, list(args.overrides)
    if args.init:  # the starting run's settings, its weights through train.init
        from ravit.runs.folder import read_config

        base, _ = read_config(args.init)
        overrides.append(f"train.init={args.init}")
    cfg = resolve_config(args.config, overrides, base=base, flags=flag_updates(args))
    _new_run("train", args, lambda: fit(args.out, cfg, progress=progress, on_epoch=on_epoch))
    return f"run saved in {args.out} (checkpoint.pt, metrics.jsonl, config.yaml)"


def cmd_distill(args: argparse.Namespace) -> int:
    from ravit.training.distill import DistillConfig, distill, resume_distill, student_config

    progress = _progress(args)
    settings = {k: getattr(args, k) for k in DISTILL_FLAGS if getattr(args, k) is not None}
    if args.resume:
        why = " (the teacher and the distillation settings are in RUN/distill.json)"
        fixed = bool(args.teacher or settings)
        overrides = resume_overrides(args, "distill", also_fixed=fixed, why=why)
        resume_distill(args.resume, overrides, progress=progress, on_epoch=print_epoch)
        print(f"resumed and finished: {args.resume}")
        return 0
    if not args.teacher:
        raise UsageError("ravit distill: give --teacher RUN (a trained run) and --out RUN")
    if not args.out:
        raise UsageError("ravit distill: give --out RUN (a new folder) or --resume RUN")
    cfg = student_config(args.teacher, args.config, args.overrides, flags=flag_updates(args))
    _new_run("distill", args, lambda: distill(args.out, args.teacher, cfg,
                                              DistillConfig(**settings), progress=progress,
                                              on_epoch=print_epoch))  # fmt: skip
    print(f"student run saved in {args.out} (teacher and settings in distill.json)")
    return 0
