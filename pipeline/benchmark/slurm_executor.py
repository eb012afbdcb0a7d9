"""``vtl benchmark --executor slurm``: each phase of the grid is one submitit job array (the
per-source feature extractions, then the cells), each job one task on ``--slurm-gpus-per-task``
GPUs; the submitting process waits for an array before it submits the next, then writes the
report. ``--no-wait`` submits that whole process as one small driver job instead (see
:meth:`SlurmExecutor.submit_driver`), and ``vtl benchmark --collect`` reports what has finished so far.

A preempted or timed-out job is requeued by submitit (:class:`Requeued`); the requeued job takes
over its own ownership record and resumes from ``last.pt``. submitit is the optional extra
``vtl[slurm]``; ``--slurm-cluster local`` runs the jobs as processes on this machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pipeline.benchmark.ownership import task_key
from pipeline.benchmark.runner import FAILED, OwnedRunner, TaskRunner, pinned, run_on_worker
from pipeline.benchmark.tasks import Task, task_workspace
from pipeline.errors import UserError
from pipeline.progress import echo, warn
from pipeline.workspace import Workspace


def import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise UserError("--executor slurm needs submitit: pip install 'vtl[slurm]'") from None
    return submitit


@dataclass(frozen=True)
class Requeued:
    """A job's callable that submitit requeues (rather than fails) when the job is preempted or
    timed out: the same call again, which resumes (a cell from its ``last.pt``, the driver from the
    cells already ended)."""

    fn: Callable[..., Any]

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def checkpoint(self, *args: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args)


@dataclass
class SlurmExecutor:
    run_task: TaskRunner
    stale_after: float
    folder: Path  # submitit's job files and logs
    partition: str | None
    gpus_per_task: int
    time_min: int
    parallelism: int
    cluster: str | None  # None: slurm where sbatch exists, else local
    use_gpus: bool = True  # False: --device cpu

    def _executor(self, *, gpus: int, name: str) -> Any:
        submitit = import_submitit()
        ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        params: dict[str, Any] = {"timeout_min": self.time_min, "name": name, "tasks_per_node": 1}
        if ex.cluster == "slurm":
            params.update(gpus_per_node=gpus, slurm_array_parallelism=self.parallelism)
            if self.partition:
                params["slurm_partition"] = self.partition
        ex.update_parameters(**params)
        return ex

    def run(self, ws: Workspace, tasks: Sequence[Task], runner: OwnedRunner) -> dict[str, str]:
        ex = self._executor(gpus=self.gpus_per_task if self.use_gpus else 0, name=f"vtl-{tasks[0].kind}")
        jobs = ex.map_array(Requeued(partial(run_on_worker, runner)), [str(ws.root)] * len(tasks),
                            [pinned(t).to_json() for t in tasks])
        echo(f"benchmark: submitted {len(jobs)} {tasks[0].kind} job(s) ({ex.cluster}), first {jobs[0].job_id}; "
             f"logs in {self.folder}")
        statuses = {}
        for task, j in zip(tasks, jobs, strict=True):
            try:
                statuses[task_key(task)] = j.result()
            except Exception as e:  # noqa: BLE001 - a job that failed ends only its task
                why = " ".join(str(e).split())[-300:]
                task_workspace(ws, task).run(task.run).record_failure(f"job {j.job_id}: {why}")
                warn(f"benchmark: {task.kind} {task.label} failed (job {j.job_id})")
                statuses[task_key(task)] = FAILED
        return statuses

    def submit_driver(self, driver: Callable[..., Any], *args: Any) -> str:
        """Submit ``driver(*args)`` (the benchmark itself, waiting for its arrays) as one CPU job;
        its id."""
        job = self._executor(gpus=0, name="vtl-benchmark").submit(Requeued(driver), *args)
        return str(job.job_id)
