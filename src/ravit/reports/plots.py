"""PNG plots with matplotlib (Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ravit.checkpoint import atomic_write

if TYPE_CHECKING:
    from ravit.exits import StreamTrace


def plot_tradeoff(
    path: str | Path,
    curves: dict[str, Sequence[tuple[float, float]]],
    points: dict[str, Sequence[tuple[float, float]]] | None = None,
    title: str = "accuracy against FLOPs",
) -> Path:
    """Accuracy (%) against MFLOPs per image: curves (early-exit sweeps) and points.

    curves/points map a label to (flops, accuracy in [0, 1]) pairs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for label, xy in curves.items():
        xs, ys = zip(*sorted(xy)) if xy else ((), ())
        ax.plot([x / 1e6 for x in xs], [100 * y for y in ys], marker=".", label=label)
    for label, xy in (points or {}).items():
        ax.scatter([x / 1e6 for x, _ in xy], [100 * y for _, y in xy], marker="s", s=40,
                   label=label, zorder=3)  # fmt: skip
    ax.set_xlabel("MFLOPs per image")
    ax.set_ylabel("top-1 accuracy (%)")
    return _finish(fig, ax, title, path)


def plot_controller(
    path: str | Path,
    trace: StreamTrace,
    title: str = "run-time budget control",
    band: float = 0.05,
) -> Path:
    """Target and window-average cost (% of the full path's FLOPs) against image index.

    trace is a `ravit.exits.StreamTrace`; the shaded band is target +- band (relative).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = range(len(trace.target))
    target = (100 * trace.target).tolist()
    fig, ax = plt.subplots(figsize=(7.2, 3.8), dpi=120)
    ax.fill_between(x, [t * (1 - band) for t in target], [t * (1 + band) for t in target],
                    step="post", alpha=0.15, label=f"target +- {100 * band:g} %")  # fmt: skip
    ax.plot(x, target, drawstyle="steps-post", color="k", lw=1.0, label="target")
    ax.plot(x, (100 * trace.window_average).tolist(), lw=1.0,
            label=f"average of the last {trace.window} images")  # fmt: skip
    ax.set_xlabel("image")
    ax.set_ylabel("FLOPs per image (% of full path)")
    return _finish(fig, ax, title, path)


def _finish(fig, ax, title: str, path: str | Path) -> Path:
    """Title, grid and legend, then write the PNG atomically and free the figure."""
    import matplotlib.pyplot as plt

    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
