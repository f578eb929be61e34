"""`ravit predict` and `ravit export`: deployment, which never loads the trainer.

`predict` runs a run folder on PyTorch, or (`--backend onnx`) an export
folder on onnxruntime without torch. `export` writes ONNX graphs and a
manifest (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Iterator

from ravit.cli.common import UsageError, add_device_arguments, float_list
from ravit.cost import format_flops
from ravit.exits.names import POLICIES
from ravit.export.choices import EXPORTERS


def add_parsers(sub) -> None:
    p = sub.add_parser("predict", help="classify image files with early exit")
    p.add_argument("run", help="run folder (--backend onnx: an export folder, ravit export)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--thresholds", type=float_list, help="per-exit thresholds, e.g. 0.5")
    g.add_argument("--budget", help="average cost (0.7, 70%%, 60M): thresholds solved on val")
    p.add_argument("--policy", default="entropy", choices=POLICIES)
    p.add_argument("--batch-size", type=int, default=64)
    add_device_arguments(p)
    p.add_argument("--json", action="store_true", help="one JSON object per image per line")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: the exported graphs on onnxruntime (docs/deploy.md)")  # fmt: skip
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a run for inference engines: ONNX graphs + manifest")
    p.add_argument("run", help="run folder")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="only onnx for now")
    p.add_argument("--out", required=True, help="new folder for the graphs and the manifest")
    p.add_argument("--images", nargs="+", metavar="PATH",
                   help="image files or folders to check the export on (default: the run's "
                        "test split)")  # fmt: skip
    p.add_argument("--check-images", type=int, default=64, metavar="N",
                   help="how many images to check on (default 64)")  # fmt: skip
    p.add_argument("--exporter", choices=EXPORTERS, default="torchscript",
                   help="torch's ONNX exporter (dynamo needs onnxscript)")  # fmt: skip
    p.set_defaults(func=cmd_export)


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"{' and '.join(missing)} not installed: pip install 'ravit[export]' "
            "(onnx, onnxruntime, onnxscript)"
        )


# -- predict --------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    if args.backend == "onnx":  # RUN is an export folder; no torch
        results, policy, source = _onnx_predictions(args)
    else:
        results, policy, source = _torch_predictions(args)
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


def _torch_predictions(args: argparse.Namespace) -> tuple[Iterator, str, str]:
    from ravit.devices import select_device
    from ravit.runs.folder import load_run_model, saved_calibration
    from ravit.runtime.prediction import predict

    device = select_device(args.device)
    model, state = load_run_model(args.run, device)
    if args.thresholds is not None:
        taus, policy, source = _given(args)
    elif args.budget is not None:
        taus, policy = _calibrated(args, model, device)
        source = f"--budget {args.budget} (calibrated on val)"
    elif (saved := saved_calibration(args.run)) is not None:
        taus, policy, source = saved.thresholds, saved.policy, f"{args.run}/thresholds.json"
    else:
        taus, policy, source = None, args.policy, "none (no early exit)"
    results = predict(model, state["data"], args.paths, taus, policy,
                      batch_size=args.batch_size, device=device, amp=args.amp)  # fmt: skip
    return results, policy, source


def _calibrated(args: argparse.Namespace, model, device) -> tuple[tuple[float, ...], str]:
    """Thresholds for --budget, solved on the run's validation split."""
    from ravit.cost import model_cost
    from ravit.evaluation import evaluate_run
    from ravit.exits import calibrate_budget, parse_budget

    val = evaluate_run(args.run, split="val", device=device, amp=args.amp)
    cost = model_cost(model.cfg)
    budget = parse_budget(args.budget, cost.total_flops, cost.exits[0].cumulative_flops)
    cal = calibrate_budget(val.logits.logits, val.logits.labels, cost, budget, args.policy)
    return cal.thresholds, cal.policy


def _given(args: argparse.Namespace) -> tuple[object, str, str]:
    t = args.thresholds
    return (t[0] if len(t) == 1 else t), args.policy, "--thresholds"


def _onnx_predictions(args: argparse.Namespace) -> tuple[Iterator, str, str]:
    """(records, policy, where the thresholds came from) for `ravit predict --backend onnx`."""
    _require("onnxruntime")
    if args.device not in ("auto", "cpu"):
        raise UsageError(
            f"--backend onnx runs on onnxruntime's CPU provider; --device {args.device} is for "
            "--backend torch"
        )
    from ravit.exits.budget import BudgetController, parse_budget
    from ravit.runtime.exported import OnnxRAViT, predict_files

    model = OnnxRAViT(args.run)
    if args.thresholds is not None:
        taus, policy, source = _given(args)
    elif args.budget is not None:
        table = model.control_table
        if table is None:
            raise ValueError(f"{args.run} has no control table to meet --budget with")
        ctl = BudgetController(table, flops=parse_budget(args.budget, table.total_flops))
        taus, policy = ctl.thresholds, table.policy  # feed-forward: the table's row for it
        source = f"--budget {args.budget} (the export's control table)"
    elif model.saved_thresholds is not None:
        (taus, policy), source = model.saved_thresholds, f"{args.run}/manifest.json"
    else:
        taus, policy, source = None, args.policy, "none (no early exit)"
    results = predict_files(model, args.paths, taus, policy, batch_size=args.batch_size)
    return results, policy, source


# -- export ---------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    _require("onnx", "onnxruntime", *(["onnxscript"] if args.exporter == "dynamo" else []))
    from ravit.export.exporter import export_onnx

    try:
        report = export_onnx(args.run, args.out, images=args.images,
                             check_images=args.check_images, exporter=args.exporter)  # fmt: skip
    except FileNotFoundError as err:
        if args.images is not None or "check it on" not in str(err):
            raise
        raise UsageError(f"{err} (--images PATH)") from None
    m = report.manifest
    layers, exporter, opset = m["model"]["layers"], m["export"]["exporter"], m["export"]["opset"]
    print(f"{args.run}: RAViT {layers} exported to {report.folder}/ ({exporter}, opset {opset})")
    for e in m["exits"]:
        cost = format_flops(e["cumulative_flops"])
        print(f"  {e['graph']:<11} exit {e['exit']}: {e['resolution']} px, {e['layers']} layers, "
              f"{cost} cumulative")  # fmt: skip
    saved = m["early_exit"]
    if saved:
        print(f"  thresholds: {saved['thresholds']} ({saved['policy']}, from {saved['source']})")
    else:
        print("  thresholds: none saved (ravit calibrate RUN saves them)")
    table = m["control_table"]
    print(f"  control table: {len(table['knobs'])} rows" if table else "  control table: none")
    for note in report.notes:
        print(f"  note: {note}")
    diffs = m["parity"]["max_abs_diff"]
    worst = max(diffs, key=diffs.get)
    print(f"  checked against PyTorch on {m['parity']['images']} images: largest difference "
          f"{diffs[worst]:.2g} ({worst}), tolerance {m['parity']['tolerance']:g}")  # fmt: skip
    return 0
