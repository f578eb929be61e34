"""A search folder's files: trials.csv, pareto.csv, pareto.png and best.json.

OUT/study.db        the Optuna study (SQLite, unless --storage names another database)
OUT/trials/NAME/    one run folder per allocation tried (a normal run: eval, export, ...)
OUT/trials.csv      every trial: allocation, state, epochs and images trained, accuracy
OUT/pareto.csv      the trials on the front of validation accuracy vs average FLOPs
OUT/pareto.png      every trial as a point, the front as a line, the reference models
OUT/best.json       the best trial: its allocation, accuracy, thresholds, run folder
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ravit.runs.io import write_json, write_text
from ravit.search.study import TrialResult

COLUMNS = ("trial", "state", "layers", "resolutions", "heads", "epochs", "images",
           "val_accuracy_at_budget", "val_accuracy_full", "avg_flops_at_budget", "full_flops",
           "run", "note")  # fmt: skip


def rows(trials: list[TrialResult]) -> list[dict]:
    out = []
    for t in trials:
        a, attrs = t.allocation, t.attrs
        note = attrs.get("rejected") or (f"pruned after epoch {attrs['pruned_at']}"
                                         if "pruned_at" in attrs else "")  # fmt: skip
        if "duplicate_of" in attrs:
            note = f"drawn again: as trial {attrs['duplicate_of']}"
        out.append({
            "trial": t.number, "state": t.state,
            "layers": a.layers if a else "",
            "resolutions": "/".join(map(str, a.resolutions)) if a else "",
            "heads": ",".join(a.heads) if a else "", "epochs": attrs.get("epochs", ""),
            "images": attrs.get("images", 0),
            "val_accuracy_at_budget": "" if t.value is None else round(t.value, 6),
            "val_accuracy_full": _round(attrs.get("val_accuracy_full")),
            "avg_flops_at_budget": _round(attrs.get("ee_flops"), 0),
            "full_flops": attrs.get("full_flops", ""), "run": attrs.get("run", ""), "note": note,
        })  # fmt: skip
    return out


def _round(value, digits: int = 6):
    return "" if value is None else round(value, digits)


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and accuracy (higher),
    cheapest first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -1.0
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def write_outputs(out: Path, trials: list[TrialResult], references: dict[str, int],
                  budget_flops: float) -> list[Path]:  # fmt: skip
    """Write the search folder's tables, plot and best.json; returns the files written."""
    out = Path(out)
    table = rows(trials)
    done = [r for r in table if r["state"] == "COMPLETE"]
    front = [done[i] for i in pareto([(r["avg_flops_at_budget"], r["val_accuracy_at_budget"])
                                      for r in done])]  # fmt: skip
    files = [_csv(out / "trials.csv", table), _csv(out / "pareto.csv", front)]
    if done:
        best = max(done, key=lambda r: r["val_accuracy_at_budget"])
        record = {**best, "budget_flops": budget_flops}
        write_json(out / "best.json", record)
        files.append(out / "best.json")
        files.append(_plot(out / "pareto.png", done, front, references, budget_flops))
    return files


def _csv(path: Path, table: list[dict]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(table)
    write_text(path, buf.getvalue())
    return path


def _plot(path: Path, done: list[dict], front: list[dict], references: dict[str, int],
          budget: float) -> Path:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ravit.runs.io import atomic_write

    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = [r["avg_flops_at_budget"] / 1e6 for r in done]
    y = [100 * r["val_accuracy_at_budget"] for r in done]
    ax.scatter(x, y, s=18, color="tab:blue", alpha=0.6, label="trials (early exit at the budget)")
    for r, xi, yi in zip(done, x, y):
        ax.annotate(r["layers"], (xi, yi), fontsize=7, xytext=(3, 2), textcoords="offset points")
    fx = [r["avg_flops_at_budget"] / 1e6 for r in front]
    fy = [100 * r["val_accuracy_at_budget"] for r in front]
    ax.plot(fx, fy, color="tab:red", lw=1.5, label="Pareto front")
    ax.axvline(budget / 1e6, color="grey", ls=":", label="budget")
    for i, (name, flops) in enumerate(references.items()):
        ax.axvline(flops / 1e6, color=f"C{i + 2}", ls="--", lw=1, label=f"{name} (full path)")
    ax.set_xlabel("average MFLOPs per image")
    ax.set_ylabel("validation accuracy %")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def read_best(out: Path) -> dict:
    return json.loads((Path(out) / "best.json").read_text())
