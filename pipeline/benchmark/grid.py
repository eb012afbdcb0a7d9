"""The benchmark grid: every cell (source × strategy × label fraction × seed, plus the scratch
baseline of every backbone), each cell's ``vtl train`` settings, and which cells still need to run.

Settings are merged in the order ``train`` < ``train.<strategy>`` < the source's ``train`` < the
source's ``train.<strategy>``. The scratch baseline of a backbone takes ``train`` <
``train.scratch``, then from the sources of that backbone the input settings (``input_size``,
``temporal``, ``sampling``) and their ``train.scratch``: sources of one backbone must agree on
them, so that one baseline serves them all.

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

    @property
    def run(self) -> str:
        head = f"{self.backbone}-{SCRATCH}" if self.strategy == SCRATCH else f"{self.source}-{self.strategy}"
        return f"{BENCHMARK_RUN_PREFIX}{head}-f{self.fraction:g}-s{self.seed}"

    def train_config(self) -> TrainConfig:
        return TrainConfig(backbone=self.backbone, strategy=self.strategy,
                           weights=None if self.strategy == SCRATCH else self.weights,
                           fraction=self.fraction, seed=self.seed, name=self.run, **self.options)


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


def plan(sf: SourcesFile, strategies: Sequence[str], fractions: Sequence[float], seeds: int) -> list[Cell]:
    """Every cell of the grid, the scratch baselines last; validates every cell's settings."""
    cells: list[Cell] = []
    for s in sf.sources:
        for strategy in strategies:
            for fraction in fractions:
                for seed in range(seeds):
                    cells.append(Cell(s.name, s.backbone, s.weights, strategy, fraction, seed,
                                      source_options(sf, s, strategy)))
    for backbone in dict.fromkeys(s.backbone for s in sf.sources):
        opts = scratch_options(sf, backbone)
        for fraction in fractions:
            for seed in range(seeds):
                cells.append(Cell(SCRATCH, backbone, "none", SCRATCH, fraction, seed, dict(opts)))
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


def _expected_config(ws: Workspace, cell: Cell) -> dict[str, Any]:
    """The settings a cell's recorded run config must hold to count as this cell."""
    cfg = cell.train_config()
    d = dataclasses.asdict(cfg)
    for k in (*SPEED_OPTIONS, "name"):
        d.pop(k, None)
    d["weights"] = cfg.resolved_weights()
    d["sampling"] = cfg.sampling or ws.latest_sampling()
    d["input_size"] = cfg.size
    return d


def _stale(ws: Workspace, cell: Cell) -> list[str]:
    """Settings in which the cell's recorded run differs from the grid's (empty: same or none)."""
    recorded = ws.run(cell.run).config()
    if recorded is None:
        return []
    return sorted(k for k, v in _expected_config(ws, cell).items() if recorded.get(k, v) != v)


def cells_to_run(ws: Workspace, cells: Sequence[Cell], *, force: bool) -> list[tuple[Cell, bool]]:
    """(cell, restart) of every cell without results for its current settings."""
    todo = []
    for c in cells:
        changed = _stale(ws, c)
        if changed:
            warn(f"benchmark: cell {c.run} was trained with other settings ({', '.join(changed)}): retraining it")
        done = ws.run(c.run).is_evaluated and not changed
        if force or not done:
            todo.append((c, force or bool(changed)))
    return todo
