"""The space of RAViT allocations a search draws from, and the budget they must meet.

An allocation is a number of branches, a depth per branch (0: absent), the
branches' resolutions and an exit head per exit. The space is plain data
(`to_dict`) so that a study in a database can say which space it searches,
and every point is checked against the analytic cost model before anything
trains: a model whose first exit alone costs more than the budget can never
meet it and is rejected.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ravit.config import PRESETS, ModelConfig, model_config, parse_layers
from ravit.config.model import default_resolutions
from ravit.cost import format_flops, model_cost


@dataclass(frozen=True)
class Allocation:
    layers: str  # e.g. "1-3"
    resolutions: tuple[int, ...]
    heads: tuple[str, ...]  # one per exit

    @property
    def name(self) -> str:
        """A folder name: the same allocation always trains into the same run folder."""
        res = "x".join(map(str, self.resolutions))
        return f"{self.layers}_r{res}_{'+'.join(self.heads)}"


@dataclass(frozen=True)
class SearchSpace:
    preset: str
    depths: tuple[tuple[tuple[int, int], ...], ...]  # per branch count: (low, high) per branch
    resolution_choices: tuple[int, ...]  # sides the branches before the last may take
    heads: tuple[str, ...]  # exit heads to choose from, per exit

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; expected one of {sorted(PRESETS)}")
        if not self.depths or not self.heads:
            raise ValueError("a search space needs at least one depth range and one exit head")
        size = PRESETS[self.preset].settings["image_size"]
        patch = PRESETS[self.preset].settings["patch_size"]
        for side in self.resolution_choices:
            if side % patch or not 0 < side < size:
                raise ValueError(f"resolution {side}: expected a multiple of the patch size "
                                 f"{patch} below the image size {size}")  # fmt: skip
        for ranges in self.depths:
            if any(lo < 0 or hi < lo for lo, hi in ranges) or ranges[-1][1] < 1:
                raise ValueError(f"depth ranges {ranges}: expected 0 <= low <= high, and the last "
                                 "branch able to have a layer")  # fmt: skip
            if len(ranges) - 1 > len(self.resolution_choices):
                raise ValueError(
                    f"{len(ranges)} branches need {len(ranges) - 1} resolutions "
                    f"below the image; the choices are {self.resolution_choices}"
                )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def image_size(self) -> int:
        return PRESETS[self.preset].settings["image_size"]

    def resolution_sets(self, branches: int) -> list[tuple[int, ...]]:
        """Every increasing choice of sides for `branches` branches, the last the full image."""
        return [(*c, self.image_size) for c in
                itertools.combinations(sorted(self.resolution_choices), branches - 1)]  # fmt: skip

    def allocations(self) -> list[Allocation]:
        """Every point of the space (for a grid, and to find the cheapest)."""
        out = []
        for ranges in self.depths:
            for depths in itertools.product(*(range(lo, hi + 1) for lo, hi in ranges)):
                if not depths[-1] or not any(depths):
                    continue
                exits = sum(1 for d in depths if d)
                for res in self.resolution_sets(len(depths)):
                    for heads in itertools.product(self.heads, repeat=exits):
                        out.append(Allocation("-".join(map(str, depths)), res, heads))
        return out

    def config(self, a: Allocation, num_classes: int | None = None) -> ModelConfig:
        extra = {} if num_classes is None else {"num_classes": num_classes}
        return model_config(self.preset, a.layers, resolutions=a.resolutions,
                            exit_heads=list(a.heads), **extra)  # fmt: skip

    def suggest(self, trial) -> Allocation:
        """Draw an allocation with an Optuna trial (define-by-run: the branch count first)."""
        ranges = self.depths[
            trial.suggest_categorical("branches_option", list(range(len(self.depths))))
        ]
        depths = [trial.suggest_int(f"depth{i}", lo, hi) for i, (lo, hi) in enumerate(ranges)]
        sets = [",".join(map(str, r)) for r in self.resolution_sets(len(ranges))]
        res = tuple(int(v) for v in trial.suggest_categorical(f"res{len(ranges)}", sets).split(","))
        exits = sum(1 for d in depths if d)
        heads = tuple(trial.suggest_categorical(f"head{e}", list(self.heads)) for e in range(exits))
        return Allocation("-".join(map(str, depths)), res, heads)


def plain_vit(preset: str, depth: int | None = None) -> str:
    """The layer string of the preset's plain ViT of `depth` layers (default: as many as its
    default RAViT has in all), e.g. "0-4" for cifar10."""
    p = PRESETS[preset]
    default = parse_layers(p.default_layers)
    depth = depth or sum(default)
    return "-".join(["0"] * (len(default) - 1) + [str(depth)])


def check_budget(space: SearchSpace, budget: float) -> tuple[float, Allocation]:
    """The cheapest first exit of the space; refuses a budget below it, in one line."""
    best = None
    for a in space.allocations():
        first = model_cost(space.config(a)).exits[0].cumulative_flops
        if best is None or first < best[0]:
            best = (first, a)
    if best is None:
        raise ValueError("the search space holds no allocation (every last branch is absent)")
    if budget < best[0]:
        raise ValueError(
            f"budget {format_flops(budget)} is below the cheapest allowed model's first exit "
            f"({best[1].layers} at {list(best[1].resolutions)}: {format_flops(best[0])}): no "
            "allocation of this space can meet it"
        )
    return best


def parse_depths(texts: Sequence[str]) -> tuple[tuple[tuple[int, int], ...], ...]:
    """["0:2,1:4"] -> (((0, 2), (1, 4)),): one depth range per branch, per branch count."""
    out = []
    for text in texts:
        ranges = []
        for part in text.split(","):
            lo, sep, hi = part.strip().partition(":")
            try:
                ranges.append((int(lo), int(hi if sep else lo)))
            except ValueError:
                raise ValueError(f"depth ranges {text!r}: expected LOW:HIGH per branch, e.g. "
                                 "0:2,1:4") from None  # fmt: skip
        out.append(tuple(ranges))
    return tuple(out)


def default_space(preset: str, branches: int = 2) -> SearchSpace:
    """Two (or more) branches at the preset's (or halving) resolutions, 0-3 layers before the
    last, 1-6 in it, linear heads."""
    p = PRESETS[preset]
    res = default_resolutions(p, branches)[:-1]
    ranges = tuple([(0, 3)] * (branches - 1) + [(1, 6)])
    return SearchSpace(preset, (ranges,), tuple(res), ("linear",))
