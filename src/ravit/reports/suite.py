"""Experiment suites: one YAML file, many runs with the same training budget.

A suite file holds a run config (the same sections as `ravit train
--config`) and a list of run groups, each a list of layer strings or a
two-branch grid, trained with the listed seeds::

    name: cifar10-subset
    config:
      model: {preset: cifar10}
      data: {spec: "cifar10:../shared/data/cifar10-subset", val_size: 1000}
      train: {epochs: 5, batch_size: 128}
    runs:
      - {layers: [0-3, 0-4, 1-3], seeds: [0]}
      - {grid: [[0, 1, 2, 3], [1, 2, 3, 4, 5]], seeds: [0]}   # Figure 3
      - {layers: [0-4, 1-3], seeds: [1, 2]}

Runs are trained in the order listed (duplicates once), each into
OUT/<layers>-s<seed>, so that an interrupted suite resumes where it stopped
and a suite cut short still holds its first groups.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ravit.config import RunConfig, build_model_config, read_yaml_file, resolve_config
from ravit.runs import folder as runfs
from ravit.runs.lock import RunBusyError
from ravit.training import fit

SUITE_KEYS = ("name", "description", "config", "runs")
GROUP_KEYS = ("layers", "grid", "seeds")


@dataclass(frozen=True)
class SuiteRun:
    layers: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.layers}-s{self.seed}"


@dataclass(frozen=True)
class Suite:
    name: str
    config: dict[str, Any]  # model/data/train sections, before the per-run layers and seed
    runs: tuple[SuiteRun, ...]
    source: str

    def run_config(self, run: SuiteRun, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
        """The resolved config of one run: the suite's, its layers and seed, then overrides."""
        base = {**self.config, "model": {**self.config.get("model", {}), "layers": run.layers}}
        base["train"] = {**self.config.get("train", {}), "seed": run.seed}
        cfg = resolve_config(base=base, overrides=overrides)
        # The run's identity wins over overrides: OUT/<layers>-s<seed> must hold that run.
        if cfg.model.layers != run.layers or cfg.train.seed != run.seed:
            raise ValueError("model.layers and train.seed are set by the suite, not by overrides")
        return cfg


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file; every error names the file and the bad entry."""
    path = Path(path)
    raw = read_yaml_file(path, "suite file")  # YAML 1.2, as run configs: `amp: off` is "off"
    if not isinstance(raw, dict):
        raise ValueError(f"suite file {path}: expected a mapping with keys {SUITE_KEYS}")
    unknown = set(raw) - set(SUITE_KEYS)
    if unknown:
        raise ValueError(f"suite file {path}: unknown keys {sorted(unknown)}; known: {SUITE_KEYS}")
    config = raw.get("config") or {}
    if not isinstance(config, dict):
        raise ValueError(f"suite file {path}: 'config' must be a mapping of run-config sections")
    groups = raw.get("runs")
    if not isinstance(groups, list) or not groups:
        raise ValueError(f"suite file {path}: 'runs' must be a non-empty list of run groups")
    runs: list[SuiteRun] = []
    for i, group in enumerate(groups):
        for run in _expand_group(group, f"{path}: runs[{i}]"):
            if run not in runs:
                runs.append(run)
    suite = Suite(str(raw.get("name") or path.stem), config, tuple(runs), str(path))
    for run in runs:  # every run's config is checked here, before hours of training
        try:  # the model too: classes and channels come from the data, any will do here
            section = suite.run_config(run).model
            build_model_config(section, num_classes=section.num_classes or 2, in_chans=1)
        except ValueError as err:
            raise ValueError(f"{path}: run {run.name}: {err}") from None
    return suite


def _expand_group(group: Any, where: str) -> list[SuiteRun]:
    if not isinstance(group, dict) or set(group) - set(GROUP_KEYS):
        raise ValueError(f"{where}: expected a mapping with keys among {GROUP_KEYS}, got {group!r}")
    if ("layers" in group) == ("grid" in group):
        raise ValueError(f"{where}: give either 'layers' or 'grid'")
    seeds = group.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(_is_int(s) for s in seeds):
        raise ValueError(f"{where}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    if "layers" in group:
        layers = group["layers"]
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ValueError(f"{where}: 'layers' must be a list of strings like '1-3'")
    else:
        layers = _grid_layers(group["grid"], where)
    return [SuiteRun(lay, int(s)) for s in seeds for lay in layers]


def _grid_layers(grid: Any, where: str) -> list[str]:
    """[[a, b], [c, d]] -> "a-c", "a-d", "b-c", "b-d" (one list of depths per branch)."""
    ok = isinstance(grid, list) and len(grid) >= 2
    ok = ok and all(isinstance(g, list) and g and all(_is_int(d) for d in g) for g in grid)
    if not ok:
        raise ValueError(f"{where}: 'grid' must list one list of depths per branch, got {grid!r}")
    combos: list[list[int]] = [[]]
    for depths in grid:
        combos = [c + [int(d)] for c in combos for d in depths]
    return ["-".join(map(str, c)) for c in combos if any(c)]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def train_suite(
    suite: Suite,
    out: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = False,
    on_run: Callable[[SuiteRun, str], None] | None = None,
    on_epoch: Callable[[SuiteRun, dict], None] | None = None,
) -> list[Path]:
    """Train every run of the suite that is not finished; returns the run folders in order.

    A finished run (as many epochs in its metrics as the config asks) is
    reused, an unfinished one resumed; a folder holding a run of another
    config is an error, not silently mixed into the results. A run that
    another live process is training is skipped (`on_run` hears "busy") and
    left out of the returned folders, so several processes (one per core or
    machine) can work through one suite side by side.
    """
    out = Path(out)
    configs = [(run, suite.run_config(run, overrides)) for run in suite.runs]
    folders = []
    for run, cfg in configs:
        folder = out / run.name
        folders.append(folder)
        state = _run_state(folder, cfg)
        if on_run:
            on_run(run, state)
        if state == "done":
            continue

        def log(record: dict, run: SuiteRun = run) -> None:
            if on_epoch:
                on_epoch(run, record)

        try:
            if state == "resume":
                fit(folder, resume=True, progress=progress, on_epoch=log)
            else:
                fit(folder, cfg, progress=progress, on_epoch=log)
        except RunBusyError:
            folders.pop()
            if on_run:
                on_run(run, "busy")
    return folders


def _run_state(folder: Path, cfg: RunConfig) -> str:
    """ "new", "resume" or "done"; raises if the folder holds something else."""
    if not folder.exists():
        return "new"
    if not (folder / runfs.CONFIG).is_file():
        raise ValueError(f"{folder} exists but is not a run folder (no {runfs.CONFIG}): move it")
    saved, _ = runfs.read_config(folder)
    if saved != cfg.to_dict():
        diff = sorted(
            f"{s}.{k}"
            for s, section in cfg.to_dict().items()
            for k, v in section.items()
            if saved.get(s, {}).get(k) != v
        )
        raise ValueError(
            f"{folder} holds a run with another config (differs in {', '.join(diff) or '?'}): "
            "train the suite into another folder, or delete it"
        )
    done = len(runfs.read_metrics(folder))
    finished = done >= cfg.train.epochs and (folder / runfs.CHECKPOINT).is_file()
    return "done" if finished else "resume"
