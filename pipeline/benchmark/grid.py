"""The benchmark grid: every cell (source × strategy × label fraction × seed, plus the scratch
baseline of every backbone), each cell's ``vtl train`` settings, and which cells still need to run.

Settings are merged in the order ``train`` < ``train.<strategy>`` < the source's ``train`` < the
source's ``train.<strategy>``. The scratch baseline of a backbone takes ``train`` <
``train.scratch``, then from the sources of that backbone the input settings (``input_size``,
``temporal``, ``sampling``) and their ``train.scratch``: sources of one backbone must agree on
them, so that one baseline serves them all.

With ``--select-lr`` every cell is repeated at each learning-rate factor (the configured ``lr`` ×
0.333, 1, 3 by default); the ×1 cell keeps the plain run name, the others end in ``-lr<factor>x``.

A cell is done when its run is evaluated with the settings the grid now gives it; one trained with
other settings is retrained.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.benchmark.sources import Source, SourcesFile
from pipeline.choices import SCRATCH
from pipeline.engine.config import SPEED_OPTIONS, TrainConfig
from pipeline.errors import UserError
from pipeline.files import path_safe
from pipeline.progress import warn
from pipeline.workspace import BENCHMARK_RUN_PREFIX, Workspace

INPUT_KEYS = ("input_size", "temporal", "sampling")  # shared by a backbone's sources and its scratch run


@dataclass
class Cell:
    source: str  # display name; "scratch" for the baseline
    backbone: str
    weights: str  # resolved ("none" for scratch)
    strategy: str
    fraction: float
    seed: int
    options: dict[str, Any]  # `vtl train` options from the sources file
    lr_factor: float = 1.0  # × the configured lr (--select-lr tries several)

    @property
    def group(self) -> tuple[str, str, str]:
        """The cells one learning rate is chosen for: a source × strategy (scratch: per backbone)."""
        return self.source, self.backbone, self.strategy

    @property
    def run(self) -> str:
        head = f"{path_safe(self.backbone)}-{SCRATCH}" if self.strategy == SCRATCH else f"{self.source}-{self.strategy}"
        tail = "" if self.lr_factor == 1.0 else f"-lr{self.lr_factor:.3g}x"
        return f"{BENCHMARK_RUN_PREFIX}{head}-f{self.fraction:g}-s{self.seed}{tail}"

    @property
    def lr(self) -> float:
        return float(self.options.get("lr", _DEFAULT_LR)) * self.lr_factor

    def train_config(self) -> TrainConfig:
        return TrainConfig(backbone=self.backbone, strategy=self.strategy,
                           weights=None if self.strategy == SCRATCH else self.weights,
                           fraction=self.fraction, seed=self.seed, name=self.run, **{**self.options, "lr": self.lr})


_DEFAULT_LR = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == "lr")


def source_options(sf: SourcesFile, source: Source, strategy: str) -> dict[str, Any]:
    return {**sf.train, **sf.per_strategy.get(strategy, {}), **source.train, **source.per_strategy.get(strategy, {})}


def scratch_options(sf: SourcesFile, backbone: str) -> dict[str, Any]:
    opts = {**sf.train, **sf.per_strategy.get(SCRATCH, {})}
    chosen: dict[str, Any] | None = None
    first = ""
    for s in sf.sources:
        if s.backbone != backbone:
            continue
        mine = {**opts, **{k: v for k, v in s.train.items() if k in INPUT_KEYS}, **s.per_strategy.get(SCRATCH, {})}
        if chosen is None:
            chosen, first = mine, s.name
        elif mine != chosen:
            diff = sorted(k for k in set(mine) | set(chosen) if mine.get(k) != chosen.get(k))
            raise UserError(f"{sf.path}: sources {first!r} and {s.name!r} share backbone {backbone} but would "
                            f"train different scratch baselines ({', '.join(diff)}): give them the same "
                            f"{', '.join(INPUT_KEYS)} and train.scratch settings")
    return chosen if chosen is not None else opts


def plan(sf: SourcesFile, strategies: Sequence[str], fractions: Sequence[float], seeds: int,
         lr_factors: Sequence[float] = (1.0,)) -> list[Cell]:
    """Every cell of the grid (each at every learning-rate factor), the scratch baselines last;
    validates every cell's settings."""
    cells: list[Cell] = []
    for s in sf.sources:
        for strategy in strategies:
            for fraction in fractions:
                for seed in range(seeds):
                    cells.extend(Cell(s.name, s.backbone, s.weights, strategy, fraction, seed,
                                      source_options(sf, s, strategy), factor) for factor in lr_factors)
    for backbone in dict.fromkeys(s.backbone for s in sf.sources):
        opts = scratch_options(sf, backbone)
        for fraction in fractions:
            for seed in range(seeds):
                cells.extend(Cell(SCRATCH, backbone, "none", SCRATCH, fraction, seed, dict(opts), factor)
                             for factor in lr_factors)
    for c in cells:
        try:
            c.train_config()
        except UserError as e:
            what = f"the scratch baseline of {c.backbone}" if c.strategy == SCRATCH else \
                f"source {c.source!r} with strategy {c.strategy}"
            raise UserError(f"{sf.path}: {what}: {e}") from None
        except TypeError as e:
            raise UserError(f"{sf.path}: {e}") from None
    return cells


def _expected_config(ws: Workspace, cfg: TrainConfig) -> dict[str, Any]:
    """The settings a run's recorded config must hold to count as a run of ``cfg``."""
    d = dataclasses.asdict(cfg)
    for k in (*SPEED_OPTIONS, "name"):
        d.pop(k, None)
    d["weights"] = cfg.resolved_weights()
    d["sampling"] = cfg.sampling or ws.latest_sampling()
    d["input_size"] = cfg.size
    return d


def stale(ws: Workspace, cfg: TrainConfig) -> list[str]:
    """Settings in which the recorded run ``cfg.run_name`` differs from ``cfg`` (empty: same or none)."""
    recorded = ws.run(cfg.run_name).config()
    if recorded is None:
        return []
    return sorted(k for k, v in _expected_config(ws, cfg).items() if recorded.get(k, v) != v)


def cells_to_run(ws: Workspace, cells: Sequence[Cell], *, force: bool, tested: bool = True
                 ) -> list[tuple[Cell, bool]]:
    """(cell, restart) of every cell without results for its current settings: evaluated on the test
    split (``tested``), or else trained to the end."""
    todo = []
    for c in cells:
        cfg = c.train_config()
        changed = stale(ws, cfg)
        if changed:
            warn(f"benchmark: cell {c.run} was trained with other settings ({', '.join(changed)}): retraining it")
        run = ws.run(c.run)
        done = (run.is_evaluated if tested else run.is_finished(cfg.epochs, cfg.patience)) and not changed
        if force or not done:
            todo.append((c, force or bool(changed)))
    return todo
