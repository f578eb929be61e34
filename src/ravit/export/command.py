"""`ravit export` and `ravit predict --backend onnx`: the command-line side of deployment.

`ravit.cli` adds the parser and reports errors (one line, exit code 2);
the functions here print results and return exit codes. The ONNX side of
predict imports no torch.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Iterator

from ravit.cost import format_flops

EXPORTERS = ["torchscript", "dynamo"]  # ravit.export.exporter.EXPORTERS, without importing torch


def add_export_parser(sub) -> None:
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
    from ravit.cli import UsageError

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"{' and '.join(missing)} not installed: pip install 'ravit[export]' "
            "(onnx, onnxruntime, onnxscript)"
        )


def cmd_export(args: argparse.Namespace) -> int:
    _require("onnx", "onnxruntime", *(["onnxscript"] if args.exporter == "dynamo" else []))
    from ravit.export.exporter import export_onnx

    report = export_onnx(args.run, args.out, images=args.images,
                         check_images=args.check_images, exporter=args.exporter)  # fmt: skip
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


def onnx_predictions(args: argparse.Namespace) -> tuple[Iterator, str, str]:
    """(records, policy, where the thresholds came from) for `ravit predict --backend onnx`."""
    from ravit.cli import UsageError

    _require("onnxruntime")
    if args.device not in ("auto", "cpu"):
        raise UsageError(
            f"--backend onnx runs on onnxruntime's CPU provider; --device {args.device} is for "
            "--backend torch"
        )
    from ravit.runtime.exported import OnnxRAViT, predict_files

    model = OnnxRAViT(args.run)
    taus, policy, source = _onnx_thresholds(args, model)
    results = predict_files(model, args.paths, taus, policy, batch_size=args.batch_size)
    return results, policy, source


def _onnx_thresholds(args: argparse.Namespace, model) -> tuple[object, str, str]:
    """As `ravit.cli._predict_thresholds`: --thresholds, --budget, the saved ones, or none."""
    from ravit.cli import parse_budget
    from ravit.exits.budget import BudgetController

    if args.thresholds is not None:
        t = args.thresholds
        return (t[0] if len(t) == 1 else t), args.policy, "--thresholds"
    if args.budget is not None:
        table = model.control_table
        if table is None:
            raise ValueError(f"{args.run} has no control table to meet --budget with")
        flops = parse_budget(args.budget, table.total_flops)
        ctl = BudgetController(table, flops=flops)  # feed-forward: the table's row for it
        return ctl.thresholds, table.policy, f"--budget {args.budget} (the export's control table)"
    saved = model.saved_thresholds
    if saved is not None:
        return saved[0], saved[1], f"{args.run}/manifest.json"
    return None, args.policy, "none (no early exit)"
