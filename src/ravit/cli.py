"""The `ravit` command line: the only place that parses argv, prints and exits.

`main(argv)` returns an exit code and never raises for bad input, so tests
drive the real CLI in-process. Bad input ends with one line on stderr,
"ravit: error: ...", and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from ravit.config import EXIT_HEADS, PRESETS, ModelConfig, model_config
from ravit.cost import format_flops, model_cost
from ravit.export.command import add_export_parser

EXIT_USAGE = 2
POLICY_CHOICES = ["entropy", "normalized-entropy", "confidence"]


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would sys.exit(2) itself
        raise UsageError(f"{self.prog}: {message}")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, e.g. 16,32; got {text!r}"
        ) from None


def add_model_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--preset", required=required, help=f"one of: {', '.join(PRESETS)}")
    g.add_argument("--layers", help="layers per branch, e.g. 1-3, 2-0-3, 0-4 (plain ViT)")
    g.add_argument("--resolutions", type=_int_list, help="one side per branch, e.g. 16,32")
    g.add_argument("--heads", type=int, dest="num_heads", help="attention heads")
    g.add_argument("--mlp-dim", type=int, help="MLP hidden size (default 4 x embed dim)")
    g.add_argument("--embed-dim", type=int, help="embedding dimension D")
    g.add_argument("--num-classes", type=int, help="number of classes")
    g.add_argument(
        "--exit-heads",
        type=_name_list,
        help=f"exit head per exit (or one for all), e.g. mlp,linear: {', '.join(EXIT_HEADS)}",
    )


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def model_config_from_args(args: argparse.Namespace, **extra) -> ModelConfig:
    return model_config(
        args.preset,
        args.layers,
        resolutions=args.resolutions,
        exit_heads=args.exit_heads,
        num_heads=args.num_heads,
        mlp_dim=args.mlp_dim,
        embed_dim=args.embed_dim,
        num_classes=args.num_classes,
        **extra,
    )


# -- presets ------------------------------------------------------------------


def cmd_presets(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps({name: _preset_dict(p) for name, p in PRESETS.items()}, indent=2))
        return 0
    head = f"{'preset':<14} {'image':>5} {'patch':>5} {'D':>4} {'heads':>5} {'MLP':>5} "
    head += f"{'classes':>7} {'chans':>5}  {'resolutions':<12} {'layers':<7} description"
    print(head)
    for p in PRESETS.values():
        res = "/".join(map(str, p.resolutions))
        print(
            f"{p.name:<14} {p.image_size:>5} {p.patch_size:>5} {p.embed_dim:>4} "
            f"{p.num_heads:>5} {p.mlp_dim:>5} {p.num_classes:>7} {p.in_chans:>5}  "
            f"{res:<12} {p.default_layers:<7} {p.description}"
        )
    return 0


def _preset_dict(p) -> dict:
    return {
        "image_size": p.image_size,
        "patch_size": p.patch_size,
        "embed_dim": p.embed_dim,
        "num_heads": p.num_heads,
        "mlp_dim": p.mlp_dim,
        "num_classes": p.num_classes,
        "in_chans": p.in_chans,
        "resolutions": list(p.resolutions),
        "default_layers": p.default_layers,
        "description": p.description,
    }


# -- flops --------------------------------------------------------------------


def cmd_flops(args: argparse.Namespace) -> int:
    if args.paper:
        return _print_paper_table(args.json)
    if not args.preset:
        raise UsageError("ravit flops: give --preset NAME (or --paper)")
    cfg = model_config_from_args(args)
    cost = model_cost(cfg)
    if args.json:
        out = {"preset": args.preset, "layers": cfg.layers, **cost.to_dict()}
        for e in out["exits"]:  # 1-based for people, as the paper numbers branches
            e["exit"] += 1
            e["branch"] += 1
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"RAViT {cfg.layers}  (preset {args.preset}: {cfg.image_size} px, patch "
        f"{cfg.patch_size}, D {cfg.embed_dim}, MLP {cfg.mlp_dim}, {cfg.num_heads} heads)"
    )
    print(f"{'exit':>4} {'branch':>6} {'res':>5} {'layers':>6} {'tokens':>6} {'branch FLOPs':>13} "
          f"{'exit head':>11} {'head FLOPs':>11} {'cumulative':>12}")  # fmt: skip
    for e in cost.exits:
        print(
            f"{e.exit + 1:>4} {e.branch + 1:>6} {e.resolution:>5} {e.layers:>6} {e.tokens:>6} "
            f"{format_flops(e.branch_flops):>13} {e.head:>11} {format_flops(e.head_flops):>11} "
            f"{format_flops(e.cumulative_flops):>12}"
        )
    print(f"total, no early exit: {format_flops(cost.total_flops)}  ({cost.total_flops} FLOPs)")
    return 0


def _print_paper_table(as_json: bool) -> int:
    from ravit.reports.paper import PAPER_COSTS

    rows = []
    for row in PAPER_COSTS:
        cost = model_cost(model_config(row.preset, row.layers))
        ours = format_flops(cost.total_flops)
        first = format_flops(cost.exits[0].cumulative_flops) if row.first_exit else None
        ok = ours == row.flops and first == row.first_exit
        rows.append((row, ours, first, ok))
    if as_json:
        print(json.dumps([
            {"dataset": r.dataset, "model": r.model, "preset": r.preset, "layers": r.layers,
             "paper": r.flops, "ours": ours, "paper_first_exit": r.first_exit,
             "ours_first_exit": first, "match": ok}
            for r, ours, first, ok in rows
        ], indent=2))  # fmt: skip
    else:
        print(f"{'dataset':<14} {'model':<14} {'command':<48} {'paper':>9} {'ours':>9}  match")
        for r, ours, first, ok in rows:
            cmd = f"ravit flops --preset {r.preset} --layers {r.layers}"
            extra = f"  (exit 1: paper {r.first_exit}, ours {first})" if r.first_exit else ""
            print(
                f"{r.dataset:<14} {r.model:<14} {cmd:<48} {r.flops:>9} {ours:>9}  "
                f"{'yes' if ok else 'NO'}{extra}"
            )
    return 0 if all(ok for *_, ok in rows) else 1


# -- train --------------------------------------------------------------------

TRAIN_FLAGS = {  # flag dest -> config key (flags are shorthands for key=value)
    "preset": "model.preset",
    "layers": "model.layers",
    "resolutions": "model.resolutions",
    "num_heads": "model.num_heads",
    "mlp_dim": "model.mlp_dim",
    "embed_dim": "model.embed_dim",
    "num_classes": "model.num_classes",
    "exit_heads": "model.exit_heads",
    "data": "data.spec",
    "val_size": "data.val_size",
    "train_size": "data.train_size",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "grad_accum": "train.grad_accum",
    "compile": "train.compile",
    "workers": "data.workers",
    "lr": "train.lr",
    "seed": "train.seed",
    "device": "train.device",
    "amp": "train.amp",
}


def _flag_updates(args: argparse.Namespace) -> dict[str, dict]:
    updates: dict[str, dict] = {}
    for dest, key in TRAIN_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            section, name = key.split(".")
            updates.setdefault(section, {})[name] = (
                list(value) if isinstance(value, tuple) else value
            )
    return updates


def _print_epoch(record: dict) -> None:
    acc = "/".join(f"{100 * a:.1f}" for a in record["train_acc_exits"])
    line = (
        f"epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  train acc % {acc}"
        f"  lr {record['lr']:.2e}  {record['images_per_s']:.0f} img/s"
    )
    if "val_acc_exits" in record:
        line += "  val acc % " + "/".join(f"{100 * a:.1f}" for a in record["val_acc_exits"])
    print(line, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    """Alone, or in every process of a torchrun launch: only rank 0 prints."""
    from ravit.training.distributed import PeerError, is_main_process

    main_process = is_main_process()
    try:
        done = _train(args, progress=main_process and not args.no_progress and sys.stderr.isatty(),
                      on_epoch=_print_epoch if main_process else None)  # fmt: skip
    except PeerError:
        return EXIT_USAGE  # another process failed; rank 0 reports why
    if main_process:
        print(done)
    return 0


def _train(args: argparse.Namespace, *, progress: bool, on_epoch: Callable | None) -> str:
    from ravit.training import fit, resolve_config

    if args.resume:
        flags = _flag_updates(args)
        if set(flags) - {"train"} or args.config:
            raise UsageError("ravit train --resume RUN: only train settings may change on resume")
        overrides = [f"train.{k}={v}" for k, v in flags.get("train", {}).items()]
        fit(args.resume, resume=True, overrides=overrides + args.overrides, progress=progress,
            on_epoch=on_epoch)  # fmt: skip
        return f"resumed and finished: {args.resume}"
    if not args.out:
        raise UsageError("ravit train: give --out RUN (a new folder) or --resume RUN")
    cfg = resolve_config(args.config, args.overrides, flags=_flag_updates(args))
    fit(args.out, cfg, progress=progress, on_epoch=on_epoch)
    return f"run saved in {args.out} (checkpoint.pt, metrics.jsonl, config.yaml)"


# -- eval ---------------------------------------------------------------------


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, e.g. 0.05 or 0.1,0.2; got {text!r}"
        ) from None


def cmd_eval(args: argparse.Namespace) -> int:
    from ravit.evaluation import evaluate_run
    from ravit.exits import simulate, sweep
    from ravit.reports.tables import anytime_table, early_exit_table
    from ravit.training import select_device

    device = select_device(args.device)
    progress = sys.stderr.isatty()
    ev = evaluate_run(args.run, data_spec=args.data, split=args.split, device=device,
                      progress=progress)  # fmt: skip
    cost = model_cost(ev.model.cfg)
    lg, labels = ev.logits.logits, ev.logits.labels
    results, saved = [], None
    if args.sweep:
        results = sweep(lg, labels, cost, args.policy)
    elif args.thresholds is not None:
        results = [simulate(lg, labels, cost, t, args.policy) for t in _threshold_sets(args)]
    elif (saved := _saved_calibration(args.run)) is not None:  # ravit calibrate's thresholds
        args.policy = saved.policy
        results = [simulate(lg, labels, cost, saved.thresholds, saved.policy)]
    baselines = [_baseline_point(b, args, device) for b in args.baseline]
    plot = _eval_plot(args, ev, cost, results, baselines) if args.sweep else None
    if args.json:
        print(json.dumps(_eval_json(args, ev, cost, results, baselines, plot), indent=2))
        return 0
    print(f"{args.run}: RAViT {ev.model.cfg.layers} on the {args.split} split "
          f"({len(labels)} images{', cached logits' if ev.cached else ''})")  # fmt: skip
    print(anytime_table(cost, ev.logits.accuracy()))
    if results:
        print()
        if saved is not None:
            print(f"at the calibrated thresholds of {args.run}/thresholds.json:")
        print(early_exit_table(results, args.policy))
    for name, flops, acc in baselines:
        print(f"baseline {name}: {100 * acc:.2f}% at {format_flops(flops)}")
    if plot:
        print(f"plot: {plot}")
    return 0


def _saved_calibration(run: str):
    from ravit.exits import Calibration
    from ravit.training import run as runfs

    saved = runfs.read_thresholds(run)
    return None if saved is None else Calibration.from_dict(saved["calibration"])


def _threshold_sets(args: argparse.Namespace) -> list:
    """--thresholds 0.1,0.2 is one setting (per exit); --thresholds 0.1 --thresholds 0.2 two."""
    return [t[0] if len(t) == 1 else t for t in args.thresholds]


def _baseline_point(run: str, args: argparse.Namespace, device) -> tuple[str, int, float]:
    from ravit.evaluation import evaluate_run

    ev = evaluate_run(run, data_spec=args.data, split=args.split, device=device)
    return run, model_cost(ev.model.cfg).total_flops, ev.logits.accuracy()[-1]


def _eval_plot(args, ev, cost, results, baselines):
    from pathlib import Path

    from ravit.reports.plots import plot_tradeoff

    path = Path(args.plot) if args.plot else Path(args.run) / f"eval-{args.split}-sweep.png"
    curves = {
        f"RAViT {ev.model.cfg.layers} early exit": [(r.avg_flops, r.accuracy) for r in results]
    }
    points = {
        f"exits of {ev.model.cfg.layers}": list(zip(cost.cumulative_flops, ev.logits.accuracy()))
    }
    for name, flops, acc in baselines:
        points[f"baseline {Path(name).name}"] = [(flops, acc)]
    return plot_tradeoff(path, curves, points, title=f"{args.run} ({args.split})")


def _eval_json(args, ev, cost, results, baselines, plot) -> dict:
    accs = ev.logits.accuracy()
    return {
        "run": str(args.run),
        "split": args.split,
        "images": len(ev.logits.labels),
        "layers": ev.model.cfg.layers,
        "total_flops": cost.total_flops,
        "exits": [
            {
                "exit": e.exit + 1,
                "resolution": e.resolution,
                "cumulative_flops": e.cumulative_flops,
                "accuracy": a,
            }
            for e, a in zip(cost.exits, accs)
        ],  # fmt: skip
        "policy": args.policy,
        "early_exit": [r.to_dict() for r in results],
        "baselines": [{"run": n, "flops": f, "accuracy": a} for n, f, a in baselines],
        "plot": str(plot) if plot else None,
    }


# -- calibrate / control --------------------------------------------------------


def parse_budget(text: str, total_flops: int) -> float:
    """'0.7' or '70%' -> a fraction of the full path; '60M', '1.2G', '6e7' -> absolute FLOPs."""
    t = text.strip().upper()
    scale = {"%": 0.01 * total_flops, "M": 1e6, "G": 1e9}.get(t[-1:]) if t else None
    try:
        value = float(t[:-1] if scale else t)
    except ValueError:
        raise UsageError(
            f"budget {text!r}: expected a fraction of the full path (0.7 or 70%) or FLOPs "
            "(60M, 1.2G, 6e7)"
        ) from None
    if value <= 0:
        raise UsageError(f"budget {text!r} must be positive")
    if scale:
        return value * scale
    return value * total_flops if value <= 1 else value


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ravit.evaluation import evaluate_run
    from ravit.exits import calibrate_budget, calibrate_max_drop, simulate
    from ravit.reports.tables import early_exit_table
    from ravit.training import run as runfs
    from ravit.training import select_device

    device = select_device(args.device)
    val = evaluate_run(args.run, data_spec=args.data, split="val", device=device)
    test = evaluate_run(args.run, data_spec=args.data, split="test", device=device)
    cost = model_cost(val.model.cfg)
    if cost.exits[-1].exit == 0:
        raise UsageError(f"{args.run} has a single exit: there is no threshold to calibrate")
    lv, lt = val.logits, test.logits
    if args.budget is not None:
        budget = parse_budget(args.budget, cost.total_flops)
        cal = calibrate_budget(lv.logits, lv.labels, cost, budget, args.policy)
    else:
        if not 0 <= args.max_drop < 100:
            raise UsageError(f"--max-drop {args.max_drop}: expected accuracy points in [0, 100)")
        cal = calibrate_max_drop(lv.logits, lv.labels, cost, args.max_drop / 100, args.policy)
    realized = simulate(lt.logits, lt.labels, cost, cal.thresholds, cal.policy)
    full = simulate(lt.logits, lt.labels, cost, None, cal.policy)
    saved = {"calibration": cal.to_dict(), "test": realized.to_dict(),
             "test_no_early_exit": full.to_dict(), "total_flops": cost.total_flops}  # fmt: skip
    runfs.write_json(Path(args.run) / runfs.THRESHOLDS, saved)
    if args.json:
        print(json.dumps(saved, indent=2))
        return 0
    print(f"{args.run}: calibrated {cal.policy} thresholds for {_target_text(cal.target, cost)}")
    print(early_exit_table([cal.predicted], cal.policy).replace("thresholds", "(val)       ", 1))
    print(early_exit_table([realized], cal.policy).split("\n", 1)[1] + "   <- test")
    print(early_exit_table([full], cal.policy).split("\n", 1)[1] + "   <- test, no early exit")
    print(f"saved in {Path(args.run) / runfs.THRESHOLDS}: used by default by eval and predict")
    return 0


def _target_text(target: dict, cost) -> str:
    if "budget_flops" in target:
        b = target["budget_flops"]
        return f"a budget of {format_flops(b)} ({100 * b / cost.total_flops:.1f}% of the full path)"
    return f"an accuracy drop of at most {100 * target['max_drop']:.2f} points"


BAND = 0.05  # the controller's promise: window average within 5 % of the target


def _settled(errors: list[float], band: float) -> str:
    """How many images after a change the relative error stays within band ("never")."""
    for i in range(len(errors) - 1, -1, -1):
        if errors[i] > band:
            return str(i + 1) if i + 1 < len(errors) else "never"
    return "0"


def cmd_control(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ravit.evaluation import evaluate_run
    from ravit.exits import BudgetController, control_table, simulate_stream
    from ravit.reports.plots import plot_controller
    from ravit.training import select_device

    device = select_device(args.device)
    val = evaluate_run(args.run, split="val", device=device)
    test = evaluate_run(args.run, split="test", device=device)
    cost = model_cost(val.model.cfg)
    table = control_table(val.logits.logits, val.logits.labels, cost, args.policy)
    n = len(test.logits.labels)
    step = max(1, n // len(args.targets))
    schedule = [(i * step, t) for i, t in enumerate(args.targets)]
    ctl = BudgetController(table, args.targets[0], window=min(args.window, n))
    trace = simulate_stream(test.logits.logits, cost, ctl, schedule, labels=test.logits.labels)
    plot = plot_controller(Path(args.plot or Path(args.run) / "control.png"), trace,
                           title=f"{args.run}: window {args.window}")  # fmt: skip
    err = trace.relative_error()
    print(f"{args.run}: budget control over the test stream ({n} images, window "
          f"{args.window}), targets {list(args.targets)} changing every {step} images")  # fmt: skip
    for i, (start, target) in enumerate(schedule):
        end = schedule[i + 1][0] if i + 1 < len(schedule) else n
        settle = min(end, start + args.window)
        worst = float(err[settle:end].max()) if settle < end else float("nan")
        within = _settled(err[start:end].tolist(), BAND)
        print(f"  target {100 * target:5.1f}%: window average at the end "
              f"{100 * float(trace.window_average[end - 1]):5.1f}%, within {100 * BAND:g}% "
              f"from {within} images after the change, worst error after {settle - start} "
              f"images {100 * worst:4.1f}%")  # fmt: skip
    print(f"accuracy {100 * trace.accuracy:.2f}%, mean cost {100 * trace.mean_cost:.1f}%"
          f" of the full path; plot: {plot}")  # fmt: skip
    return 0


# -- predict ------------------------------------------------------------------


def _predict_thresholds(args: argparse.Namespace, model, device) -> tuple[object, str, str]:
    """(thresholds, policy, where they came from): --thresholds, --budget, saved, or none."""
    if args.thresholds is not None:
        t = args.thresholds
        return (t[0] if len(t) == 1 else t), args.policy, "--thresholds"
    if args.budget is not None:
        from ravit.evaluation import evaluate_run
        from ravit.exits import calibrate_budget

        val = evaluate_run(args.run, split="val", device=device)
        cost = model_cost(model.cfg)
        budget = parse_budget(args.budget, cost.total_flops)
        cal = calibrate_budget(val.logits.logits, val.logits.labels, cost, budget, args.policy)
        return cal.thresholds, cal.policy, f"--budget {args.budget} (calibrated on val)"
    saved = _saved_calibration(args.run)
    if saved is not None:
        return saved.thresholds, saved.policy, f"{args.run}/thresholds.json"
    return None, args.policy, "none (no early exit)"


def cmd_predict(args: argparse.Namespace) -> int:
    if args.backend == "onnx":  # RUN is an export folder; no torch
        from ravit.export.command import onnx_predictions

        results, policy, source = onnx_predictions(args)
    else:
        from ravit.evaluation import load_run_model
        from ravit.runtime import predict
        from ravit.training import select_device

        device = select_device(args.device)
        model, state = load_run_model(args.run, device)
        taus, policy, source = _predict_thresholds(args, model, device)
        results = predict(model, state["data"], args.paths, taus, policy,
                          batch_size=args.batch_size, device=device)  # fmt: skip
    failed = answered = 0
    if not args.json:
        print(f"# thresholds: {source}; policy {policy}", flush=True)
    for r in results:
        if not r.ok:
            failed += 1
            print(f"ravit: error: {' '.join(r.message.split())}", file=sys.stderr, flush=True)
            continue
        answered += 1
        if args.json:
            print(json.dumps(r.to_dict()), flush=True)
        else:
            print(f"{r.path}\t{r.class_name}\tp={r.probability:.3f}\texit {r.exit}\t"
                  f"H={r.entropy:.3f}\t{format_flops(r.flops)}", flush=True)  # fmt: skip
    if failed:
        print(f"ravit: {failed} of {failed + answered} files failed", file=sys.stderr)
        return 1
    if answered == 0:
        raise UsageError(f"no image files found in {args.paths}")
    return 0


# -- demo ---------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

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


# -- suite and report ------------------------------------------------------------


def cmd_suite(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

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
        what = {"done": "finished, reused", "resume": "resuming", "new": "training"}[state]
        print(f"[{time.perf_counter() - start:6.0f} s] {run.name}: {what}", flush=True)

    def on_epoch(run, r: dict) -> None:
        val = "/".join(f"{100 * a:.1f}" for a in r.get("val_acc_exits", []))
        print(f"    epoch {r['epoch']:>3}  loss {r['train_loss']:.3f}  val acc % {val}  "
              f"{r['images_per_s']:.0f} img/s", flush=True)  # fmt: skip

    progress = not args.no_progress and sys.stderr.isatty()
    runs = train_suite(suite, out, overrides=overrides, progress=progress, on_run=on_run,
                       on_epoch=on_epoch)  # fmt: skip
    print(f"trained {len(runs)} runs in {time.perf_counter() - start:.0f} s", flush=True)
    if args.no_report:
        return 0
    return _report([str(r) for r in runs], str(out / "report"), title=suite.name,
                   progress=progress)  # fmt: skip


def _report(runs: list[str], out: str, *, reference: str | None = None,
            title: str | None = None, progress: bool = False) -> int:  # fmt: skip
    from ravit.reports.report import build_report

    def on_run(r) -> None:
        print(f"  evaluated {r.run}: {r.layers}, seed {r.seed}, test top-1 "
              f"{100 * r.accuracy:.2f} %", flush=True)  # fmt: skip

    rep = build_report(runs, out, reference=reference, title=title, progress=progress,
                       on_run=on_run)  # fmt: skip
    print(f"\nTable I analogue ({rep.groups[0].runs[0].data}, reference {rep.reference.layers}):")
    print(rep.table)
    print(f"\nreport: {rep.out / 'report.md'}")
    for f in rep.files:
        print(f"  {f}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ravit.training.run import CONFIG

    runs = []
    for path in args.runs:  # a run folder, or a folder of run folders (a suite's --out)
        p = Path(path)
        inner = sorted(p.glob(f"*/{CONFIG}")) if p.is_dir() else []
        runs += [str(c.parent) for c in inner] if not (p / CONFIG).exists() else [path]
    if not runs:
        raise UsageError("ravit report: no run folders found in " + " ".join(args.runs))
    progress = not args.no_progress and sys.stderr.isatty()
    return _report(runs, args.out, reference=args.reference, title=args.title, progress=progress)


# -- parser and entry points ----------------------------------------------------

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ravit",
        description="RAViT: Resolution-Adaptive Vision Transformer with early exits.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("presets", help="list the model presets")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("flops", help="analytic FLOPs per exit (the paper's cost model)")
    add_model_args(p, required=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--paper", action="store_true", help="reproduce the paper's FLOPs table")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("train", help="train a RAViT (or resume a run)")
    p.add_argument("--config", help="YAML file with model/data/train sections")
    add_model_args(p, required=False)
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
    p.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"])
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile the model")
    p.add_argument("--workers", type=int, help="data-loading processes (default: auto)")
    p.add_argument("--out", help="new run folder")
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.lr=5e-4")
    p.set_defaults(func=cmd_train)

    from ravit.cli_distill import add_distill_parser

    add_distill_parser(sub)

    p = sub.add_parser("eval", help="accuracy and FLOPs of a run, per exit and with early exit")
    p.add_argument("run", help="run folder")
    p.add_argument("--data", help="data spec (default: the one the run was trained on)")
    p.add_argument("--split", choices=["val", "test"], default="test")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--thresholds", type=_float_list, action="append",
                   help="per-exit thresholds (repeat for several settings)")  # fmt: skip
    g.add_argument("--sweep", action="store_true", help="sweep one threshold for all exits")
    p.add_argument("--policy", default="entropy", choices=POLICY_CHOICES)
    p.add_argument("--baseline", action="append", default=[], metavar="RUN",
                   help="plain-ViT run(s) to put on the plot")  # fmt: skip
    p.add_argument("--plot", help="PNG path for the sweep (default RUN/eval-SPLIT-sweep.png)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("calibrate", help="choose exit thresholds for a budget on the val split")
    p.add_argument("run", help="run folder")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--budget", help="average cost: 0.7 or 70%% of the full path, or 60M FLOPs")
    g.add_argument("--max-drop", type=float, help="accuracy points one may lose, e.g. 1.0")
    p.add_argument("--data", help="data spec (default: the one the run was trained on)")
    p.add_argument("--policy", default="entropy", choices=POLICY_CHOICES)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("control", help="simulate run-time budget control over the test stream")
    p.add_argument("run", help="run folder")
    p.add_argument("--targets", type=_float_list, default=(0.8, 0.6, 0.7),
                   help="fractions of the full path, in turn (default 0.8,0.6,0.7)")  # fmt: skip
    p.add_argument("--window", type=int, default=200, help="sliding window, images")
    p.add_argument("--policy", default="entropy", choices=POLICY_CHOICES)
    p.add_argument("--plot", help="PNG path (default RUN/control.png)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_control)

    p = sub.add_parser("predict", help="classify image files with early exit")
    p.add_argument("run", help="run folder (--backend onnx: an export folder, ravit export)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--thresholds", type=_float_list, help="per-exit thresholds, e.g. 0.5")
    g.add_argument("--budget", help="average cost (0.7, 70%%, 60M): thresholds solved on val")
    p.add_argument("--policy", default="entropy", choices=POLICY_CHOICES)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="one JSON object per image per line")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: the exported graphs on onnxruntime (docs/deploy.md)")  # fmt: skip
    p.set_defaults(func=cmd_predict)

    add_export_parser(sub)

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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except UsageError as err:
        return _fail(str(err))
    except BrokenPipeError:  # `ravit ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, OSError, FloatingPointError) as err:
        if os.environ.get("RAVIT_DEBUG"):
            raise
        return _fail(str(err))
    except KeyboardInterrupt:
        print("ravit: interrupted", file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    line = " ".join(message.split())  # one line, whatever the message held
    print(f"ravit: error: {line}", file=sys.stderr)
    return EXIT_USAGE


def entry() -> None:
    """Console-script entry point (`ravit`, `python -m ravit`).

    First re-executes the process with glibc malloc settings that keep freed
    tensor memory in the process (up to 1.6x faster on CPU, see
    ravit.allocator); RAVIT_NO_MALLOC_TUNING=1 opts out.
    """
    from ravit.allocator import reexec_with_tuned_allocator

    reexec_with_tuned_allocator()
    sys.exit(main())
