"""`ravit eval`, `ravit calibrate` and `ravit control`: a run's accuracy and cost per exit,
its thresholds for a budget, and run-time budget control over the test stream."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ravit.cli.common import UsageError, add_device_arguments, float_list
from ravit.cost import format_flops, model_cost
from ravit.exits.names import POLICIES

BAND = 0.05  # the controller's promise: window average within 5 % of the target


def add_parsers(sub) -> None:
    p = sub.add_parser("eval", help="accuracy and FLOPs of a run, per exit and with early exit")
    p.add_argument("run", help="run folder")
    p.add_argument("--data", help="data spec (default: the one the run was trained on)")
    p.add_argument("--split", choices=["val", "test"], default="test")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--thresholds", type=float_list, action="append",
                   help="per-exit thresholds (repeat for several settings)")  # fmt: skip
    g.add_argument("--sweep", action="store_true", help="sweep one threshold for all exits")
    p.add_argument("--policy", default="entropy", choices=POLICIES)
    p.add_argument("--baseline", action="append", default=[], metavar="RUN",
                   help="plain-ViT run(s) to put on the plot")  # fmt: skip
    p.add_argument("--plot", help="PNG path for the sweep (default RUN/eval-SPLIT-sweep.png)")
    add_device_arguments(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("calibrate", help="choose exit thresholds for a budget on the val split")
    p.add_argument("run", help="run folder")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--budget", help="average cost: 0.7 or 70%% of the full path, or 60M FLOPs")
    g.add_argument("--max-drop", type=float, help="accuracy points one may lose, e.g. 1.0")
    p.add_argument("--data", help="data spec (default: the one the run was trained on)")
    p.add_argument("--policy", default="entropy", choices=POLICIES)
    add_device_arguments(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("control", help="simulate run-time budget control over the test stream")
    p.add_argument("run", help="run folder")
    p.add_argument("--targets", type=float_list, default=(0.8, 0.6, 0.7),
                   help="fractions of the full path, in turn (default 0.8,0.6,0.7)")  # fmt: skip
    p.add_argument("--window", type=int, default=200, help="sliding window, images")
    p.add_argument("--policy", default="entropy", choices=POLICIES)
    p.add_argument("--plot", help="PNG path (default RUN/control.png)")
    add_device_arguments(p)
    p.set_defaults(func=cmd_control)


# -- eval ---------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    from ravit.devices import select_device
    from ravit.evaluation import evaluate_run
    from ravit.exits import simulate, sweep
    from ravit.reports.tables import anytime_table, early_exit_table
    from ravit.runs.folder import saved_calibration

    device = select_device(args.device)
    ev = evaluate_run(args.run, data_spec=args.data, split=args.split, device=device, amp=args.amp,
                      progress=sys.stderr.isatty())  # fmt: skip
    cost = model_cost(ev.model.cfg)
    lg, labels = ev.logits.logits, ev.logits.labels
    results, saved, policy = [], None, args.policy
    if args.sweep:
        results = sweep(lg, labels, cost, policy)
    elif args.thresholds is not None:
        results = [simulate(lg, labels, cost, t, policy) for t in _threshold_sets(args)]
    elif (saved := saved_calibration(args.run)) is not None:  # ravit calibrate's thresholds
        policy = saved.policy
        results = [simulate(lg, labels, cost, saved.thresholds, policy)]
    baselines = [_baseline_point(b, args, device) for b in args.baseline]
    plot = _eval_plot(args, ev, cost, results, baselines) if args.sweep else None
    if args.json:
        print(json.dumps(_eval_json(args, ev, cost, policy, results, baselines, plot), indent=2))
        return 0
    print(f"{args.run}: RAViT {ev.model.cfg.layers} on the {args.split} split "
          f"({len(labels)} images{', cached logits' if ev.cached else ''})")  # fmt: skip
    print(anytime_table(cost, ev.logits.accuracy()))
    if results:
        print()
        if saved is not None:
            print(f"at the calibrated thresholds of {args.run}/thresholds.json:")
        print(early_exit_table(results, policy))
    for name, flops, acc in baselines:
        print(f"baseline {name}: {100 * acc:.2f}% at {format_flops(flops)}")
    if plot:
        print(f"plot: {plot}")
    return 0


def _threshold_sets(args: argparse.Namespace) -> list:
    """--thresholds 0.1,0.2 is one setting (per exit); --thresholds 0.1 --thresholds 0.2 two."""
    return [t[0] if len(t) == 1 else t for t in args.thresholds]


def _baseline_point(run: str, args: argparse.Namespace, device) -> tuple[str, int, float]:
    from ravit.evaluation import evaluate_run

    ev = evaluate_run(run, data_spec=args.data, split=args.split, device=device, amp=args.amp)
    return run, model_cost(ev.model.cfg).total_flops, ev.logits.accuracy()[-1]


def _eval_plot(args, ev, cost, results, baselines):
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


def _eval_json(args, ev, cost, policy, results, baselines, plot) -> dict:
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
        "policy": policy,
        "early_exit": [r.to_dict() for r in results],
        "baselines": [{"run": n, "flops": f, "accuracy": a} for n, f, a in baselines],
        "plot": str(plot) if plot else None,
    }


# -- calibrate / control --------------------------------------------------------


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ravit.devices import select_device
    from ravit.evaluation import evaluate_run
    from ravit.exits import calibrate_budget, calibrate_max_drop, parse_budget, simulate
    from ravit.reports.tables import early_exit_table
    from ravit.runs import folder

    device = select_device(args.device)
    val = evaluate_run(args.run, data_spec=args.data, split="val", device=device, amp=args.amp)
    test = evaluate_run(args.run, data_spec=args.data, split="test", device=device, amp=args.amp)
    cost = model_cost(val.model.cfg)
    if cost.exits[-1].exit == 0:
        raise UsageError(f"{args.run} has a single exit: there is no threshold to calibrate")
    lv, lt = val.logits, test.logits
    if args.budget is not None:
        budget = parse_budget(args.budget, cost.total_flops, cost.exits[0].cumulative_flops)
        cal = calibrate_budget(lv.logits, lv.labels, cost, budget, args.policy)
    else:
        if not 0 <= args.max_drop < 100:
            raise UsageError(f"--max-drop {args.max_drop}: expected accuracy points in [0, 100)")
        cal = calibrate_max_drop(lv.logits, lv.labels, cost, args.max_drop / 100, args.policy)
    realized = simulate(lt.logits, lt.labels, cost, cal.thresholds, cal.policy)
    full = simulate(lt.logits, lt.labels, cost, None, cal.policy)
    saved = folder.write_thresholds(args.run, cal, realized, full, cost.total_flops)
    if args.json:
        print(json.dumps(saved, indent=2))
        return 0
    print(f"{args.run}: calibrated {cal.policy} thresholds for {_target_text(cal.target, cost)}")
    notes = ["val (calibrated on)", "test", "test, no early exit"]
    print(early_exit_table([cal.predicted, realized, full], cal.policy, notes))
    print(f"saved in {Path(args.run) / folder.THRESHOLDS}: used by default by eval and predict")
    return 0


def _target_text(target: dict, cost) -> str:
    if "budget_flops" in target:
        b = target["budget_flops"]
        return f"a budget of {format_flops(b)} ({100 * b / cost.total_flops:.1f}% of the full path)"
    return f"an accuracy drop of at most {100 * target['max_drop']:.2f} points"


def cmd_control(args: argparse.Namespace) -> int:
    from ravit.devices import select_device
    from ravit.evaluation import evaluate_run
    from ravit.exits import BudgetController, control_table, segments, simulate_stream
    from ravit.reports.plots import plot_controller

    device = select_device(args.device)
    val = evaluate_run(args.run, split="val", device=device, amp=args.amp)
    test = evaluate_run(args.run, split="test", device=device, amp=args.amp)
    cost = model_cost(val.model.cfg)
    table = control_table(val.logits.logits, val.logits.labels, cost, args.policy)
    n = len(test.logits.labels)
    step = max(1, n // len(args.targets))
    schedule = [(i * step, t) for i, t in enumerate(args.targets)]
    ctl = BudgetController(table, args.targets[0], window=min(args.window, n))
    trace = simulate_stream(test.logits.logits, cost, ctl, schedule, labels=test.logits.labels)
    plot = plot_controller(Path(args.plot or Path(args.run) / "control.png"), trace,
                           title=f"{args.run}: window {args.window}")  # fmt: skip
    print(f"{args.run}: budget control over the test stream ({n} images, window "
          f"{args.window}), targets {list(args.targets)} changing every {step} images")  # fmt: skip
    for s in segments(trace, schedule, BAND):
        within = "never" if s.settled_after is None else s.settled_after
        print(f"  target {100 * s.target:5.1f}%: window average at the end "
              f"{100 * s.final_average:5.1f}%, within {100 * BAND:g}% "
              f"from {within} images after the change, worst error after {s.worst_after} "
              f"images {100 * s.worst_error:4.1f}%")  # fmt: skip
    print(f"accuracy {100 * trace.accuracy:.2f}%, mean cost {100 * trace.mean_cost:.1f}%"
          f" of the full path; plot: {plot}")  # fmt: skip
    return 0
