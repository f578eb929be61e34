"""Checkpoints that carry their config, written atomically.

A checkpoint is a plain dict saved with torch.save: {"format", "version",
"model_config", "model", ...extra}. Loading rebuilds the model from the stored
config alone, and loads with `weights_only=True` (no pickled code runs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ravit.config import ModelConfig
from ravit.models import RAViT
from ravit.runs.io import torch_save

FORMAT = "ravit-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, model: RAViT, **extra: Any) -> None:
    state = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.cfg.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    torch_save(state, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a checkpoint file; tensors land on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise ValueError(
            f"{path} is not a readable RAViT checkpoint (expected a file written by "
            f"ravit): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a RAViT checkpoint (no '{FORMAT}' format marker)")
    if state.get("version", 0) > VERSION:
        raise ValueError(
            f"{path} has checkpoint version {state['version']}; this ravit reads up to {VERSION}"
        )
    return state


def model_from_state(state: dict[str, Any], source: str = "checkpoint") -> RAViT:
    cfg = ModelConfig.from_dict(state["model_config"])
    model = RAViT(cfg)
    expected = model.state_dict()
    weights = state["model"]
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    mismatched = sorted(
        k for k in set(weights) & set(expected) if weights[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{source}: weights do not match the model config {cfg.layers!r} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {mismatched[:3]})"
        )
    model.load_state_dict(weights)
    return model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> RAViT:
    """Rebuild a model from a checkpoint alone, in eval mode, on `device`."""
    model = model_from_state(load_checkpoint(path), str(path))
    return model.to(device).eval()
