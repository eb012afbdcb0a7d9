"""Running one phase of the grid's tasks: one after the other in this process, or up to
``max_parallel`` at once in child processes, each running the stage's task entry point under this
process's workspace lock.

A failed task never stops the grid: it records why in its run folder
(:meth:`~pipeline.engine.run_folder.RunFolder.record_failure`) and the others go on. A child that
dies without recording anything (killed, crashed) is recorded here with the end of its log.
Each child gets ``cores / max_parallel`` threads and writes its output to
``benchmark/logs/<run>.log``; a child exits when its parent dies.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.benchmark.tasks import TRAIN, Task, task_workspace
from pipeline.progress import echo
from pipeline.workspace import Workspace

# Runs one task in this process; True when it finished.
TaskRunner = Callable[[Workspace, Task], bool]


def run_tasks(ws: Workspace, todo: Sequence[Task], *, max_parallel: int, run_task: TaskRunner,
              child_command: Sequence[str]) -> None:
    """Run every task of ``todo``: in child processes (``child_command WORKSPACE TASK_JSON``) when
    ``max_parallel`` > 1, else here with ``run_task``."""
    if max_parallel > 1 and len(todo) > 1:
        _run_parallel(ws, todo, max_parallel, child_command)
        return
    for i, task in enumerate(todo, start=1):
        echo(f"benchmark: {task.kind} {i}/{len(todo)}: {task.label}")
        run_task(ws, task)


def _run_parallel(ws: Workspace, todo: Sequence[Task], max_parallel: int, child_command: Sequence[str]) -> None:
    """Run tasks in up to ``max_parallel`` child processes (under this process's lock)."""
    logs = ws.benchmark_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // max_parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONUNBUFFERED": "1", "VTL_PROGRESS_INTERVAL": os.environ.get("VTL_PROGRESS_INTERVAL", "60")}
    queue = list(todo)
    running: dict[subprocess.Popen, tuple[Task, Path]] = {}
    done = 0
    try:
        while queue or running:
            while queue and len(running) < max_parallel:
                task = queue.pop(0)
                task_workspace(ws, task).run(task.run).forget_failure()  # a stale record must not stand for this one
                log = logs / (f"{task.label}.log" if task.kind == TRAIN else f"{task.label}.{task.kind}.log")
                with open(log, "w") as f:
                    proc = subprocess.Popen([*child_command, str(ws.root), task.to_json()], stdout=f,
                                            stderr=subprocess.STDOUT, env=env)
                running[proc] = (task, log)
                echo(f"benchmark: started {task.kind} {task.label} (pid {proc.pid}, log {log})")
            for proc in [p for p in running if p.poll() is not None]:
                task, log = running.pop(proc)
                done += 1
                run = task_workspace(ws, task).run(task.run)
                if proc.returncode != 0 and run.failure() is None:
                    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
                    run.record_failure(f"exit {proc.returncode}: {tail[0] if tail else 'no output'} (see {log})")
                status = "finished" if run.failure() is None else f"FAILED ({run.failure()})"
                echo(f"benchmark: {status} {task.kind} {task.label} ({done}/{len(todo)})")
            time.sleep(0.2)
    finally:
        for proc in running:
            proc.terminate()
        for proc in running:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
