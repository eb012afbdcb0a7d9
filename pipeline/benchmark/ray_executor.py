"""``vtl benchmark --executor ray``: each task of a phase is a Ray task asking for CPUs and GPUs
(a linear cell a fraction of a GPU: it trains a head on cached features), on the cluster at
``--ray-address`` or on a Ray instance started here. The submitting process drives the phases.

A task whose worker is lost (the process killed, the node gone) is retried by Ray (``max_retries``);
the retry takes over its own executor's ownership record at once and resumes from ``last.pt``
(:class:`~pipeline.benchmark.runner.OwnedRunner`). Ray is the optional extra ``vtl[ray]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.benchmark.ownership import task_key
from pipeline.benchmark.runner import FAILED, OwnedRunner, TaskRunner, pinned, run_on_worker
from pipeline.benchmark.tasks import Task, task_workspace
from pipeline.errors import UserError
from pipeline.progress import echo, warn
from pipeline.workspace import Workspace


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'vtl[ray]'") from None
    return ray


@dataclass
class RayExecutor:
    run_task: TaskRunner
    stale_after: float
    address: str | None  # None: a Ray instance started here (or the one this process already joined)
    gpus: float  # per task
    linear_gpus: float  # per linear cell
    cpus: float  # per task
    use_gpus: bool = True  # False: --device cpu
    max_retries: int = 3  # attempts after a lost worker

    def run(self, ws: Workspace, tasks: Sequence[Task], runner: OwnedRunner) -> dict[str, str]:
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=True)
        has_gpus = self.use_gpus and ray.cluster_resources().get("GPU", 0) > 0
        remote = ray.remote(run_on_worker)
        refs = {}
        for task in tasks:
            gpus = (self.linear_gpus if task.strategy == "linear" else self.gpus) if has_gpus else 0
            options = {"num_cpus": self.cpus, "num_gpus": gpus, "max_retries": self.max_retries,
                       "retry_exceptions": False, "name": f"vtl {task.kind} {task.label}"}
            ref = remote.options(**options).remote(runner, str(ws.root), pinned(task).to_json())
            refs[task_key(task)] = (task, ref)
        echo(f"benchmark: {len(refs)} Ray task(s) submitted" + ("" if has_gpus else " (no GPU: on CPUs)"))
        statuses = {}
        for key, (task, ref) in refs.items():
            try:
                statuses[key] = ray.get(ref)
            except ray.exceptions.RayError as e:  # lost more often than max_retries, or cancelled
                why = " ".join(str(e).split())[:300]
                task_workspace(ws, task).run(task.run).record_failure(f"Ray: {type(e).__name__}: {why}")
                warn(f"benchmark: {task.kind} {task.label} failed on Ray: {type(e).__name__}")
                statuses[key] = FAILED
        return statuses
