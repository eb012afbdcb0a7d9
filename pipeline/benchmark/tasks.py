"""The unit of work an executor runs: a :class:`Task`, JSON-able, so that this process, a child
process, a Ray task or a Slurm job can run it the same way.

The grid runs in phases, each a list of tasks that may run in any order or at once; a phase starts
when the one before it has ended (see :func:`pipeline.stages.benchmark.run_benchmark`). A task writes
only its own run folder (``run``), which is also the name of its log and of its ownership record. A
failed task records why in that run folder and ends only itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.workspace import Workspace

# Kinds of task.
PRETRAIN = "pretrain"  # train a source on its own dataset (a source given as `dataset:`)
TRAIN = "train"  # train one cell; with `test`, also evaluate it on the test split
TEST = "test"  # evaluate a trained cell on the test split (the chosen learning rate's)
# Fill the feature cache of one source (config: sources file, source, eval): its linear cells, run
# elsewhere at once (Ray, Slurm), then only read it.
EXTRACT = "extract"
TASK_KINDS = (PRETRAIN, TRAIN, TEST, EXTRACT)


@dataclass(frozen=True)
class Task:
    kind: str
    run: str  # the run it writes: train/<run>/, eval/<run>/ (a pretraining: under benchmark/sources/)
    config: dict[str, Any]  # the TrainConfig fields (train, pretrain), EvaluateConfig fields (test), see EXTRACT
    restart: bool = False  # retrain from the first epoch (the settings changed, or --force)
    test: bool = True  # TRAIN: evaluate on the test split in the same task (no choice of rate to wait for)
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific (a pretraining's source dataset)

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"unknown task kind {self.kind!r}")

    @property
    def label(self) -> str:
        """A name unique in the grid, for logs: a pretraining's run name is the same for every source."""
        return f"{self.extra['source']}-{PRETRAIN}" if self.kind == PRETRAIN else self.run

    @property
    def strategy(self) -> str | None:
        return self.config.get("strategy")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Task:
        return cls(**json.loads(text))


def task_workspace(ws: Workspace, task: Task) -> Workspace:
    """The workspace a task trains in: ``ws``, or for a pretraining the source's dataset, read
    only, with its runs written under ``ws``'s ``benchmark/sources/<source>/``."""
    if task.kind != PRETRAIN:
        return ws
    return source_workspace(ws, task.extra["source"], Path(task.extra["dataset"]))


def source_workspace(ws: Workspace, source: str, dataset: Path) -> Workspace:
    """A source dataset, read only, whose pretraining runs go to ``ws``'s ``benchmark/sources/<source>/``."""
    return type(ws)(dataset, runs_root=ws.benchmark_dir / "sources" / source)
