"""Export a run's RAViT to ONNX: one graph per exit, a manifest, and a parity check.

Each present branch becomes one graph, exported through the model's own
`forward_exit` (branch and exit head, whatever the head reads): inputs the
image at the branch's resolution (batch, C, r, r) and the incoming CLS token
(batch, D), outputs the exit's logits (batch, classes) and the outgoing CLS
token (batch, D); the batch axis is dynamic. The resize to each resolution
and the exit decision stay outside the graphs, in the runtime
(`ravit.runtime.exported`), as the exit decision stays outside the model.

Nothing is left half-written: the folder is built under a temporary name
beside `out`, checked, and renamed to `out` only when the check passes.
The check runs the exported graphs on real images against PyTorch and
fails if any output differs by more than `tolerance` (1e-4): each graph on
PyTorch's own inputs at batch N and at batch 1 (the dynamic axis), and the
runtime's whole path (its own normalisation and resize, the CLS handed
from graph to graph) against the model's.

The exporter is torch's TorchScript-based one (`dynamo=False`): about 1 s
per graph here, no extra dependency, deprecated but present in torch 2.13.
`exporter="dynamo"` uses torch.export instead (needs onnxscript; 7-12 s per
graph on a 2-core CPU).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ravit.cost import model_cost
from ravit.evaluation import eval_transform
from ravit.exits.rule import encode_threshold
from ravit.export.choices import EXPORTERS
from ravit.models import RAViT
from ravit.models.ravit import resize
from ravit.runs.folder import THRESHOLDS, load_run_model, saved_calibration
from ravit.runtime.manifest import FORMAT, MANIFEST, VERSION, exit_graph_name

PARITY_TOLERANCE = 1e-4
CHECK_IMAGES = 64
OPSET = 17  # LayerNormalization is one ONNX op from opset 17 on


class ParityError(ValueError):
    """The exported graphs do not reproduce PyTorch within the tolerance."""


@dataclass(frozen=True)
class ExportReport:
    folder: Path
    manifest: dict
    notes: list[str] = field(default_factory=list)  # what was left out, and why


class _ExitGraph(nn.Module):
    """Exit e as a graph: (image at the branch's resolution, incoming CLS) -> (logits, CLS).

    `forward_exit` resizes to the branch's resolution, a no-op on an image
    already at it: the graph is exactly the model's branch and exit head.
    """

    def __init__(self, model: RAViT, e: int):
        super().__init__()
        self.model, self.e = model, e

    def forward(self, image: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_exit(self.e, image, cls)


def export_onnx(
    run: str | os.PathLike,
    out: str | os.PathLike,
    *,
    images: list[str | os.PathLike] | None = None,
    check_images: int = CHECK_IMAGES,
    exporter: str = "torchscript",
    tolerance: float = PARITY_TOLERANCE,
) -> ExportReport:
    """Export the model of run folder `run` into the new folder `out` (see the module doc).

    The manifest carries the run's saved thresholds (`ravit calibrate`) and a
    control table built on its validation split. images: files or folders to
    check on (default: the first `check_images` images of the run's test
    split). Raises FileExistsError if `out` exists, ParityError (a
    ValueError) if the check fails; `out` is then not created.
    """
    run, out = Path(run), Path(out)
    _check_args(out, exporter, tolerance)
    if isinstance(check_images, bool) or not isinstance(check_images, int) or check_images < 1:
        raise ValueError(f"check_images must be a positive integer, got {check_images!r}")
    model, state = load_run_model(run)
    batch = _check_batch(model, state, images, check_images)
    early_exit = _saved_early_exit(run)
    policy = early_exit["policy"] if early_exit else "entropy"
    table, notes = _control_table(run, model, policy)
    source = {"run": str(run), "epoch": state.get("epoch")}
    manifest = export_model(model, state["data"], out, batch, early_exit=early_exit,
                            control_table=table, source=source, exporter=exporter,
                            tolerance=tolerance)  # fmt: skip
    return ExportReport(out, manifest, notes)


def export_model(
    model: RAViT,
    data_info: dict,
    out: str | os.PathLike,
    images: np.ndarray,
    *,
    early_exit: dict | None = None,
    control_table: dict | None = None,
    source: dict | None = None,
    exporter: str = "torchscript",
    tolerance: float = PARITY_TOLERANCE,
) -> dict:
    """Export any RAViT into the new folder `out`, checked on uint8 images (N, C, S, S).

    data_info gives "classes", "mean" and "std" (a checkpoint's data
    section); early_exit and control_table go into the manifest as they are.
    Returns the manifest.
    """
    out = Path(out)
    _check_args(out, exporter, tolerance)
    import onnxruntime  # noqa: F401  (fail before any work when the extra is missing)

    model = model.eval()
    manifest = _manifest(model, data_info, exporter, early_exit, control_table, source or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"  # same file system as out
    tmp.mkdir()
    try:
        for e in range(model.num_exits):
            _export_exit(model, e, tmp / exit_graph_name(e), exporter)
        manifest["export"]["opset"] = _opset(tmp / exit_graph_name(0))
        _write_json(tmp / MANIFEST, manifest)
        manifest["parity"] = check_parity(model, data_info, tmp, images, tolerance)
        _write_json(tmp / MANIFEST, manifest)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _check_args(out: Path, exporter: str, tolerance: float) -> None:
    if out.exists():
        raise FileExistsError(f"{out} already exists: give a new folder (nothing was changed)")
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; expected one of {list(EXPORTERS)}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance!r}")


def _check_batch(
    model: RAViT, state: dict, images: list[str | os.PathLike] | None, n: int
) -> np.ndarray:
    """uint8 (N, C, S, S) real images at the model's size: files given, or the test split."""
    from ravit.data import load_data
    from ravit.data.transforms import match_channels
    from ravit.data.transforms import resize as resize_images
    from ravit.runtime.images import collect_image_paths, read_image

    cfg = model.cfg
    if images is not None:
        files = collect_image_paths(images)[:n]
        if not files:
            raise ValueError(f"no image files in {[str(p) for p in images]} to check the export on")
        return np.stack([read_image(f, cfg.in_chans, cfg.image_size) for f in files])
    spec = state["data"]["spec"]
    try:
        data = load_data(spec, "test")
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{' '.join(str(err).split())}: the export is checked on the run's test images "
            "({spec}); give other images to check it on"
        ) from None
    x, _ = data.get_batch(torch.arange(min(n, len(data))))
    return resize_images(match_channels(x, cfg.in_chans), cfg.image_size).numpy()


def check_parity(
    model: RAViT,
    data_info: dict,
    folder: str | os.PathLike,
    images: np.ndarray,
    tolerance: float = PARITY_TOLERANCE,
) -> dict:
    """Largest |ONNX - PyTorch| of every output on uint8 images (N, C, S, S).

    Raises ParityError naming the worst output if it exceeds `tolerance`;
    returns {"images", "tolerance", "max_abs_diff": {output: difference}}.
    """
    from ravit.runtime.exported import OnnxRAViT

    runtime = OnnxRAViT(folder)
    x_np = runtime.preprocess(images)
    x = eval_transform(model, data_info)(torch.from_numpy(images))
    diffs = {"preprocess": _max_diff(x_np, x)}
    with torch.inference_mode():
        cls = model.initial_cls(len(images))
        reference = []
        for e in range(model.num_exits):
            image = resize(x, model.resolutions[e])
            logits, cls_out = model.forward_exit(e, x, cls)
            diffs[f"exit {e + 1} resize"] = _max_diff(runtime.resize(x_np, e), image)
            for rows in (slice(None), slice(0, 1)):  # batch N, then batch 1: the dynamic axis
                got = runtime.run_graph(e, image[rows].numpy(), cls[rows].numpy())
                for name, a, b in zip(("logits", "cls"), got, (logits[rows], cls_out[rows])):
                    key = f"exit {e + 1} graph {name}"
                    diffs[key] = max(diffs.get(key, 0.0), _max_diff(a, b))
            reference.append(logits)
            cls = cls_out
    for e, logits in enumerate(runtime.forward(x_np)):
        diffs[f"exit {e + 1} runtime logits"] = _max_diff(logits, reference[e])
    failed = [k for k, v in diffs.items() if not v <= tolerance]  # `not <=` also catches nan
    if failed:  # the first in the order checked: the graph before the path that runs it
        more = f" (and {len(failed) - 1} later outputs)" if len(failed) > 1 else ""
        raise ParityError(
            f"the exported {failed[0]} differs from PyTorch by {diffs[failed[0]]:.3g}{more} on "
            f"{len(images)} images (tolerance {tolerance:g}): the export was not written"
        )
    return {"images": len(images), "tolerance": tolerance, "max_abs_diff": diffs}


def _max_diff(a: np.ndarray, b: torch.Tensor) -> float:
    return float(np.abs(a.astype(np.float64) - b.double().numpy()).max())


def _export_exit(model: RAViT, e: int, path: Path, exporter: str) -> None:
    r, d = model.resolutions[e], model.cfg.embed_dim
    args = (torch.zeros(2, model.cfg.in_chans, r, r), torch.zeros(2, d))
    names = {"input_names": ["image", "cls"], "output_names": ["logits", "cls_out"]}
    graph = _ExitGraph(model, e).eval()
    with warnings.catch_warnings():
        # The TorchScript exporter announces its deprecation, and the tracer notes that
        # shape checks (patch size) are fixed per graph: both expected, per branch.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        if exporter == "dynamo":
            batch = torch.export.Dim("batch")
            program = torch.onnx.export(graph, args, dynamo=True, verbose=False, **names,
                                        dynamic_shapes=({0: batch}, {0: batch}))  # fmt: skip
            program.save(str(path))
        else:
            axes = {n: {0: "batch"} for n in ("image", "cls", "logits", "cls_out")}
            torch.onnx.export(graph, args, str(path), dynamo=False, opset_version=OPSET,
                              dynamic_axes=axes, **names)  # fmt: skip


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _saved_early_exit(run: Path) -> dict | None:
    """The run's calibrated thresholds (`ravit calibrate`) as the manifest holds them."""
    cal = saved_calibration(run)
    if cal is None:
        return None
    taus = [encode_threshold(t) for t in cal.thresholds]
    return {"policy": cal.policy, "thresholds": taus, "target": cal.target,
            "source": str(run / THRESHOLDS)}  # fmt: skip


def _manifest(model, data_info, exporter, early_exit, control_table, source) -> dict:
    """Everything but the parity figures and the opset (known after the export)."""
    import onnx
    import onnxruntime

    cfg = model.cfg
    cost = model_cost(cfg)
    exits = [
        {"exit": c.exit + 1, "branch": c.branch + 1, "resolution": c.resolution,
         "layers": c.layers, "graph": exit_graph_name(c.exit),
         "cumulative_flops": c.cumulative_flops}
        for c in cost.exits
    ]  # fmt: skip
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {**cfg.to_dict(), "layers": cfg.layers},
        "classes": [str(c) for c in data_info["classes"]],
        "preprocess": _preprocess(data_info),
        "exits": exits,
        "total_flops": cost.total_flops,
        "initial_cls": model.cls_token.detach()[0].tolist(),
        "early_exit": early_exit,
        "control_table": control_table,
        "export": {
            **source,
            "exporter": exporter,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }


def _preprocess(info: dict) -> dict:
    return {
        "mean": [float(m) for m in info["mean"]],
        "std": [float(s) for s in info["std"]],
        "input": "uint8 (C, S, S): the file's shorter side resized to S, centre crop "
        "(ravit.runtime.images.read_image); float32 x / 255, then (x - mean) / std",
        "resize": "per exit, the normalised image resized to the exit's resolution: "
        "bilinear, antialiased, half-pixel centres (torch F.interpolate antialias=True)",
    }


def _control_table(run: Path, model: RAViT, policy: str) -> tuple[dict | None, list[str]]:
    """The budget controller's table on the run's validation split, or None and why."""
    from ravit.evaluation import evaluate_run
    from ravit.exits import control_table

    if model.num_exits < 2:
        return None, ["no control table: a single exit has no threshold"]
    try:
        val = evaluate_run(run, split="val")
    except (FileNotFoundError, ValueError) as err:  # no val split, or its data are not here
        return None, [f"no control table: {' '.join(str(err).split())}"]
    table = control_table(val.logits.logits, val.logits.labels, model_cost(model.cfg), policy)
    return table.to_dict(), []


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
