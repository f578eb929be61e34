"""The demo: a small RAViT and its plain-ViT twin on scikit-learn's digits.

Both train with the same recipe and budget on the bundled 8x8 digits (no
file, no network), then every exit is evaluated on the held-out test split
and the early-exit threshold is swept. About 2-3 minutes on 2 CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ravit.config import resolve_config
from ravit.cost import ModelCost, model_cost
from ravit.evaluation import RunEvaluation, evaluate_run
from ravit.exits import EarlyExitResult, sweep
from ravit.reports.plots import plot_tradeoff
from ravit.training import fit

RAVIT_LAYERS = "1-2"  # 1 layer on the 4x4 image, 2 on the 8x8 one
VIT_LAYERS = "0-3"  # its twin: 3 layers on the full image
DEMO_EPOCHS = 40


@dataclass
class DemoReport:
    ravit: RunEvaluation
    vit: RunEvaluation
    ravit_cost: ModelCost
    vit_cost: ModelCost
    tradeoff: list[EarlyExitResult]
    plot: Path


def demo_overrides(layers: str, epochs: int, seed: int) -> list[str]:
    return [
        "model.preset=digits",
        f"model.layers={layers}",
        "data.spec=digits",
        "data.val_size=0.1",
        f"train.epochs={epochs}",
        "train.batch_size=64",
        "train.lr=2e-3",
        "train.warmup_epochs=2",
        "train.device=cpu",
        f"train.seed={seed}",
    ]


def run_demo(
    out: str | Path,
    *,
    epochs: int = DEMO_EPOCHS,
    seed: int = 0,
    progress: bool = False,
    on_epoch: Callable[[str, dict], None] | None = None,
) -> DemoReport:
    """Train both models into out/ravit-1-2 and out/vit-0-3 and evaluate them on test."""
    out = Path(out)
    runs = {}
    for layers in (RAVIT_LAYERS, VIT_LAYERS):
        name = ("vit-" if layers == VIT_LAYERS else "ravit-") + layers
        cfg = resolve_config(overrides=demo_overrides(layers, epochs, seed))
        callback = (lambda r, n=name: on_epoch(n, r)) if on_epoch else None
        fit(out / name, cfg, progress=progress, on_epoch=callback)
        runs[layers] = evaluate_run(out / name, split="test")
    ravit, vit = runs[RAVIT_LAYERS], runs[VIT_LAYERS]
    rcost = model_cost(ravit.model.cfg)
    vcost = model_cost(vit.model.cfg)
    tradeoff = sweep(ravit.logits.logits, ravit.logits.labels, rcost, points=11)
    plot = plot_tradeoff(
        out / "tradeoff.png",
        {f"RAViT {RAVIT_LAYERS}, early exit": [(r.avg_flops, r.accuracy) for r in tradeoff]},
        {f"ViT {VIT_LAYERS}": [(vcost.total_flops, vit.logits.accuracy()[-1])]},
        title="digits, test split",
    )
    return DemoReport(ravit, vit, rcost, vcost, tradeoff, plot)
