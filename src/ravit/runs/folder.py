"""The run folder's layout, and reading and writing every file in it.

RUN/config.yaml     the resolved run config and the model config
RUN/env.json        git SHA, library versions, device, command line
RUN/split.json      the validation indices carved from the training set
RUN/metrics.jsonl   one JSON object per epoch
RUN/checkpoint.pt   the latest epoch's model, optimiser and progress (ravit.runs.checkpoint)
RUN/cache/          cached exit logits of evaluations (ravit.runs.cache)
RUN/thresholds.json the calibrated exit thresholds (ravit calibrate)
RUN/distill.json    a distilled student's teacher and settings (ravit distill)
RUN/converted.json  the ViT a converted run started from, and how (ravit convert)
RUN/dropped.json    image files left out because they do not read (data option skip_bad=1)
RUN/.lock           held while a process trains the run (ravit.runs.lock)

Training, evaluation, the runtimes, export, reports and the CLI all read and
write a run through this module; it imports none of them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import yaml

from ravit.config import ModelConfig
from ravit.errors import describe_error
from ravit.exits.calibration import Calibration
from ravit.exits.simulation import EarlyExitResult
from ravit.models import RAViT
from ravit.runs.checkpoint import load_checkpoint, model_from_state
from ravit.runs.io import read_json, write_json, write_text

CONFIG = "config.yaml"
ENV = "env.json"
SPLIT = "split.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
CACHE = "cache"
THRESHOLDS = "thresholds.json"  # written by `ravit calibrate`, used by eval and predict
DISTILL = "distill.json"  # the teacher and the distillation settings of `ravit distill`
CONVERTED = "converted.json"  # the ViT a converted run started from (`ravit convert`)
DROPPED = "dropped.json"  # unreadable image files left out of training (skip_bad=1)


class RunExistsError(ValueError):
    """A new run was asked for in a folder that already holds one."""

    def __init__(self, run: str | os.PathLike):
        self.run = Path(run)
        super().__init__(f"{run} already holds a run: resume it, or train into another folder")


def holds_run(run: Path) -> bool:
    """True when `run` already holds a run (its config or a checkpoint)."""
    return (Path(run) / CONFIG).exists() or (Path(run) / CHECKPOINT).exists()


def check_new(run: Path) -> None:
    """Raise RunExistsError when `run` already holds a run."""
    if holds_run(run):
        raise RunExistsError(run)


def find_runs(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Run folders: each path that is one, else the run folders directly inside it (or, in a
    search folder of `ravit search`, inside its trials/)."""
    runs = []
    for path in paths:
        p = Path(path)
        if (p / CONFIG).exists():
            runs.append(str(path))
        elif p.is_dir():
            inner = p / "trials" if (p / "trials").is_dir() else p
            runs += [str(c.parent) for c in sorted(inner.glob(f"*/{CONFIG}"))]
    return runs


def write_config(run: Path, run_config: dict, model_config: dict) -> None:
    text = yaml.safe_dump({**run_config, "resolved_model": model_config}, sort_keys=False)
    write_text(run / CONFIG, text)


def read_config(run: Path) -> tuple[dict, dict]:
    """(run config sections, resolved model config) of a run folder."""
    path = Path(run) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run} is not a ravit run folder (no {CONFIG} in it)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict) or "resolved_model" not in data:
        raise ValueError(f"{path} is not a ravit run config (no resolved_model section)")
    model = data.pop("resolved_model")
    return data, model


def write_split(run: Path, seed: int, val_indices: list[int]) -> None:
    record = {"seed": seed, "val_size": len(val_indices), "val_indices": val_indices}
    write_json(Path(run) / SPLIT, record)


def read_split(run: Path) -> list[int]:
    """The validation indices carved from the training set (empty: no validation split)."""
    data = read_json(Path(run) / SPLIT)
    if not isinstance(data, dict) or not isinstance(data.get("val_indices"), list):
        raise ValueError(f"{Path(run) / SPLIT} is not a ravit split file (no val_indices list)")
    return data["val_indices"]


def write_env(run: Path, env: dict[str, Any]) -> None:
    write_json(Path(run) / ENV, env)


def environment(device: str) -> dict[str, Any]:
    import numpy

    from ravit._version import __version__

    return {
        "git_sha": git_sha(),
        "argv": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "ravit": __version__,
        "device": device,
        "threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def git_sha() -> str | None:
    """The commit of the ravit source tree, if it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=5,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def append_metrics(run: Path, record: dict) -> None:
    with open(Path(run) / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run: Path) -> list[dict]:
    """The epoch records; a last line cut short (a kill or a full disk mid-append) is dropped."""
    path = Path(run) / METRICS
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):  # no newline after it: an append that never finished
                break
            raise ValueError(f"{path}:{number} is not a JSON record: {err}") from None
    return records


def epochs_trained(run: str | os.PathLike) -> tuple[int, int]:
    """(epochs the run's metrics hold, epochs its config asks for): equal when it is finished."""
    saved, _ = read_config(Path(run))
    return len(read_metrics(Path(run))), int(saved["train"]["epochs"])


def truncate_metrics(run: Path, epochs_done: int) -> None:
    """Drop records of epochs after the last checkpoint (a run killed mid-epoch)."""
    kept = [r for r in read_metrics(run) if r.get("epoch", 0) <= epochs_done]
    text = "".join(json.dumps(r) + "\n" for r in kept)
    write_text(Path(run) / METRICS, text)


def write_thresholds(
    run: Path,
    calibration: Calibration,
    test: EarlyExitResult,
    test_no_early_exit: EarlyExitResult,
    total_flops: int,
) -> dict:
    """Save calibrated thresholds and what they gave on the test split; returns the record."""
    record = {
        "calibration": calibration.to_dict(),
        "test": test.to_dict(),
        "test_no_early_exit": test_no_early_exit.to_dict(),
        "total_flops": total_flops,
    }
    write_json(Path(run) / THRESHOLDS, record)
    return record


def read_thresholds(run: Path) -> dict | None:
    """The run's thresholds record (`write_thresholds`), or None if it has none."""
    path = Path(run) / THRESHOLDS
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or "calibration" not in data:
        raise ValueError(f"{path} is not a ravit thresholds file (no calibration in it)")
    return data


def saved_calibration(run: Path) -> Calibration | None:
    """The run's calibrated thresholds (`ravit calibrate`), or None if it has none.

    A file edited by hand is checked against the run's model (one threshold
    per early exit, a known policy); a bad one is a ValueError naming it.
    """
    from ravit.exits.names import POLICIES

    saved = read_thresholds(run)
    if saved is None:
        return None
    path = Path(run) / THRESHOLDS
    try:
        cal = Calibration.from_dict(saved["calibration"])
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ValueError(f"{path} is not a ravit thresholds file: {describe_error(err)}") from None
    early = len(ModelConfig.from_dict(read_config(run)[1]).present) - 1
    if len(cal.thresholds) != early:
        raise ValueError(
            f"{path} holds {len(cal.thresholds)} thresholds; the model of {Path(run) / CONFIG} "
            f"has {early} early exit{'s' if early != 1 else ''}: calibrate it again"
        )
    if cal.policy not in POLICIES or any(not t >= 0 for t in cal.thresholds):
        raise ValueError(
            f"{path}: policy {cal.policy!r}, thresholds {list(cal.thresholds)}; expected one of "
            f"{', '.join(POLICIES)} and thresholds >= 0"
        )
    return cal


def write_dropped(run: Path, indexing: list[str], training: list[dict]) -> dict:
    """RUN/dropped.json: the files left out at indexing time and those that failed later.

    `indexing` holds "path: reason" lines; `training` {"epoch", "file"} records.
    """
    record = {"count": len(indexing) + len(training), "indexing": indexing, "training": training}
    write_json(Path(run) / DROPPED, record)
    return record


def read_dropped(run: Path) -> dict:
    """RUN/dropped.json ({"count": 0, ...} when no file was ever left out)."""
    path = Path(run) / DROPPED
    if not path.is_file():
        return {"count": 0, "indexing": [], "training": []}
    data = read_json(path)
    if not isinstance(data, dict) or not {"count", "indexing", "training"} <= set(data):
        raise ValueError(f"{path} is not a ravit list of dropped files")
    return data


def write_distill(run: Path, record: dict[str, Any]) -> None:
    write_json(Path(run) / DISTILL, record)


def read_distill(run: str | Path) -> dict[str, Any]:
    """RUN/distill.json, checked."""
    path = Path(run) / DISTILL
    if not path.is_file():
        raise FileNotFoundError(f"{run} is not a distillation run (no {DISTILL} in it)")
    data = read_json(path)
    needed = {"teacher", "teacher_epoch", "teacher_model", "exit_map", "temperature", "alpha"}
    if not isinstance(data, dict) or not needed | {"beta"} <= set(data):
        raise ValueError(f"{path} is not a ravit distillation record")
    return data


def write_converted(run: Path, record: dict[str, Any]) -> None:
    write_json(Path(run) / CONVERTED, record)


def read_converted(run: Path) -> dict[str, Any]:
    """RUN/converted.json: the source ViT, the block assignment and the notes."""
    data = read_json(Path(run) / CONVERTED)
    if not isinstance(data, dict) or not {"source", "rule", "blocks", "vit"} <= set(data):
        raise ValueError(f"{Path(run) / CONVERTED} is not a ravit conversion record")
    return data


def model_difference(found: ModelConfig, expected: ModelConfig) -> str:
    """The settings in which two model configs differ, e.g. "embed_dim 48, not 32"."""
    a, b = found.to_dict(), expected.to_dict()
    keys = [k for k in {**a, **b} if a.get(k) != b.get(k)]
    return ", ".join(f"{k} {a.get(k)!r:.40}, not {b.get(k)!r:.40}" for k in keys[:3])


def load_run_model(run: str | Path, device: torch.device | str = "cpu") -> tuple[RAViT, dict]:
    """The trained model of a run folder and its checkpoint state (without weights)."""
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} does not exist")
    path = run / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"{run} has no {CHECKPOINT}: train it first (ravit train)")
    state = load_checkpoint(path)
    model = model_from_state(state, str(path)).to(device).eval()
    _, expected = read_config(run)
    expected = ModelConfig.from_dict(expected)
    if model.cfg != expected:
        raise ValueError(
            f"{path} holds a model {model.cfg.layers!r} that is not the one "
            f"{run / CONFIG} describes ({expected.layers!r}; "
            f"{model_difference(model.cfg, expected)}): a checkpoint of another model"
        )
    if "data" not in state:
        raise ValueError(f"{path} has no data section: not written by ravit train")
    state.pop("model")
    return model, state
