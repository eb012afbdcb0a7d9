"""``vtl benchmark``: which source (backbone + pretrained weights) transfers best to this target?

The grid is sources × strategies × label fractions × seeds, plus the ``scratch`` baseline of
every backbone at every fraction and seed (see :mod:`pipeline.benchmark`). In order:

1. **Transferability** (before any training): LogME of every source's frozen features on the
   target's training split, and LEEP where the source is a ``vtl train`` checkpoint with its own
   classifier → ``benchmark/transferability.csv`` with the predicted ranking.
2. **Cells**: one ``vtl train`` run + ``vtl evaluate`` on the test split per cell, named
   ``bench-<source>-<strategy>-f<fraction>-s<seed>`` (scratch: ``bench-<backbone>-scratch-…``).
   The grid resumes: a cell evaluated with the same settings is not recomputed, and a
   half-trained one resumes from its ``last.pt``.
3. **Report**: ``benchmark/results.csv`` (one row per cell), ``report.md``,
   ``learning_curve.png``, ``best_strategy.png`` (see :mod:`pipeline.report.benchmark`).

Locking: the benchmark holds the workspace lock from start to end, so no other ``vtl`` process
writes to the workspace meanwhile. With ``--max-parallel N`` (N > 1) the cells run in N child
processes (``python -m pipeline.stages.benchmark cell …``, this module's entry point) that do not
take the lock themselves: they run under the parent's lock, each writing only its own run (the
features linear cells need are extracted by the parent first).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.benchmark.config import (
    DEFAULT_FRACTIONS,
    DEFAULT_LR_FACTORS,
    DEFAULT_SEEDS,
    DEFAULT_STRATEGIES,
    BenchmarkConfig,
)
from pipeline.benchmark.cost import CostSetting, costs
from pipeline.benchmark.grid import Cell, cells_to_run, plan, stale
from pipeline.benchmark.results import FAILED, RESULT_COLUMNS, collect_results, csv_row
from pipeline.benchmark.runner import run_tasks
from pipeline.benchmark.scores import TRANSFER_COLUMNS, compute_transferability
from pipeline.benchmark.selection import SELECTION_COLUMNS, choose_lr
from pipeline.benchmark.sources import PRETRAIN_RUN, Source, SourcesFile, check_weights, load_sources
from pipeline.benchmark.tasks import PRETRAIN, TEST, TRAIN, Task, source_workspace, task_workspace
from pipeline.choices import SCRATCH
from pipeline.engine.config import EvaluateConfig, TrainConfig
from pipeline.engine.run_folder import RunFolder
from pipeline.errors import UserError
from pipeline.files import write_csv
from pipeline.progress import echo, warn
from pipeline.report.benchmark import BenchmarkResults, add_transfer_gains, scratch_cost_key, write_report
from pipeline.sharding import Shard
from pipeline.stages.evaluate import run_evaluate
from pipeline.stages.train import run_train
from pipeline.workspace import Workspace

__all__ = ["BenchmarkConfig", "run_benchmark"]

# How a child process runs one cell: this module's entry point.
CHILD_COMMAND = (sys.executable, "-m", "pipeline.stages.benchmark", "task")


def run_benchmark(ws: Workspace, cfg: BenchmarkConfig) -> dict[str, Any]:
    ws.require_prepared()
    sf = load_sources(cfg.sources)
    strategies = cfg.strategies or sf.strategies or DEFAULT_STRATEGIES
    fractions = cfg.fractions or sf.fractions or DEFAULT_FRACTIONS
    seeds = cfg.seeds or sf.seeds or DEFAULT_SEEDS
    factors = (cfg.lr_factors or sf.lr_factors or DEFAULT_LR_FACTORS) if cfg.select_lr else (1.0,)
    sf.bind({s.name: _pretraining(ws, s).best for s in sf.sources if s.dataset is not None})
    cells = plan(sf, strategies, fractions, seeds, factors)
    check_weights(sf)
    ws.latest_sampling()  # fails early when `vtl sample` was not run
    if not ws.manifest_rows("test"):
        raise UserError(f"{ws.root} has no test split, and every cell is evaluated on it: prepare the workspace "
                        "with --test-fraction above 0 (or an official test split)")
    selecting = len(factors) > 1
    if selecting and not ws.manifest_rows("val"):
        raise UserError(f"{ws.root} has no validation split, and --select-lr chooses each learning rate on it: "
                        "prepare the workspace with --val-fraction above 0, or pass --no-select-lr")
    out = ws.benchmark_dir
    t0 = time.perf_counter()
    with ws.lock("benchmark"):
        echo(f"benchmark: {len(sf.sources)} source(s) × {len(strategies)} strategies × {len(fractions)} "
             f"fraction(s) × {seeds} seed(s) × {len(factors)} learning rate(s) + scratch = {len(cells)} cells")
        pretrained = _pretrain_sources(ws, sf, cfg)
        scores = compute_transferability(ws, sf, need_eval_features="linear" in strategies)
        write_csv(out / "transferability.csv", TRANSFER_COLUMNS, scores)
        todo = cells_to_run(ws, cells, force=cfg.force, tested=not selecting)
        echo(f"benchmark: {len(cells) - len(todo)} cell(s) done before, {len(todo)} to run")
        _run(ws, cfg, [Task(TRAIN, c.run, dataclasses.asdict(c.train_config()), restart=restart, test=not selecting)
                       for c, restart in todo])
        chosen, selection = choose_lr(ws, cells) if selecting else ({}, None)
        kept = [c for c in cells if c.lr_factor == chosen.get(c.group, 1.0)]
        if selection is not None:
            write_csv(out / "lr_selection.csv", SELECTION_COLUMNS, selection)
            _run(ws, cfg, [Task(TEST, c.run, dataclasses.asdict(EvaluateConfig(run=c.run, split="test")))
                           for c in kept if _needs_test(ws.run(c.run))])
        rows = add_transfer_gains(collect_results(ws, kept))
        write_csv(out / "results.csv", RESULT_COLUMNS, [csv_row(r) for r in rows])
        failed = [r for r in rows if r["status"] == FAILED]
        if len(failed) == len(rows):
            raise UserError(f"benchmark: no cell finished (first failure, {failed[0]['run']}: {failed[0]['error']}); "
                            f"see {out / 'results.csv'}")
        summary = write_report(out, BenchmarkResults(
            rows, scores, costs=_costs(ws, sf, kept, out / "cost.json"), pretraining=pretrained,
            lr_selection=selection, workspace_name=ws.root.name, num_test_videos=len(ws.manifest_rows("test"))))
    return {**summary, "results": out / "results.csv", "transferability": out / "transferability.csv",
            "summary": out / "summary.json", "cells": len(cells), "ran": len(todo),
            "seconds": time.perf_counter() - t0}


def _run(ws: Workspace, cfg: BenchmarkConfig, tasks: list[Task]) -> None:
    """One phase: every task ends (finished or failed) before the next phase starts."""
    if tasks:
        run_tasks(ws, tasks, max_parallel=cfg.max_parallel, run_task=run_task, child_command=CHILD_COMMAND)


def _needs_test(run: RunFolder) -> bool:
    return run.is_trained and not run.is_evaluated and run.failure() is None


def _pretraining(ws: Workspace, s: Source) -> RunFolder:
    assert s.dataset is not None
    return source_workspace(ws, s.name, s.dataset).run(PRETRAIN_RUN)


def _pretrain_sources(ws: Workspace, sf: SourcesFile, cfg: BenchmarkConfig) -> dict[str, dict[str, Any]]:
    """Pretrain every source given as a dataset (resuming, or retraining when its settings changed);
    returns each one's pretraining time and validation top-1 on its own task. A source whose
    pretraining failed keeps no checkpoint: its cells fail with the reason."""
    tasks = []
    for s in sf.sources:
        if s.dataset is None:
            continue
        pre = s.pretrain_config()
        source_ws = source_workspace(ws, s.name, s.dataset)
        changed = stale(source_ws, pre)
        if cfg.force or changed or not source_ws.run(PRETRAIN_RUN).is_finished(pre.epochs, pre.patience):
            tasks.append(Task(PRETRAIN, PRETRAIN_RUN, dataclasses.asdict(pre), restart=cfg.force or bool(changed),
                              extra={"source": s.name, "dataset": str(s.dataset)}))
    if tasks:
        echo(f"benchmark: pretraining {len(tasks)} source dataset(s) first")
    _run(ws, cfg, tasks)
    info = {}
    for s in sf.sources:
        if s.dataset is not None:
            run = _pretraining(ws, s)
            info[s.name] = {"dataset": str(s.dataset), "seconds": run.train_seconds(),
                            "val_top1": run.best_val_top1(), "error": run.failure()}
    return info


def _costs(ws: Workspace, sf: SourcesFile, cells: list[Cell], cache_file: Path) -> dict[str, dict[str, float]]:
    """The cost of every source (and each backbone's scratch model) at its cells' input settings."""
    classes = len(ws.classes())
    device = "cuda" if _cuda() else "cpu"
    settings: dict[str, CostSetting] = {}
    for c in cells:
        name = scratch_cost_key(c.backbone) if c.strategy == SCRATCH else c.source
        if name not in settings:
            tc = c.train_config()
            frames = int(ws.clip_cache(tc.sampling).params()["sampling"]["frames"])
            settings[name] = CostSetting(c.backbone, tc.size, frames, tc.temporal, classes, device)
    try:
        return costs(settings, cache_file)
    except Exception as e:  # noqa: BLE001 - the cost is a column of the report, never a reason to lose it
        warn(f"benchmark: could not measure the sources' cost: {' '.join(str(e).split())}")
        return {}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_task(ws: Workspace, task: Task) -> bool:
    """Run one task in this process; a failure (bad input or checkpoint, a diverged loss, out of
    memory, ...) is recorded in its run folder and ends only this task. True when it finished."""
    ws = task_workspace(ws, task)
    run = ws.run(task.run)
    run.forget_failure()
    try:
        if task.kind == TEST:
            run_evaluate(ws, EvaluateConfig(**task.config))
            return True
        cfg = TrainConfig(**task.config)
        if task.restart:
            run.forget_eval()  # a retrained cell is not done until it is evaluated again
        run_train(ws, cfg, restart=task.restart)
        if task.kind == TRAIN and task.test:
            run_evaluate(ws, EvaluateConfig(run=cfg.run_name, split="test"))
    except Exception as e:  # noqa: BLE001 - any failure of one task is that task's, never the grid's
        reason = " ".join(str(e).split()) or type(e).__name__
        run.record_failure(reason if isinstance(e, UserError) else f"{type(e).__name__}: {reason}")
        warn(f"benchmark: {task.kind} {task.run} failed: {run.failure()}")
        return False
    return True


# ----------------------------------------------------------------------------- child process


class _CoordinatedWorkspace(Workspace):
    """A workspace whose lock the parent ``vtl benchmark`` holds: a child cell takes none."""

    @contextmanager
    def lock(self, stage: str, shard: Shard | None = None) -> Iterator[None]:
        yield


def _exit_with_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(143)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()


def _task_main(argv: list[str]) -> int:
    """``python -m pipeline.stages.benchmark task WORKSPACE TASK_JSON``: run one task.
    Internal: ``vtl benchmark`` starts it, under its workspace lock."""
    if len(argv) != 3 or argv[0] != "task":
        print("usage: python -m pipeline.stages.benchmark task WORKSPACE TASK_JSON (internal to vtl benchmark)",
              file=sys.stderr)
        return 2
    _exit_with_parent()
    try:
        task = Task.from_json(argv[2])
    except (ValueError, TypeError) as e:
        print(f"error: bad task: {e}", file=sys.stderr)
        return 2
    return 0 if run_task(_CoordinatedWorkspace(argv[1]), task) else 1


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    sys.exit(_task_main(sys.argv[1:]))
