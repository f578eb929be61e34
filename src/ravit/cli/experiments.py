"""`ravit demo`, `ravit suite` and `ravit report`: experiments and their reports."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ravit.cli.common import UsageError, int_list, name_list
from ravit.cost import format_flops


def add_parsers(sub) -> None:
    p = sub.add_parser("demo", help="train a small RAViT and a ViT on digits, show the trade-off")
    p.add_argument("--out", help="folder for the two runs (default runs/demo-TIMESTAMP)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("suite", help="train an experiment suite (configs/suite/*.yaml), report it")
    p.add_argument("suite", metavar="SUITE.yaml", help="suite file: run config + runs to train")
    p.add_argument("--out", help="folder of the runs (default runs/suite-NAME)")
    p.add_argument("--data", help="override the suite's data spec (e.g. your own copy)")
    p.add_argument("--epochs", type=int, help="override the suite's epochs")
    p.add_argument("--no-report", action="store_true", help="train only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="run-config overrides")
    p.set_defaults(func=cmd_suite)

    p = sub.add_parser("report", help="tables, CSV and plots (accuracy vs FLOPs) from runs")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or folders holding runs")
    p.add_argument("--out", required=True, help="folder for report.md, CSV files and PNG plots")
    p.add_argument(
        "--reference",
        metavar="LAYERS",
        help="baseline of '%% of FLOPs' (default: a 4-layer plain ViT, else the dearest model)",
    )
    p.add_argument("--title", help="title of the report and plots (default: the data set)")
    p.add_argument("--budgets", type=_fractions, metavar="F,F,...",
                   help="early-exit budgets, fractions of the reference's FLOPs: 0.8,0.7 or "
                        "80%%,70%% (default: Table I's 72%%,61%%)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_report)

    add_search_parser(sub)


def cmd_demo(args: argparse.Namespace) -> int:
    from ravit.demo import run_demo
    from ravit.reports.tables import early_exit_table

    out = Path(args.out or time.strftime("runs/demo-%Y%m%d-%H%M%S"))
    print(f"ravit demo: RAViT 1-2 and its twin ViT 0-3 on scikit-learn's 8x8 digits, "
          f"{args.epochs} epochs each, on the CPU; runs in {out}/", flush=True)  # fmt: skip
    start = time.perf_counter()

    def on_epoch(name: str, r: dict) -> None:
        if r["epoch"] % 10 == 0 or r["epoch"] == args.epochs:
            val = "/".join(f"{100 * a:.1f}" for a in r.get("val_acc_exits", []))
            print(f"  {name:<10} epoch {r['epoch']:>3}  loss {r['train_loss']:.3f}  "
                  f"val acc % {val}", flush=True)  # fmt: skip

    rep = run_demo(out, epochs=args.epochs, seed=args.seed, on_epoch=on_epoch)
    vit_flops = rep.vit_cost.total_flops
    n = len(rep.ravit.logits.labels)
    print(f"\ntest split ({n} images)          accuracy      FLOPs  % of ViT FLOPs")
    rows = [("ViT 0-3", rep.vit.logits.accuracy()[-1], vit_flops)]
    raccs = rep.ravit.logits.accuracy()
    rows.append(("RAViT 1-2, no early exit", raccs[-1], rep.ravit_cost.total_flops))
    rows.append(("RAViT 1-2, exit 1 only", raccs[0], rep.ravit_cost.exits[0].cumulative_flops))
    for name, acc, flops in rows:
        print(f"{name:<32} {100 * acc:>7.2f}% {format_flops(flops):>10} "
              f"{100 * flops / vit_flops:>13.1f}%")  # fmt: skip
    print("\nearly-exit trade-off of RAViT 1-2 on the test split (one entropy threshold):")
    print(early_exit_table(rep.tradeoff))
    print(f"plot: {rep.plot}")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


def cmd_suite(args: argparse.Namespace) -> int:
    from ravit.reports.suite import load_suite, train_suite

    suite = load_suite(args.suite)
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.spec={args.data}")
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    out = Path(args.out or f"runs/suite-{suite.name}")
    cfg0 = suite.run_config(suite.runs[0], overrides)
    print(f"suite {suite.name}: {len(suite.runs)} runs of {cfg0.train.epochs} epochs on "
          f"{cfg0.data.spec}, into {out}/", flush=True)  # fmt: skip
    start = time.perf_counter()

    def on_run(run, state: str) -> None:
        what = {"done": "finished, reused", "resume": "resuming", "new": "training",
                "busy": "being trained by another process: skipped"}[state]  # fmt: skip
        print(f"[{time.perf_counter() - start:6.0f} s] {run.name}: {what}", flush=True)

    def on_epoch(run, r: dict) -> None:
        val = "/".join(f"{100 * a:.1f}" for a in r.get("val_acc_exits", []))
        print(f"    epoch {r['epoch']:>3}  loss {r['train_loss']:.3f}  val acc % {val}  "
              f"{r['images_per_s']:.0f} img/s", flush=True)  # fmt: skip

    progress = not args.no_progress and sys.stderr.isatty()
    runs = train_suite(suite, out, overrides=overrides, progress=progress, on_run=on_run,
                       on_epoch=on_epoch)  # fmt: skip
    print(f"trained {len(runs)} runs in {time.perf_counter() - start:.0f} s", flush=True)
    if len(runs) < len(suite.runs):
        print(f"{len(suite.runs) - len(runs)} run(s) skipped: another process trains them; "
              "the report covers the others", flush=True)  # fmt: skip
    if args.no_report:
        return 0
    return _report([str(r) for r in runs], str(out / "report"), title=suite.name,
                   progress=progress)  # fmt: skip


def _fractions(text: str) -> tuple[float, ...]:
    """ "0.8,0.7" or "80%,70%" -> (0.8, 0.7); each in (0, 1]."""
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = float(part[:-1]) / 100 if part.endswith("%") else float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a fraction (0.7) or a percentage (70%)"
            ) from None
        if not 0 < value <= 1:
            raise argparse.ArgumentTypeError(f"budget {part!r} must be in (0, 100 %]")
        out.append(value)
    return tuple(out)


def _report(runs: list[str], out: str, *, reference: str | None = None,
            title: str | None = None, progress: bool = False,
            budgets: tuple[float, ...] | None = None) -> int:  # fmt: skip
    from ravit.reports.report import build_report

    def on_run(r) -> None:
        print(f"  evaluated {r.run}: {r.layers}, seed {r.seed}, test top-1 "
              f"{100 * r.accuracy:.2f} %", flush=True)  # fmt: skip

    rep = build_report(runs, out, reference=reference, title=title, progress=progress,
                       on_run=on_run, **({"budgets": budgets} if budgets else {}))  # fmt: skip
    print(f"\nTable I analogue ({rep.groups[0].runs[0].data}, reference {rep.reference.layers}):")
    print(rep.table)
    print(f"\nreport: {rep.out / 'report.md'}")
    for f in rep.files:
        print(f"  {f}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ravit.runs.folder import epochs_trained, find_runs

    runs = find_runs(args.runs)  # run folders, or folders of run folders (a suite's --out)
    if not runs:
        raise UsageError("ravit report: no run folders found in " + " ".join(args.runs))
    named = {str(Path(r)) for r in args.runs}
    kept = []
    for run in runs:  # a run still training, found in a folder, would pass for a finished one
        done, asked = epochs_trained(run)
        if done >= asked or str(Path(run)) in named:
            kept.append(run)
            if done < asked:
                print(f"note: {run} has trained {done} of its {asked} epochs", flush=True)
        else:
            print(f"left out: {run} has trained {done} of its {asked} epochs (name it to "
                  "include it)", flush=True)  # fmt: skip
    if not kept:
        raise UsageError("ravit report: no finished runs in " + " ".join(args.runs))
    runs = kept
    progress = not args.no_progress and sys.stderr.isatty()
    return _report(runs, args.out, reference=args.reference, title=args.title, progress=progress,
                   budgets=args.budgets)  # fmt: skip


# -- search -----------------------------------------------------------------------


def add_search_parser(sub) -> None:
    p = sub.add_parser("search", help="search the layer allocation for a FLOPs budget (Optuna)")
    p.add_argument("--data", required=True, help="data spec, e.g. cifar10:PATH")
    p.add_argument("--budget", required=True,
                   help="average FLOPs per image: 70%% (of --reference), 60M, 1.2G")  # fmt: skip
    p.add_argument("--preset", default="cifar10", help="model preset (width, heads, patch)")
    p.add_argument(
        "--reference",
        metavar="LAYERS",
        help="the model a %% budget is of (default: the preset's plain ViT, e.g. 0-4)",
    )
    p.add_argument(
        "--depths",
        action="append",
        metavar="LOW:HIGH,...",
        help="depth range per branch, e.g. 0:2,1:4 (repeat for other branch counts)",
    )
    p.add_argument(
        "--resolutions",
        type=int_list,
        help="sides the branches before the last may take (default: the preset's)",
    )
    p.add_argument(
        "--heads",
        type=name_list,
        default=("linear",),
        help="exit heads to choose from, e.g. linear,mlp (default linear)",
    )
    p.add_argument("--trials", type=int, default=20, help="trials in the study, all workers")
    p.add_argument("--epochs", type=int, default=10, help="epochs of a trial never pruned")
    p.add_argument("--pruner", default="hyperband", choices=("hyperband", "halving", "none"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", help="SQLAlchemy URL of the study (default: OUT/study.db)")
    p.add_argument("--study", help="study name in the storage (default ravit-search)")
    p.add_argument("--out", required=True, help="folder of the search: trials, tables, plot")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="run-config overrides")
    p.set_defaults(func=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    import importlib.util

    from ravit.config import PRESETS, model_config

    if importlib.util.find_spec("optuna") is None:
        raise UsageError("ravit search needs Optuna: pip install 'ravit[search]'")
    from ravit.cost import model_cost
    from ravit.exits.budget import parse_budget
    from ravit.search.outputs import write_outputs
    from ravit.search.space import SearchSpace, default_space, parse_depths, plain_vit
    from ravit.search.study import (
        SearchSettings,
        best_trial,
        distinct_allocations,
        results,
        run_search,
    )

    if args.preset not in PRESETS:
        raise UsageError(f"unknown preset {args.preset!r}; expected one of {sorted(PRESETS)}")
    base = default_space(args.preset)
    space = SearchSpace(
        args.preset,
        parse_depths(args.depths) if args.depths else base.depths,
        tuple(args.resolutions) if args.resolutions else base.resolution_choices,
        tuple(args.heads),
    )
    reference = args.reference or plain_vit(args.preset)
    ref_flops = model_cost(model_config(args.preset, reference)).total_flops
    budget = parse_budget(args.budget, ref_flops)
    settings = SearchSettings(args.data, budget, args.epochs, args.trials, args.pruner,
                              args.seed, tuple(args.overrides))  # fmt: skip
    out = Path(args.out)
    refs = {f"ViT {reference}": ref_flops,
            f"RAViT {PRESETS[args.preset].default_layers} (the paper's)":
                model_cost(model_config(args.preset)).total_flops}  # fmt: skip
    print(f"search: {len(space.allocations())} allocations, budget {format_flops(budget)} "
          f"({100 * budget / ref_flops:.1f}% of ViT {reference}), {args.trials} trials of up to "
          f"{args.epochs} epochs, into {out}/", flush=True)  # fmt: skip
    start = time.perf_counter()

    def on_trial(study, trial) -> None:
        best = best_trial(study)
        value = f" {100 * trial.value:.2f}%" if trial.state.name == "COMPLETE" else ""
        again = " (drawn again: reused)" if "duplicate_of" in trial.user_attrs else ""
        best_text = f"{best.attrs['allocation']} {100 * best.value:.2f}%" if best else "-"
        seen = len(distinct_allocations(study))
        print(f"[{time.perf_counter() - start:6.0f} s] allocation {seen} of {args.trials} "
              f"(trial {trial.number}): {trial.user_attrs.get('allocation', '?')}"
              f" {trial.state.name.lower()}{value}{again}; best so far {best_text}",
              flush=True)  # fmt: skip
        write_outputs(out, results(study), refs, budget)

    progress = not args.no_progress and sys.stderr.isatty()
    study = run_search(out, space, settings, storage=args.storage, name=args.study,
                       progress=progress, on_trial=on_trial)  # fmt: skip
    files = write_outputs(out, results(study), refs, budget)
    b = best_trial(study)
    if b is not None:
        print(
            f"best: {b.attrs['allocation']}: val accuracy {100 * b.value:.2f}% at "
            f"{format_flops(b.attrs['ee_flops'])} on average; run {b.attrs['run']}"
        )
    for f in files:
        print(f"  {f}")
    return 0
