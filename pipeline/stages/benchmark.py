"""``vtl benchmark``: which source (backbone + pretrained weights) transfers best to this target?

The grid is sources × strategies × label fractions × seeds, plus the ``scratch`` baseline of
every backbone at every fraction and seed (see :mod:`pipeline.benchmark`). In order:

1. **Source datasets** (``dataset:`` in the sources file): each pretrained first, a resumable run
   under ``benchmark/sources/<name>/``, whose ``best.pt`` is then the source's weights.
2. **Transferability** (before any cell): LogME of every source's frozen features on the
   target's training split, and LEEP where the source is a ``vtl train`` checkpoint with its own
   classifier → ``benchmark/transferability.csv`` with the predicted ranking.
3. **Cells**: one ``vtl train`` run per cell and learning-rate factor, named
   ``bench-<source>-<strategy>-f<fraction>-s<seed>[-lr<factor>x]`` (scratch:
   ``bench-<backbone>-scratch-…``). Without a choice of rate to make, each is evaluated on the test
   split in the same task. The grid resumes: a finished cell is not recomputed, and a
   half-trained one resumes from its ``last.pt``.
4. **Learning rates** (``--select-lr``): per source × strategy, the factor with the best validation
   top-1 (:mod:`pipeline.benchmark.selection`); only its cells are then evaluated on the test split.
5. **Report**: ``summary.json``, ``ranking.csv``, ``results.csv`` (one row per cell at its chosen
   rate), ``lr_selection.csv``, ``report.md`` and the plots (:mod:`pipeline.report.benchmark_report`),
   with each source's cost (:mod:`pipeline.benchmark.cost`).

Where the tasks run: ``--executor local`` (this process, or ``--max-parallel N`` child processes
``python -m pipeline.stages.benchmark task …``, this module's entry point, one GPU each), ``ray``
or ``slurm`` (:mod:`pipeline.benchmark.runner`); there the features linear cells need are
extracted by one task per source first, elsewhere by this process.

Locking: the benchmark and its workers hold the workspace lock *shared*, so that a plain ``vtl
train`` waits for them but several executors may run one grid at once; each task is owned by the
process running it (:mod:`pipeline.benchmark.ownership`), each writing only its own run.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pipeline import provenance
from pipeline.benchmark.config import (
    DEFAULT_FRACTIONS,
    DEFAULT_LR_FACTORS,
    DEFAULT_SEEDS,
    DEFAULT_STRATEGIES,
    BenchmarkConfig,
)
from pipeline.benchmark.cost import CostSetting, costs
from pipeline.benchmark.executors import REMOTE, make_executor
from pipeline.benchmark.grid import Cell, cells_to_run, plan, stale
from pipeline.benchmark.results import FAILED, RESULT_COLUMNS, collect_results, csv_row
from pipeline.benchmark.runner import EXIT_CODES, Executor, OwnedRunner, WorkerWorkspace, run_tasks
from pipeline.benchmark.scores import TRANSFER_COLUMNS, compute_transferability
from pipeline.benchmark.selection import SELECTION_COLUMNS, choose_lr
from pipeline.benchmark.slurm_executor import SlurmExecutor
from pipeline.benchmark.sources import PRETRAIN_RUN, Source, SourcesFile, check_weights, load_sources
from pipeline.benchmark.tasks import EXTRACT, PRETRAIN, TEST, TRAIN, Task, source_workspace, task_workspace
from pipeline.choices import SCRATCH
from pipeline.engine.config import EvaluateConfig, TrainConfig
from pipeline.engine.run_folder import RunFolder
from pipeline.engine.tracking import end_parent, start_parent, track_run, tracking_uri
from pipeline.errors import UserError
from pipeline.files import read_csv, write_csv
from pipeline.progress import echo, log_to, warn
from pipeline.report.benchmark import BenchmarkResults, add_transfer_gains, scratch_cost_key
from pipeline.report.benchmark_report import write_report
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
    executor = make_executor(ws, cfg, run_task=run_task, child_command=CHILD_COMMAND)
    if cfg.no_wait:
        assert isinstance(executor, SlurmExecutor)  # BenchmarkConfig allows --no-wait with slurm only
        job = executor.submit_driver(_drive, str(ws.root), dataclasses.replace(cfg, no_wait=False))
        echo(f"benchmark: submitted the driver job {job}; once it has ended (or to see the cells finished so far), "
             f"run the same command with --collect instead of --no-wait")
        return {"submitted": job}
    out = ws.benchmark_dir
    t0 = time.perf_counter()
    record = provenance.collect()
    tracking = _start_tracking(ws, cfg)  # the parent run of the cells' nested MLflow runs
    extra = {"tracking": tracking} if tracking else {}
    # Shared: other executors may run this grid on this workspace at once; the cells are owned
    # through ownership files (pipeline.benchmark.ownership), every other file is written atomically.
    with ws.lock("benchmark", shared=True), log_to(ws.benchmark_log):
        echo(f"benchmark: {len(sf.sources)} source(s) × {len(strategies)} strategies × {len(fractions)} "
             f"fraction(s) × {seeds} seed(s) × {len(factors)} learning rate(s) + scratch = {len(cells)} cells")
        todo: list[tuple[Cell, bool]] = []
        if cfg.collect:
            scores = _read_scores(out / "transferability.csv")
        else:
            _pretrain_sources(ws, sf, cfg, executor, extra)
            if cfg.executor in REMOTE and "linear" in strategies:  # the features, extracted where the cells run
                run_tasks(ws, [Task(EXTRACT, f"extract-{s.name}", {"sources": str(sf.path), "source": s.name,
                                                                   "eval": True}) for s in sf.sources],
                          executor=executor)
            scores = compute_transferability(ws, sf, need_eval_features="linear" in strategies)
            write_csv(out / "transferability.csv", TRANSFER_COLUMNS, scores)
            planned_at = time.time()  # a cell another executor ends after this is not run again here
            todo = cells_to_run(ws, cells, force=cfg.force, tested=not selecting)
            echo(f"benchmark: {len(cells) - len(todo)} cell(s) done before, {len(todo)} to run")
            run_tasks(ws, [Task(TRAIN, c.run, {**dataclasses.asdict(c.train_config()), **_run_options(cfg)},
                                restart=restart, test=not selecting, extra=extra) for c, restart in todo],
                      executor=executor, planned_at=planned_at)
        chosen, selection = choose_lr(ws, cells) if selecting else ({}, None)
        kept = [c for c in cells if c.lr_factor == chosen.get(c.group, 1.0)]
        if selection is not None:
            write_csv(out / "lr_selection.csv", SELECTION_COLUMNS, selection)
            if not cfg.collect:
                run_tasks(ws, [Task(TEST, c.run, dataclasses.asdict(EvaluateConfig(
                    run=c.run, split="test", device=cfg.device, deterministic=cfg.deterministic)), extra=extra)
                               for c in kept if _needs_test(ws.run(c.run))], executor=executor)
        if cfg.collect:
            kept = _ended(ws, kept)
        rows = add_transfer_gains(collect_results(ws, kept))
        write_csv(out / "results.csv", RESULT_COLUMNS, [csv_row(r) for r in rows])
        failed = [r for r in rows if r["status"] == FAILED]
        if len(failed) == len(rows):
            raise UserError(f"benchmark: no cell finished (first failure, {failed[0]['run']}: {failed[0]['error']}); "
                            f"see {out / 'results.csv'}")
        summary = write_report(out, BenchmarkResults(
            rows, scores, costs=_costs(ws, kept, cfg.device, out / "cost.json"),
            pretraining=_pretraining_info(ws, sf), lr_selection=selection, workspace_name=ws.root.name,
            num_test_videos=len(ws.manifest_rows("test")), provenance=provenance.finish(record)))
        if tracking:
            end_parent(tracking["uri"], tracking["parent_run_id"], summary[provenance.KEY],
                       [out / "summary.json", out / "results.csv", out / "report.md"])
    return {**summary, "results": out / "results.csv", "transferability": out / "transferability.csv",
            "summary": out / "summary.json", "cells": len(cells), "ran": len(todo),
            "seconds": time.perf_counter() - t0}


def _needs_test(run: RunFolder) -> bool:
    return run.is_trained and not run.is_evaluated and run.failure() is None


def _pretraining(ws: Workspace, s: Source) -> RunFolder:
    assert s.dataset is not None
    return source_workspace(ws, s.name, s.dataset).run(PRETRAIN_RUN)


def _pretrain_sources(ws: Workspace, sf: SourcesFile, cfg: BenchmarkConfig, executor: Executor,
                      extra: dict[str, Any]) -> None:
    """Pretrain every source given as a dataset (resuming, or retraining when its settings changed).
    A source whose pretraining failed keeps no checkpoint: its cells fail with the reason."""
    tasks = []
    for s in sf.sources:
        if s.dataset is None:
            continue
        pre = s.pretrain_config()
        source_ws = source_workspace(ws, s.name, s.dataset)
        changed = stale(source_ws, pre)
        if cfg.force or changed or not source_ws.run(PRETRAIN_RUN).is_finished(pre.epochs, pre.patience):
            tasks.append(Task(PRETRAIN, PRETRAIN_RUN, {**dataclasses.asdict(pre), **_run_options(cfg)},
                              restart=cfg.force or bool(changed),
                              extra={**extra, "source": s.name, "dataset": str(s.dataset)}))
    if tasks:
        echo(f"benchmark: pretraining {len(tasks)} source dataset(s) first")
        run_tasks(ws, tasks, executor=executor)


def _pretraining_info(ws: Workspace, sf: SourcesFile) -> dict[str, dict[str, Any]]:
    """Each source dataset's pretraining time and validation top-1 on its own task."""
    info = {}
    for s in sf.sources:
        if s.dataset is not None:
            run = _pretraining(ws, s)
            info[s.name] = {"dataset": str(s.dataset), "seconds": run.train_seconds(),
                            "val_top1": run.best_val_top1(), "error": run.failure()}
    return info


def _costs(ws: Workspace, cells: list[Cell], device: str | None, cache_file: Path) -> dict[str, dict[str, float]]:
    """The cost of every source (and each backbone's scratch model) at its cells' input settings."""
    from pipeline.engine.distributed import DistInfo
    from pipeline.engine.distributed import device as resolve_device

    where = str(resolve_device(DistInfo(requested=device)))
    classes = len(ws.classes())
    settings: dict[str, CostSetting] = {}
    for c in cells:
        name = scratch_cost_key(c.backbone) if c.strategy == SCRATCH else c.source
        if name not in settings:
            tc = c.train_config()
            frames = int(ws.clip_cache(tc.sampling).params()["sampling"]["frames"])
            settings[name] = CostSetting(c.backbone, tc.size, frames, tc.temporal, classes, where)
    try:
        return costs(settings, cache_file)
    except Exception as e:  # noqa: BLE001 - the cost is a column of the report, never a reason to lose it
        warn(f"benchmark: could not measure the sources' cost: {' '.join(str(e).split())}")
        return {}


def _ended(ws: Workspace, cells: list[Cell]) -> list[Cell]:
    """--collect: the cells evaluated or failed so far (the others may still be running)."""
    ended = [c for c in cells if ws.run(c.run).is_evaluated or ws.run(c.run).failure() is not None]
    echo(f"benchmark: collecting {len(ended)} ended cell(s); {len(cells) - len(ended)} not ended yet")
    if not ended:
        raise UserError(f"benchmark: no cell of this grid has ended yet in {ws.root}")
    return ended


def _read_scores(path: Path) -> list[dict[str, Any]]:
    """transferability.csv as :func:`compute_transferability` returned it (numbers, None for n/a)."""
    if not path.is_file():
        return []
    numbers = ("logme", "leep", "predicted_rank", "num_videos", "feature_dim")
    return [{k: (float(v) if v not in ("", None) else None) if k in numbers else v for k, v in row.items()}
            for row in read_csv(path)]


def _run_options(cfg: BenchmarkConfig) -> dict[str, Any]:
    """The benchmark's options every training task (cell, pretraining) runs with."""
    return {"device": cfg.device, "deterministic": cfg.deterministic}


def _start_tracking(ws: Workspace, cfg: BenchmarkConfig) -> dict[str, Any] | None:
    """``--tracker mlflow``: a parent run for this benchmark; what the tasks need to nest under it."""
    if cfg.tracker != "mlflow" or cfg.collect:
        return None
    uri = tracking_uri(ws.mlruns_dir)
    params = {k: v for k, v in dataclasses.asdict(cfg).items() if not k.startswith(("ray_", "slurm_"))}
    return {"uri": uri, "experiment": ws.root.name,
            "parent_run_id": start_parent(uri, ws.root.name, "benchmark", params)}


def _drive(root: str, cfg: BenchmarkConfig) -> dict[str, Any]:
    """The driver job of ``--no-wait``: the whole benchmark, waiting for its arrays."""
    return run_benchmark(Workspace(root), cfg)


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
        if task.kind == EXTRACT:
            sf = load_sources(Path(task.config["sources"]))
            one = dataclasses.replace(sf, sources=[s for s in sf.sources if s.name == task.config["source"]])
            compute_transferability(ws, one, need_eval_features=task.config["eval"])
            return True
        cfg = TrainConfig(**task.config)
        if task.restart:
            run.forget_eval()  # a retrained cell is not done until it is evaluated again
        run_train(ws, cfg, restart=task.restart)
        if task.kind == TRAIN and task.test:
            run_evaluate(ws, EvaluateConfig(run=cfg.run_name, split="test", device=cfg.device,
                                            deterministic=cfg.deterministic))
        if task.extra.get("tracking"):  # a nested MLflow run under the benchmark's
            track_run(run, **task.extra["tracking"])
    except Exception as e:  # noqa: BLE001 - any failure of one task is that task's, never the grid's
        reason = " ".join(str(e).split()) or type(e).__name__
        run.record_failure(reason if isinstance(e, UserError) else f"{type(e).__name__}: {reason}")
        warn(f"benchmark: {task.kind} {task.run} failed: {run.failure()}")
        return False
    return True


# ----------------------------------------------------------------------------- child process


def _exit_with_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(143)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()


def _task_main(argv: list[str]) -> int:
    """``python -m pipeline.stages.benchmark task WORKSPACE TASK_JSON RUNNER_JSON``: run one task
    (internal: the local executor of ``vtl benchmark`` starts it); the exit code says how it ended
    (:data:`~pipeline.benchmark.runner.EXIT_CODES`)."""
    if len(argv) != 4 or argv[0] != "task":
        print("usage: python -m pipeline.stages.benchmark task WORKSPACE TASK_JSON RUNNER_JSON "
              "(internal to vtl benchmark)", file=sys.stderr)
        return 2
    _exit_with_parent()
    try:
        task = Task.from_json(argv[2])
        runner = OwnedRunner.from_json(argv[3], run_task)
    except (ValueError, TypeError) as e:
        print(f"error: bad task: {e}", file=sys.stderr)
        return 2
    return EXIT_CODES[runner(WorkerWorkspace(argv[1]), task)]


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    sys.exit(_task_main(sys.argv[1:]))
