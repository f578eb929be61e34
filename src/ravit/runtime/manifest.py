"""The manifest of an exported model: what a runtime needs beside the graphs.

`ravit export` writes DIR/manifest.json next to one ONNX graph per exit;
`ravit.runtime.exported.OnnxRAViT` reads it. The format (docs/deploy.md):

    format, version          "ravit-onnx", 1
    model                    the ModelConfig (`ModelConfig.to_dict`) and its layer string
    classes                  one name per class
    preprocess               mean, std (per channel, [0, 1] units) and the rules in words
    exits                    per present branch, coarse to fine: exit (1-based), branch
                             (1-based), resolution, layers, graph (file name),
                             cumulative_flops (the analytic cost up to this exit)
    total_flops              the full path's cost
    initial_cls              the learned CLS token (D floats) that enters exit 1's graph
    early_exit               the saved thresholds (`ravit calibrate`): policy, thresholds
                             (one per early exit, "inf" allowed), target; or null
    control_table            the budget controller's table (`ControlTable.to_dict`), built
                             on the run's validation split; or null
    parity                   the export's check against PyTorch (images, max differences)
    export                   where it came from: run, epoch, torch, onnx, opset, exporter

No torch: the exported runtime reads it on a device without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ravit.exits.rule import check_policy, decode_threshold

FORMAT = "ravit-onnx"
VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ExitGraph:
    """One exit's graph: image (batch, C, r, r) and cls (batch, D) -> logits, cls_out."""

    exit: int  # 1-based among present exits
    branch: int  # 1-based among all branches (absent ones included)
    resolution: int
    layers: int
    graph: str  # file name inside the export folder
    cumulative_flops: int


def exit_graph_name(exit_index: int) -> str:
    """The graph file of 0-based exit `exit_index`."""
    return f"exit{exit_index + 1}.onnx"


def read_manifest(folder: str | Path) -> dict:
    """DIR/manifest.json, checked: a ValueError names what is missing or wrong."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise FileNotFoundError(f"export folder {folder} does not exist")
    if not path.is_file():
        hint = (
            ": it is a run folder; export it first (ravit export, see docs/deploy.md)"
            if (folder / "checkpoint.pt").is_file()
            else ": not written by ravit export"
        )
        raise FileNotFoundError(f"{folder} has no {MANIFEST}{hint}")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a ravit export manifest (no '{FORMAT}' format marker)")
    if not isinstance(data.get("version"), int) or data["version"] > VERSION:
        raise ValueError(f"{path} has version {data.get('version')!r}; this ravit reads {VERSION}")
    _check(data, path)
    return data


def exit_graphs(data: dict) -> list[ExitGraph]:
    return [ExitGraph(**{k: e[k] for k in ExitGraph.__dataclass_fields__}) for e in data["exits"]]


def saved_thresholds(data: dict) -> tuple[tuple[float, ...], str] | None:
    """(thresholds, policy) saved with the export, or None."""
    saved = data.get("early_exit")
    if saved is None:
        return None
    return tuple(decode_threshold(t) for t in saved["thresholds"]), saved["policy"]


def _check(data: dict, path: Path) -> None:
    missing = [
        k
        for k in ("model", "classes", "preprocess", "exits", "initial_cls", "total_flops")
        if k not in data
    ]
    if missing:
        raise ValueError(f"{path} lacks {missing}")
    model, exits = data["model"], data["exits"]
    if not isinstance(model, dict) or not isinstance(data["preprocess"], dict):
        raise ValueError(f"{path}: 'model' and 'preprocess' must be objects")
    fields = set(ExitGraph.__dataclass_fields__)
    if (
        not isinstance(exits, list)
        or not exits
        or any(not isinstance(e, dict) or fields - set(e) for e in exits)
    ):
        raise ValueError(f"{path}: 'exits' must list one entry per exit with {sorted(fields)}")
    if len(data["classes"]) != model.get("num_classes"):
        raise ValueError(
            f"{path} names {len(data['classes'])} classes for a model of "
            f"{model.get('num_classes')!r}"
        )
    if len(data["initial_cls"]) != model.get("embed_dim"):
        raise ValueError(f"{path}: initial_cls has {len(data['initial_cls'])} values, not D")
    chans = model.get("in_chans")
    pre = data["preprocess"]
    if any(len(pre.get(k, ())) not in (1, chans) for k in ("mean", "std")):
        raise ValueError(f"{path}: preprocess mean/std must hold 1 or {chans} values each")
    for e in exits:
        if not (path.parent / e["graph"]).is_file():
            raise FileNotFoundError(f"{path.parent / e['graph']} is missing: a broken export")
    saved = data.get("early_exit")
    if saved is not None:
        check_policy(saved.get("policy"))
        if len(saved.get("thresholds", ())) != len(exits) - 1:
            raise ValueError(f"{path}: early_exit needs one threshold per early exit")
