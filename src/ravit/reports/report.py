"""`ravit report`: tables, CSV and plots from any set of trained runs.

Runs that differ only in their seed form a group; a group's accuracy is the
mean over its seeds, with the sample standard deviation as its spread. For
every run with more than one exit, early exit is measured on the test split
at the paper's raw entropy thresholds and at thresholds chosen on the run's
validation split for fractions of a reference model's FLOPs (the paper's
Table I reports 72 % and 61 % of the 4-layer ViT).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ravit.cost import ModelCost, format_flops, model_cost
from ravit.data.specs import parse_data_spec
from ravit.evaluation import evaluate_run
from ravit.exits import EarlyExitResult, calibrate_budget, simulate, sweep
from ravit.runs import folder as runfs
from ravit.runs.cache import ExitLogits
from ravit.runs.io import write_text

PAPER_TAUS = (0.05, 0.15)  # the raw entropy thresholds of the paper's Table I
BUDGETS = (0.72, 0.61)  # Table I's early-exit operating points, of the reference's FLOPs


@dataclass
class RunResult:
    """One trained run, evaluated on its test (and validation) split."""

    run: Path
    data: str  # the data set's name, e.g. "cifar10"
    layers: str
    seed: int
    epochs: int
    group: str  # runs with the same group differ only in their seed
    cost: ModelCost
    test: ExitLogits
    val: ExitLogits | None

    @property
    def accuracy(self) -> float:
        return self.test.accuracy()[-1]


@dataclass
class EarlyExitPoint:
    run: RunResult
    setting: str  # "tau=0.05" or "val budget 72%"
    thresholds: tuple[float, ...]
    test: EarlyExitResult
    val: EarlyExitResult | None = None


@dataclass
class Group:
    key: str
    layers: str
    runs: list[RunResult]
    early_exit: dict[str, list[EarlyExitPoint]] = field(default_factory=dict)

    @property
    def flops(self) -> int:
        return self.runs[0].cost.total_flops

    @property
    def num_exits(self) -> int:
        return len(self.runs[0].cost.exits)

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.layers.split("-"))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else math.nan)


def load_results(
    runs: Sequence[str | Path], *, progress: bool = False, on_run: Callable | None = None
) -> list[RunResult]:
    """Evaluate every run (test and val logits, cached in RUN/cache/)."""
    if not runs:
        raise ValueError("no runs given: pass run folders written by ravit train or ravit suite")
    configs = []
    for path in map(Path, runs):  # configs first: a mix-up fails before any evaluation
        configs.append((path, runfs.read_config(path)[0]))
    datasets = sorted({parse_data_spec(cfg["data"]["spec"])[0] for _, cfg in configs})
    if len(datasets) > 1:
        raise ValueError(
            f"the runs use different data sets ({', '.join(datasets)}): report each separately"
        )
    results = []
    for path, run_cfg in configs:
        test = evaluate_run(path, split="test", progress=progress)
        has_val = bool(runfs.read_split(path))
        val = evaluate_run(path, split="val", progress=progress) if has_val else None
        train, data = dict(run_cfg["train"]), dict(run_cfg["data"])
        seed = int(train.pop("seed"))
        for section, keys in ((train, RUN_ONLY_TRAIN), (data, RUN_ONLY_DATA)):
            for k in keys:
                section.pop(k, None)
        key = json.dumps([test.model.cfg.to_dict(), data, train], sort_keys=True)
        results.append(RunResult(
            path, datasets[0], test.model.cfg.layers, seed, len(runfs.read_metrics(path)), key,
            model_cost(test.model.cfg), test.logits, val.logits if val else None,
        ))  # fmt: skip
        if on_run:
            on_run(results[-1])
    return results


# Settings that change how a run executes, not what it learns: runs differing
# only in these (and the seed) are one model.
RUN_ONLY_TRAIN = ("device", "compile")
RUN_ONLY_DATA = ("workers", "prefetch", "eval_batch_size")


def group_runs(results: Sequence[RunResult]) -> list[Group]:
    """Groups of runs that differ only in their seed, cheapest first."""
    groups: dict[str, Group] = {}
    for r in results:
        groups.setdefault(r.group, Group(r.group, r.layers, [])).runs.append(r)
    labels = [g.layers for g in groups.values()]
    for g in groups.values():  # same layers, other settings: keep the labels apart
        if labels.count(g.layers) > 1:
            g.layers = f"{g.layers} ({g.runs[0].run.parent.name}/{g.runs[0].run.name})"
    return sorted(groups.values(), key=lambda g: (g.flops, g.layers))


def reference_group(groups: Sequence[Group], layers: str | None) -> Group:
    """The "% of FLOPs" baseline: the named group, else a 4-layer plain ViT, else the dearest."""
    if layers is not None:
        for g in groups:
            if g.layers == layers:
                return g
        known = ", ".join(g.layers for g in groups)
        raise ValueError(f"reference model {layers!r} is not among the runs ({known})")
    plain4 = [g for g in groups if g.num_exits == 1 and sum(g.depths) == 4]
    return plain4[0] if plain4 else max(groups, key=lambda g: g.flops)


def early_exit_points(
    group: Group, ref_flops: int, budgets: Sequence[float] = BUDGETS
) -> dict[str, list[EarlyExitPoint]]:
    """Per setting, one point per seed: the paper's taus and val-calibrated budgets."""
    out: dict[str, list[EarlyExitPoint]] = {}
    for r in group.runs:
        lg, labels = r.test.logits, r.test.labels
        for tau in PAPER_TAUS:
            res = simulate(lg, labels, r.cost, tau)
            out.setdefault(f"tau={tau}", []).append(EarlyExitPoint(r, f"tau={tau}", res.thresholds,
                                                                   res))  # fmt: skip
        if r.val is None:
            continue
        for f in budgets:
            budget = f * ref_flops
            if budget < r.cost.exits[0].cumulative_flops:
                continue  # below every image leaving at exit 1: not reachable
            budget = min(budget, r.cost.total_flops)
            cal = calibrate_budget(r.val.logits, r.val.labels, r.cost, budget)
            res = simulate(lg, labels, r.cost, cal.thresholds)
            name = f"val budget {100 * f:.0f}%"
            out.setdefault(name, []).append(
                EarlyExitPoint(r, name, cal.thresholds, res, cal.predicted)
            )
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, accuracy) points no other point beats on both, by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def sweep_curve(r: RunResult, points: int = 41) -> list[EarlyExitResult]:
    return sweep(r.test.logits, r.test.labels, r.cost, points=points)


def fmt_acc(values: Sequence[float]) -> str:
    mean, std = mean_std([100 * v for v in values])
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


TABLE1_LAYERS = ("0-3", "0-4", "0-5", "1-3")


@dataclass
class Report:
    out: Path
    groups: list[Group]
    reference: Group
    table: str  # markdown: the Table I analogue
    files: list[Path]


def build_report(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    reference: str | None = None,
    title: str | None = None,
    progress: bool = False,
    on_run: Callable | None = None,
    budgets: Sequence[float] = BUDGETS,
) -> Report:
    """Evaluate the runs and write CSV files, a markdown report and PNG plots into `out`.

    `budgets`: the val-calibrated early-exit settings, as fractions of the reference's FLOPs.
    """
    results = load_results(runs, progress=progress, on_run=on_run)
    groups = group_runs(results)
    ref = reference_group(groups, reference)
    for g in groups:
        if g.num_exits > 1:
            g.early_exit = early_exit_points(g, ref.flops, budgets)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = title or results[0].data
    table = table1_markdown(groups, ref, paper=results[0].data == "cifar10")
    files = [
        write_runs_csv(out / "runs.csv", results),
        write_summary_csv(out / "summary.csv", groups, ref),
        *write_plots(out, groups, title),
    ]
    text = report_markdown(title, groups, ref, table, files, out)
    files.append(out / "report.md")
    write_text(out / "report.md", text)
    return Report(out, groups, ref, table, files)


def _table_groups(groups: Sequence[Group]) -> list[Group]:
    chosen = [g for g in groups if g.layers in TABLE1_LAYERS]
    return chosen or list(groups)


def table1_markdown(groups: Sequence[Group], ref: Group, *, paper: bool = True) -> str:
    """Table I's columns for ours beside the paper's: model, top-1, FLOPs, % of the reference.

    The paper's columns are filled for its own setting only (paper=True: CIFAR-10
    runs with the 4-layer ViT as the reference).
    """
    from ravit.reports.paper import PAPER_TABLE1

    lines = [
        f"| model | seeds | top-1 % (ours) | FLOPs | % of {ref.layers} | paper top-1 % | "
        "paper FLOPs | paper % |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(name: str, key: str, accs: list[float], flops: float, n: int) -> None:
        theirs = PAPER_TABLE1.get(key) if paper and ref.layers == "0-4" else None
        p = f"{theirs[0]} | {theirs[1]} | {theirs[2]}" if theirs else "| |"
        lines.append(f"| {name} | {n} | {fmt_acc(accs)} | {format_flops(flops)} | "
                     f"{100 * flops / ref.flops:.1f} | {p} |")  # fmt: skip

    for g in _table_groups(groups):
        kind = "ViT" if g.num_exits == 1 else "RAViT"
        name = f"{kind} {g.layers}" + (", no early exit" if g.num_exits > 1 else "")
        row(name, g.layers, [r.accuracy for r in g.runs], g.flops, len(g.runs))
        for setting, pts in g.early_exit.items():
            flops = statistics.fmean(p.test.avg_flops for p in pts)
            row(f"RAViT {g.layers}, {setting}", f"{g.layers} {setting}",
                [p.test.accuracy for p in pts], flops, len(pts))  # fmt: skip
    return "\n".join(lines)


def write_runs_csv(path: Path, results: Sequence[RunResult]) -> Path:
    """One row per run: cost and test accuracy of every exit."""
    rows = []
    for r in results:
        accs = r.test.accuracy()
        rows.append({
            "run": str(r.run), "data": r.data, "layers": r.layers, "seed": r.seed,
            "epochs": r.epochs, "test_images": len(r.test.labels),
            "flops": r.cost.total_flops, "test_acc": round(accs[-1], 6),
            "val_acc": round(r.val.accuracy()[-1], 6) if r.val else "",
            "exit_flops": ";".join(str(f) for f in r.cost.cumulative_flops),
            "exit_test_acc": ";".join(f"{a:.6f}" for a in accs),
        })  # fmt: skip
    return _write_csv(path, rows)


def write_summary_csv(path: Path, groups: Sequence[Group], ref: Group) -> Path:
    """One row per model (mean and std over seeds) and per early-exit setting."""
    rows = []
    for g in groups:
        settings = [("no early exit", [(r.accuracy, r.cost.total_flops) for r in g.runs])]
        settings += [(s, [(p.test.accuracy, p.test.avg_flops) for p in pts])
                     for s, pts in g.early_exit.items()]  # fmt: skip
        for setting, vals in settings:
            acc, std = mean_std([a for a, _ in vals])
            flops = statistics.fmean(f for _, f in vals)
            rows.append({
                "layers": g.layers, "setting": setting, "seeds": len(vals),
                "test_acc_mean": round(acc, 6), "test_acc_std": "" if math.isnan(std) else
                round(std, 6), "flops": round(flops), "pct_of_reference":
                round(100 * flops / ref.flops, 2), "reference": ref.layers,
            })  # fmt: skip
    return _write_csv(path, rows)


def _write_csv(path: Path, rows: list[dict]) -> Path:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())
    return path


def write_plots(out: Path, groups: Sequence[Group], title: str) -> list[Path]:
    """accuracy_vs_flops.png, grid.png (two-branch grid), early_exit.png, exit_fractions.png."""
    from ravit.reports import plots

    points = {}
    for g in groups:
        acc, std = mean_std([r.accuracy for r in g.runs])
        points[g.layers] = (g.flops, acc, std)
    labels = list(points)
    front = [labels[i] for i in pareto_front([points[k][:2] for k in labels])]
    files = [plots.plot_pareto(out / "accuracy_vs_flops.png", points, front,
                               f"{title}: every model, no early exit")]  # fmt: skip
    grid = {g.depths: g for g in groups if len(g.depths) == 2}
    if len({d[0] for d in grid}) >= 2 and len({d[1] for d in grid}) >= 2:
        acc = {d: points[g.layers][1] for d, g in grid.items()}
        flops = {d: g.flops for d, g in grid.items()}
        name = f"{title}: two-branch models (branch 1 at half size)"
        files.append(plots.plot_grid_maps(out / "grid.png", acc, flops, name))
    multi = [g for g in _table_groups(groups) if g.num_exits > 1]
    if multi:
        files += _early_exit_plots(out, multi, [g for g in _table_groups(groups)
                                                if g.num_exits == 1], title)  # fmt: skip
    return files


def _early_exit_plots(
    out: Path, multi: Sequence[Group], plain: Sequence[Group], title: str
) -> list[Path]:
    from ravit.reports import plots

    curves, calibrated = {}, {}
    for g in multi:
        for r in g.runs:  # one curve per seed: the seeds' spread is part of the picture
            curves[f"RAViT {g.layers} seed {r.seed}, one threshold"] = [
                (p.avg_flops, p.accuracy) for p in sweep_curve(r)
            ]
        calibrated[f"RAViT {g.layers}, val-calibrated"] = [
            (p.test.avg_flops, p.test.accuracy)
            for s, pts in g.early_exit.items() if s.startswith("val") for p in pts
        ]  # fmt: skip
    pts = {f"ViT {g.layers}": [(g.flops, r.accuracy) for r in g.runs] for g in plain}
    files = [plots.plot_tradeoff(out / "early_exit.png", curves, {**pts, **calibrated},
                                 f"{title}: early exit on the test split")]  # fmt: skip
    r = multi[0].runs[0]
    curve = sorted(sweep_curve(r, points=61), key=lambda p: p.thresholds[0])
    finite = [p for p in curve if math.isfinite(p.thresholds[0])]
    files.append(plots.plot_exit_fractions(
        out / "exit_fractions.png", [p.thresholds[0] for p in finite],
        [p.exit_fractions for p in finite], f"{title}: RAViT {multi[0].layers}, where images leave",
    ))  # fmt: skip
    return files


def report_markdown(
    title: str, groups: Sequence[Group], ref: Group, table: str, files: Sequence[Path], out: Path
) -> str:
    """The report as markdown: Table I analogue, every model, the files written."""
    r0 = groups[0].runs[0]
    lines = [
        f"# {title}",
        "",
        f"{sum(len(g.runs) for g in groups)} runs, {len(groups)} models; test split of "
        f"{len(r0.test.labels)} images; epochs: "
        f"{', '.join(sorted({str(r.epochs) for g in groups for r in g.runs}))}. Accuracy is the "
        "mean over seeds ± the sample standard deviation. Early-exit thresholds are set on each "
        "run's validation split, then applied to the test split.",
        "",
        "## Table I",
        "",
        table,
        "",
        "## Every model (no early exit)",
        "",
        f"| model | seeds | top-1 % | FLOPs | % of {ref.layers} |",
        "|---|---|---|---|---|",
    ]
    for g in groups:
        lines.append(f"| {g.layers} | {len(g.runs)} | {fmt_acc([r.accuracy for r in g.runs])} | "
                     f"{format_flops(g.flops)} | {100 * g.flops / ref.flops:.1f} |")  # fmt: skip
    lines += ["", "## Files", ""]
    lines += [f"- [{f.name}]({f.name})" for f in files]
    pngs = [f for f in files if f.suffix == ".png"]
    lines += ["", *[f"![{f.stem}]({f.name})" for f in pngs], ""]
    return "\n".join(lines)
