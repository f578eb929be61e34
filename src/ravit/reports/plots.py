"""PNG plots with matplotlib (Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ravit.runs.io import atomic_write

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
    for k, (label, xy) in enumerate((points or {}).items(), start=len(curves)):
        ax.scatter([x / 1e6 for x, _ in xy], [100 * y for _, y in xy], marker="s", s=40,
                   color=f"C{k % 10}", label=label, zorder=3)  # fmt: skip
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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(
    path: str | Path,
    points: dict[str, tuple[float, float, float]],
    front: Sequence[str],
    title: str = "accuracy against FLOPs",
) -> Path:
    """Every model as a point (MFLOPs, accuracy %, spread) and the Pareto front through `front`.

    points maps a label ("1-3") to (flops, accuracy in [0, 1], std in [0, 1] or nan);
    labels starting with "0-" are drawn as plain ViTs.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.8), dpi=120)
    for plain in (True, False):
        sel = {k: v for k, v in points.items() if _is_plain(k) == plain}
        if not sel:
            continue
        xs = [f / 1e6 for f, _, _ in sel.values()]
        ys = [100 * a for _, a, _ in sel.values()]
        err = [0 if s != s else 100 * s for _, _, s in sel.values()]  # nan: one seed
        ax.errorbar(xs, ys, yerr=err, fmt="s" if plain else "o", ms=5, capsize=2,
                    label="plain ViT" if plain else "RAViT", zorder=3)  # fmt: skip
        for label, x, y in zip(sel, xs, ys):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    fx = sorted((points[k][0] / 1e6, 100 * points[k][1]) for k in front)
    if fx:
        ax.plot(*zip(*fx), "k--", lw=0.8, label="Pareto front", zorder=2)
    ax.set_xlabel("MFLOPs per image")
    ax.set_ylabel("top-1 accuracy (%)")
    return _finish(fig, ax, title, path)


def _is_plain(label: str) -> bool:
    depths = label.split(" ")[0].split("-")
    return sum(d != "0" for d in depths) == 1


def plot_grid_maps(
    path: str | Path,
    accuracy: dict[tuple[int, int], float],
    flops: dict[tuple[int, int], float],
    title: str = "two-branch models",
) -> Path:
    """The paper's Figure 3: accuracy (%) and MFLOPs over (branch-1, branch-2) layers."""
    plt = _pyplot()
    rows = sorted({b1 for b1, _ in accuracy})
    cols = sorted({b2 for _, b2 in accuracy})
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 0.6 * len(rows) + 2.4), dpi=120)
    for ax, values, name, fmt in (
        (axes[0], {k: 100 * v for k, v in accuracy.items()}, "test accuracy (%)", "{:.1f}"),
        (axes[1], {k: v / 1e6 for k, v in flops.items()}, "MFLOPs per image", "{:.3g}"),
    ):
        grid = [[values.get((r, c), float("nan")) for c in cols] for r in rows]
        im = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                if (r, c) in values:
                    ax.text(j, i, fmt.format(values[(r, c)]), ha="center", va="center",
                            fontsize=8, color="w")  # fmt: skip
        ax.set_xticks(range(len(cols)), [str(c) for c in cols])
        ax.set_yticks(range(len(rows)), [str(r) for r in rows])
        ax.set_xlabel("layers in branch 2 (full resolution)")
        ax.set_ylabel("layers in branch 1 (half resolution)")
        ax.set_title(name)
        fig.colorbar(im, ax=ax, shrink=0.85)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def plot_exit_fractions(
    path: str | Path,
    thresholds: Sequence[float],
    fractions: Sequence[Sequence[float]],
    title: str = "where images leave",
) -> Path:
    """Stacked share of the images leaving at each exit against the (shared) threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    per_exit = list(zip(*fractions))  # (exits, points)
    ax.stackplot(list(thresholds), [[100 * f for f in fr] for fr in per_exit],
                 labels=[f"exit {i + 1}" for i in range(len(per_exit))], alpha=0.8)  # fmt: skip
    ax.set_xlabel("entropy threshold tau (every early exit)")
    ax.set_ylabel("images leaving there (%)")
    ax.set_ylim(0, 100)
    return _finish(fig, ax, title, path)
