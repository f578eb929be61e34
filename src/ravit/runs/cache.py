"""RUN/cache/: every exit's logits on a split, computed once per checkpoint and kept.

A cache file is {"key", "logits", "labels"} saved with torch.save; the key
hashes what the logits depend on (data spec, split, epoch, model config), so a
stale or broken file is recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ravit.runs.folder import CACHE
from ravit.runs.io import torch_save


@dataclass
class ExitLogits:
    """Cached evaluation: logits[i] is (N, classes) of exit i; labels (N,)."""

    logits: list[torch.Tensor]
    labels: torch.Tensor

    def accuracy(self) -> list[float]:
        return [float((lg.argmax(-1) == self.labels).float().mean()) for lg in self.logits]

    def loss(self) -> list[float]:
        return [float(F.cross_entropy(lg.float(), self.labels)) for lg in self.logits]


def cache_key(**parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(run: Path, split: str, key: str) -> Path:
    return Path(run) / CACHE / f"logits-{split}-{key}.pt"


def load_cached(path: Path, key: str) -> ExitLogits | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a stale or broken cache is recomputed, never trusted
        return None
    if not isinstance(state, dict) or state.get("key") != key:
        return None
    return ExitLogits(list(state["logits"]), state["labels"])


def save_cached(path: Path, key: str, result: ExitLogits) -> None:
    state = {"key": key, "logits": result.logits, "labels": result.labels}
    torch_save(state, path)
