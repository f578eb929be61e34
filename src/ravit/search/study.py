"""`run_search`: an Optuna study over RAViT allocations, each trial a training run.

The objective is the validation accuracy of the trial's model with early exit
at thresholds calibrated (on the same validation split) for the budget: the
accuracy a user of that model gets at that cost. Trials are pruned by
successive halving / Hyperband on the validation accuracy per epoch, so most
of the compute goes to promising allocations, and an allocation whose first
exit alone exceeds the budget is rejected before it trains.

The study lives in a database: SQLite in OUT by default, or any SQLAlchemy URL,
so that several processes running the same search share it. A trial's run
folder is named after its allocation, so a trial retried after its worker was
killed (a stale heartbeat marks it failed) resumes the same run.
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from ravit.config import resolve_config
from ravit.cost import model_cost
from ravit.evaluation import evaluate_run
from ravit.exits import calibrate_budget, simulate
from ravit.runs import folder as runfs
from ravit.runs.lock import RunBusyError
from ravit.search.space import Allocation, SearchSpace, check_budget
from ravit.training import fit

STUDY = "ravit-search"
PRUNERS = ("hyperband", "halving", "none")


@dataclass(frozen=True)
class SearchSettings:
    data: str  # data spec
    budget_flops: float  # average FLOPs per image the early-exit model may spend
    epochs: int = 10  # full fidelity: epochs of a trial that is never pruned
    trials: int = 20  # trials in the study, over all its workers
    pruner: str = "hyperband"
    seed: int = 0
    overrides: tuple[str, ...] = ()  # run-config key=value for every trial
    heartbeat: int = 30  # seconds between a running trial's heartbeats in the storage
    grace: int = 120  # seconds without one after which a trial's worker counts as dead

    def identity(self) -> dict:
        """What makes two searches the same (a study is refused for another)."""
        return {"data": self.data, "budget_flops": self.budget_flops, "epochs": self.epochs,
                "seed": self.seed, "overrides": list(self.overrides)}  # fmt: skip


@dataclass
class TrialResult:
    number: int
    state: str
    allocation: Allocation | None
    value: float | None
    attrs: dict = field(default_factory=dict)


def _pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs,
                                              reduction_factor=3)  # fmt: skip
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; expected one of {PRUNERS}")


def open_study(out: Path, space: SearchSpace, settings: SearchSettings,
               storage: str | None = None, name: str | None = None) -> optuna.Study:  # fmt: skip
    """Create or load the study; refuse an unreachable storage or another search's study."""
    url = storage or f"sqlite:///{Path(out).resolve() / 'study.db'}"
    name = name or STUDY
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = _pruner(settings.pruner, settings.epochs)
    for attempt in range(3):  # workers starting together race to create a new database
        try:
            study = _create(url, name, settings, pruner)
            break
        except Exception as err:  # SQLAlchemy and its drivers raise many types
            if attempt == 2:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ValueError(f"study storage {url!r} cannot be used: {first}") from None
            time.sleep(1 + attempt)
    key = {"space": space.to_dict(), **settings.identity()}
    saved = study.user_attrs.get("search")
    if saved is None:
        study.set_user_attr("search", _jsonable(key))
    elif saved != _jsonable(key):
        differs = sorted(k for k in key if _jsonable(key).get(k) != saved.get(k))
        raise ValueError(
            f"study {name!r} in {url} belongs to another search (it differs in "
            f"{', '.join(differs)}): give another --study name or --out folder"
        )
    else:
        # A worker joining a study draws its own allocations: with the creator's seed it
        # would draw the creator's sequence and wait on every allocation the creator trains.
        study.sampler = optuna.samplers.TPESampler(seed=_worker_seed(settings.seed))
    return study


def _worker_seed(seed: int) -> int:
    """The sampler seed of a worker that joins a study: the search's seed, this host and
    process (the worker that creates the study uses the seed itself, so that a one-worker
    search draws the same allocations every time)."""
    return zlib.crc32(f"{seed}:{socket.gethostname()}:{os.getpid()}".encode())


def _create(url: str, name: str, settings: SearchSettings, pruner) -> optuna.Study:
    with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna's words
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        store = optuna.storages.RDBStorage(
            url, heartbeat_interval=settings.heartbeat, grace_period=settings.grace,
            **_retry(max_retry=2),
        )  # fmt: skip
    return optuna.create_study(
        storage=store, study_name=name, direction="maximize", load_if_exists=True,
        pruner=pruner, sampler=optuna.samplers.TPESampler(seed=settings.seed),
    )  # fmt: skip


def _retry(max_retry: int) -> dict:
    """A trial whose worker died is failed and run again (the same allocation, so its run
    folder resumes): Optuna 4.9 and later name the callback differently."""
    new = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if new is not None:
        return {"heartbeat_stale_trial_callback": new(max_retry=max_retry)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry)}


def _jsonable(value):
    """Tuples as lists, as the database gives them back."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class Objective:
    """One trial: draw an allocation, check its cost, train (pruned by the epoch), calibrate."""

    def __init__(self, out: Path, space: SearchSpace, settings: SearchSettings,
                 progress: bool = False):  # fmt: skip
        self.out, self.space, self.settings, self.progress = Path(out), space, settings, progress
        self._reported: dict[int, set[int]] = {}  # trial number -> epochs reported to Optuna

    def __call__(self, trial: optuna.Trial) -> float:
        a = self.space.suggest(trial)
        cfg = self.space.config(a)
        cost = model_cost(cfg)
        trial.set_user_attr("allocation", a.name)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("full_flops", cost.total_flops)
        if cost.exits[0].cumulative_flops > self.settings.budget_flops:
            trial.set_user_attr("rejected", "its first exit costs more than the budget")
            raise optuna.TrialPruned("rejected before training: first exit above the budget")
        run = self.out / "trials" / a.name
        trial.set_user_attr("run", str(run))
        while True:
            earlier = _finished(trial.study, a.name)
            if earlier is not None:  # drawn again: the earlier trial's outcome, at no cost
                return _as_earlier(trial, earlier)
            try:
                self._train(trial, run, a)
                break
            except RunBusyError:  # another worker trains this allocation now: wait for it
                time.sleep(2)
        return self._score(trial, run)

    def _train(self, trial: optuna.Trial, run: Path, a: Allocation) -> None:
        s = self.settings
        seen = [0]  # images trained in this trial (not those of a run it resumed)

        def on_epoch(r: dict) -> None:
            seen[0] += round(r["images_per_s"] * r["epoch_seconds"])
            trial.set_user_attr("images", seen[0])
            self._report(trial, r)

        done = runfs.read_metrics(run) if (run / runfs.CONFIG).exists() else None
        for r in done or []:  # the epochs a killed or pruned trial of it left
            self._report(trial, r)
        if done is not None and len(done) >= s.epochs:
            return
        if done is not None:
            fit(run, resume=True, on_epoch=on_epoch, progress=self.progress)
            return
        overrides = [f"model.preset={self.space.preset}", f"model.layers={a.layers}",
                     f"model.resolutions={list(a.resolutions)}",
                     f"model.exit_heads={list(a.heads)}", f"data.spec={s.data}",
                     f"train.epochs={s.epochs}", f"train.seed={s.seed}", *s.overrides]  # fmt: skip
        fit(run, resolve_config(overrides=overrides), on_epoch=on_epoch, progress=self.progress)

    def _report(self, trial: optuna.Trial, r: dict) -> None:
        if "val_acc_exits" not in r:
            raise ValueError("the search needs a validation split: data.val_size must be > 0")
        trial.set_user_attr("epochs", r["epoch"])
        reported = self._reported.setdefault(trial.number, set())
        if r["epoch"] not in reported:  # again after waiting on another worker's run
            trial.report(r["val_acc_exits"][-1], r["epoch"])
            reported.add(r["epoch"])
        # A trial at full fidelity has spent its compute: it is scored, not pruned.
        if r["epoch"] < self.settings.epochs and trial.should_prune():
            trial.set_user_attr("pruned_at", r["epoch"])
            raise optuna.TrialPruned(f"pruned after epoch {r['epoch']}")

    def _score(self, trial: optuna.Trial, run: Path) -> float:
        """Validation accuracy with early exit at thresholds calibrated for the budget."""
        val = evaluate_run(run, split="val")
        cost = model_cost(val.model.cfg)
        lg, y = val.logits.logits, val.logits.labels
        budget = self.settings.budget_flops
        taus = None
        if cost.total_flops > budget:
            taus = calibrate_budget(lg, y, cost, budget).thresholds
        r = simulate(lg, y, cost, taus)
        trial.set_user_attr("val_accuracy_full", val.logits.accuracy()[-1])
        trial.set_user_attr("ee_flops", r.avg_flops)
        trial.set_user_attr("thresholds", [t if math.isfinite(t) else "inf" for t in r.thresholds])
        return r.accuracy


def _as_earlier(trial: optuna.Trial, earlier: optuna.trial.FrozenTrial) -> float:
    """The outcome of an earlier trial of the same allocation, for this one."""
    trial.set_user_attr("duplicate_of", earlier.number)
    if earlier.state == optuna.trial.TrialState.PRUNED:
        raise optuna.TrialPruned(f"as trial {earlier.number}")
    for k in ("epochs", "val_accuracy_full", "ee_flops", "thresholds"):
        trial.set_user_attr(k, earlier.user_attrs.get(k))
    return earlier.value


def _finished(study: optuna.Study, allocation: str) -> optuna.trial.FrozenTrial | None:
    """An earlier complete or pruned trial of this allocation (not itself a duplicate)."""
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for t in study.get_trials(deepcopy=False, states=finished):
        if t.user_attrs.get("allocation") == allocation and "duplicate_of" not in t.user_attrs:
            return t
    return None


def results(study: optuna.Study) -> list[TrialResult]:
    """Every trial; `value` only for complete ones (Optuna gives a pruned trial its last
    intermediate value, the accuracy without early exit, which is not the objective)."""
    out = []
    for t in study.get_trials(deepcopy=False):
        a = _allocation(t.params, t.user_attrs)
        value = t.value if t.state == optuna.trial.TrialState.COMPLETE else None
        out.append(TrialResult(t.number, t.state.name, a, value, dict(t.user_attrs)))
    return out


def best_trial(study: optuna.Study) -> TrialResult | None:
    done = [r for r in results(study) if r.value is not None]
    return max(done, key=lambda r: r.value) if done else None


def _allocation(params: dict, attrs: dict) -> Allocation | None:
    name = attrs.get("allocation")
    if not name:
        return None
    layers, res, heads = name.split("_", 2)
    return Allocation(layers, tuple(int(v) for v in res[1:].split("x")), tuple(heads.split("+")))


def run_search(
    out: str | Path,
    space: SearchSpace,
    settings: SearchSettings,
    *,
    storage: str | None = None,
    name: str | None = None,
    progress: bool = False,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.Study:
    """Run trials until the study holds `settings.trials` finished ones (any worker's)."""
    out = Path(out)
    check_budget(space, settings.budget_flops)
    out.mkdir(parents=True, exist_ok=True)
    study = open_study(out, space, settings, storage, name)
    stop = _Enough(settings.trials, len(space.allocations()))
    callbacks = [stop] + ([on_trial] if on_trial is not None else [])
    if not stop.enough(study):
        study.optimize(Objective(out, space, settings, progress), callbacks=callbacks,
                       catch=())  # fmt: skip
    return study


def distinct_allocations(study: optuna.Study) -> set[str]:
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return {
        t.user_attrs.get("allocation") for t in study.get_trials(deepcopy=False, states=finished)
    }


class _Enough:
    """Stops the study once `trials` distinct allocations have finished (complete or pruned,
    any worker), or the whole space has; a sampler that draws an allocation again costs
    nothing (its run is reused) but does not count."""

    def __init__(self, trials: int, space_size: int):
        self.trials, self.space_size = trials, space_size

    def enough(self, study: optuna.Study) -> bool:
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        done = [t for t in study.get_trials(deepcopy=False) if t.state in finished]
        distinct = distinct_allocations(study)
        return len(distinct) >= min(self.trials, self.space_size) or len(done) >= 10 * self.trials

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.enough(study):
            study.stop()
