"""The run folder: everything a run writes, in one place.

RUN/config.yaml     the resolved run config and the model config
RUN/env.json        git SHA, library versions, device, command line
RUN/split.json      the validation indices carved from the training set
RUN/metrics.jsonl   one JSON object per epoch
RUN/checkpoint.pt   the latest epoch's model, optimiser and progress
RUN/cache/          cached exit logits of evaluations
RUN/thresholds.json the calibrated exit thresholds (ravit calibrate)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ravit.checkpoint import atomic_write

CONFIG = "config.yaml"
ENV = "env.json"
SPLIT = "split.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
THRESHOLDS = "thresholds.json"  # written by `ravit calibrate`, used by eval and predict


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


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


def environment(device: str) -> dict[str, Any]:
    import numpy
    import torch

    import ravit

    return {
        "git_sha": git_sha(),
        "argv": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "ravit": ravit.__version__,
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
    path = Path(run) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run: Path, epochs_done: int) -> None:
    """Drop records of epochs after the last checkpoint (a run killed mid-epoch)."""
    kept = [r for r in read_metrics(run) if r.get("epoch", 0) <= epochs_done]
    text = "".join(json.dumps(r) + "\n" for r in kept)
    write_text(Path(run) / METRICS, text)


def read_thresholds(run: Path) -> dict | None:
    """The run's calibrated thresholds (`ravit calibrate`), or None if it has none."""
    path = Path(run) / THRESHOLDS
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or "calibration" not in data:
        raise ValueError(f"{path} is not a ravit thresholds file (no calibration in it)")
    return data
