"""Running one phase of the grid's tasks through an executor (``vtl benchmark --executor``):

- ``local`` (:class:`LocalExecutor`): one after the other in this process, or up to
  ``max_parallel`` at once in child processes (``child_command WORKSPACE TASK_JSON RUNNER_JSON``),
  each pinned to one GPU by ``CUDA_VISIBLE_DEVICES`` (round-robin over the devices; none: CPU);
- ``ray`` (:mod:`pipeline.benchmark.ray_executor`): Ray tasks with resource requests;
- ``slurm`` (:mod:`pipeline.benchmark.slurm_executor`): submitit job arrays.

Every executor runs a task through :class:`OwnedRunner`: it owns the task first
(:mod:`pipeline.benchmark.ownership`), so that a task another executor is running on the same
workspace is skipped (``busy``) and waited for, then taken as it ended, or run here if its owner
died. A failed task never stops the phase: it records why in its run folder
(:meth:`~pipeline.engine.run_folder.RunFolder.record_failure`) and the others go on; a worker that
dies without recording anything (killed, crashed) is recorded by the executor.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipeline.benchmark.ownership import (
    Ownership,
    ended_since,
    mark_ended,
    owned_by_other,
    owners_dir,
    read_record,
    task_key,
)
from pipeline.benchmark.tasks import TRAIN, Task, task_workspace
from pipeline.progress import echo
from pipeline.sharding import Shard
from pipeline.workspace import Workspace

# Runs one task in this process; True when it finished.
TaskRunner = Callable[[Workspace, Task], bool]

# How a task ended under an executor.
FINISHED = "finished"
FAILED = "failed"
BUSY = "busy"  # another executor's live owner holds it: not run here
ENDED_ELSEWHERE = "ended elsewhere"  # another executor ended it after this one planned it
EXIT_CODES = {FINISHED: 0, FAILED: 1, BUSY: 3, ENDED_ELSEWHERE: 4}  # of a child process


@dataclass(frozen=True)
class OwnedRunner:
    """Runs a task once this executor owns it; picklable and JSON-able, so that every worker
    (child process, Ray worker, Slurm job) runs tasks the same way."""

    run_task: TaskRunner
    executor: str  # this executor's id: its own earlier attempt at a task may be taken over at once
    since: float  # when the phase was planned: a task ended after that is not run again
    stale_after: float  # seconds without a heartbeat after which an owner is dead

    def __call__(self, ws: Workspace, task: Task) -> str:
        echo(f"benchmark: {task.kind} {task.label}: pid {os.getpid()} on {socket.gethostname()}, "
             f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}")
        owner = Ownership(ws, task, executor=self.executor, stale_after=self.stale_after)
        if not owner.acquire():
            echo(f"benchmark: {task.kind} {task.label} is being run by another executor: skipped here")
            return BUSY
        try:
            if ended_since(ws, task, self.since) is not None:
                return ENDED_ELSEWHERE
            task = _idempotent(ws, task, owner.attempt)
            status = FINISHED if self.run_task(ws, task) else FAILED
            mark_ended(ws, task, status, owner.attempt)
            return status
        finally:
            owner.release()

    def to_json(self) -> str:
        return json.dumps({"executor": self.executor, "since": self.since, "stale_after": self.stale_after})

    @classmethod
    def from_json(cls, text: str, run_task: TaskRunner) -> OwnedRunner:
        return cls(run_task, **json.loads(text))


def run_on_worker(runner: OwnedRunner, root: str, task_json: str) -> str:
    """What a remote worker runs (a Ray task, a Slurm job): one task, under the workspace lock
    shared and its ownership."""
    return runner(WorkerWorkspace(root), Task.from_json(task_json))


def _idempotent(ws: Workspace, task: Task, attempt: int) -> Task:
    """A second attempt (a retry after a lost worker, a requeued job) resumes from ``last.pt``: the
    first attempt of a restarted task removed the old ``last.pt`` before training anew."""
    if attempt > 1:
        echo(f"benchmark: {task.kind} {task.label}: attempt {attempt}, resuming")
        return dataclasses.replace(task, restart=False)
    if task.restart:
        run = task_workspace(ws, task).run(task.run)
        for folder in (run, run.head_phase):
            folder.last.unlink(missing_ok=True)
    return task


class Executor(Protocol):
    """Runs every task of one phase, in any order or at once, and returns when all have ended."""

    run_task: TaskRunner
    stale_after: float

    def run(self, ws: Workspace, tasks: Sequence[Task], runner: OwnedRunner) -> dict[str, str]:
        """Each task's status (by :func:`task_key`); a task without one died with its worker."""
        ...


def run_tasks(ws: Workspace, todo: Sequence[Task], *, executor: Executor,
              planned_at: float | None = None) -> dict[str, str]:
    """Run every task of ``todo`` with ``executor``; tasks another executor holds are waited for,
    then run here if their owner died before ending them. ``planned_at``: when ``todo`` was
    planned (default: now); a task another executor ended after that is not run again. Each
    task's status, by key."""
    since = time.time() if planned_at is None else planned_at
    runner = OwnedRunner(executor.run_task, uuid.uuid4().hex, since, executor.stale_after)
    statuses: dict[str, str] = {}
    pending = list(todo)
    while pending:
        got = executor.run(ws, pending, runner)
        for task in pending:
            if task_key(task) not in got:
                _record_lost(ws, task, "its worker died (see the executor's logs)")
            statuses[task_key(task)] = got.get(task_key(task), FAILED)
        _drop_records(ws, pending, runner.executor)
        busy = [t for t in pending if statuses[task_key(t)] == BUSY]
        if busy:
            echo(f"benchmark: waiting for {len(busy)} task(s) another executor is running")
            _wait_for_owners(ws, busy, executor.stale_after)
        pending = []
        for task in busy:
            ended = ended_since(ws, task, runner.since)
            statuses[task_key(task)] = ENDED_ELSEWHERE if ended else BUSY
            if not ended:
                pending.append(task)  # its owner died: run it here
    return statuses


def _wait_for_owners(ws: Workspace, tasks: Sequence[Task], stale_after: float) -> None:
    while any(owned_by_other(ws, t, stale_after) for t in tasks):
        time.sleep(min(2.0, max(0.1, stale_after / 8)))


def _drop_records(ws: Workspace, tasks: Sequence[Task], executor: str) -> None:
    """Owner records this executor's dead workers left (every worker of the phase has ended):
    another executor need not wait for them to go stale."""
    for task in tasks:
        path = owners_dir(ws) / f"{task_key(task)}.owner"
        record = read_record(path)
        if record is not None and record.get("executor") == executor:
            path.unlink(missing_ok=True)


def _record_lost(ws: Workspace, task: Task, why: str) -> None:
    run = task_workspace(ws, task).run(task.run)
    if run.failure() is None:
        run.record_failure(why)


def pinned(task: Task) -> Task:
    """The task for a worker whose GPU the executor chose (``CUDA_VISIBLE_DEVICES``): ``cuda:N``
    became that worker's only GPU, ``cuda``."""
    device = task.config.get("device")
    if isinstance(device, str) and device.startswith("cuda:"):
        return dataclasses.replace(task, config={**task.config, "device": "cuda"})
    return task


def visible_devices(requested: str | None) -> tuple[str, ...]:
    """The GPU ids (as ``CUDA_VISIBLE_DEVICES`` names them) the cells may use for ``--device``:
    all visible ones for cuda (or no --device), one for cuda:N, none for cpu."""
    if requested == "cpu":
        return ()
    import torch

    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in env.split(",") if d.strip()] if env is not None else \
        [str(i) for i in range(torch.cuda.device_count())]
    ids = ids[:torch.cuda.device_count()]
    if requested and requested.startswith("cuda:"):
        index = int(requested.removeprefix("cuda:"))
        return (ids[index],) if index < len(ids) else ()
    return tuple(ids)


# ----------------------------------------------------------------------------- local


class WorkerWorkspace(Workspace):
    """The workspace as a worker of ``vtl benchmark`` sees it: the workspace lock is taken shared
    (as the benchmark itself takes it), the cells being owned through ownership files."""

    @contextmanager
    def lock(self, stage: str, shard: Shard | None = None, *, shared: bool = False) -> Iterator[None]:
        with super().lock(stage, shared=True):
            yield


@dataclass
class LocalExecutor:
    run_task: TaskRunner
    child_command: Sequence[str]  # + WORKSPACE TASK_JSON RUNNER_JSON: runs one task in a child process
    stale_after: float
    max_parallel: int = 1  # above 1: that many child processes at once
    devices: tuple[str, ...] = ()  # GPU ids, one per running child in turn; none: CPU

    def run(self, ws: Workspace, tasks: Sequence[Task], runner: OwnedRunner) -> dict[str, str]:
        if self.max_parallel > 1 and len(tasks) > 1:
            return self._run_children(ws, tasks, runner)
        statuses = {}
        for i, task in enumerate(tasks, start=1):
            echo(f"benchmark: {task.kind} {i}/{len(tasks)}: {task.label}")
            statuses[task_key(task)] = runner(ws, task)
        return statuses

    def _run_children(self, ws: Workspace, tasks: Sequence[Task], runner: OwnedRunner) -> dict[str, str]:
        """Up to ``max_parallel`` child processes, each on a device slot of its own while it runs."""
        slots = [self.devices[i % len(self.devices)] if self.devices else "" for i in range(self.max_parallel)]
        queue = list(tasks)
        running: dict[subprocess.Popen, tuple[Task, Path, str]] = {}
        statuses: dict[str, str] = {}
        try:
            while queue or running:
                while queue and slots:
                    task, slot = queue.pop(0), slots.pop(0)
                    proc, log = _start_child(ws, pinned(task), runner, self.child_command, slot, self.max_parallel)
                    running[proc] = (task, log, slot)
                    echo(f"benchmark: started {task.kind} {task.label} (pid {proc.pid}, log {log})")
                for proc in [p for p in running if p.poll() is not None]:
                    task, log, slot = running.pop(proc)
                    slots.append(slot)
                    statuses[task_key(task)] = _child_status(ws, task, proc.returncode, log)
                    echo(f"benchmark: {statuses[task_key(task)]} {task.kind} {task.label} "
                         f"({len(statuses)}/{len(tasks)})")
                time.sleep(0.2)
        finally:
            _stop(list(running))
        return statuses


def _start_child(ws: Workspace, task: Task, runner: OwnedRunner, command: Sequence[str], device: str,
                 parallel: int) -> tuple[subprocess.Popen, Path]:
    logs = ws.benchmark_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    threads = str(max(1, (os.cpu_count() or 1) // parallel))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1",
           "VTL_PROGRESS_INTERVAL": os.environ.get("VTL_PROGRESS_INTERVAL", "60"),
           "CUDA_VISIBLE_DEVICES": device}  # "" hides every GPU: the CPU
    log = logs / (f"{task.label}.log" if task.kind == TRAIN else f"{task.label}.{task.kind}.log")
    # Appended to: an executor that finds the task busy must not wipe the log of the one running it.
    with open(log, "a") as f:
        f.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} executor {runner.executor[:8]}\n")
        f.flush()
        proc = subprocess.Popen([*command, str(ws.root), task.to_json(), runner.to_json()], stdout=f,
                                stderr=subprocess.STDOUT, env=env)
    return proc, log


def _child_status(ws: Workspace, task: Task, code: int, log: Path) -> str:
    for status, status_code in EXIT_CODES.items():
        if code == status_code:
            return status
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
    _record_lost(ws, task, f"exit {code}: {tail[0] if tail else 'no output'} (see {log})")
    return FAILED


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
