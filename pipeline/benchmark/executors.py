"""The executor ``vtl benchmark --executor`` names, built from its options (one grid, three ways
to run it: docs/distributed.md says which to pick)."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.benchmark.config import BenchmarkConfig
from pipeline.benchmark.runner import Executor, LocalExecutor, TaskRunner, visible_devices
from pipeline.workspace import Workspace

# Executors that run tasks away from this process: feature extraction is a phase of tasks there.
REMOTE = ("ray", "slurm")


def make_executor(ws: Workspace, cfg: BenchmarkConfig, *, run_task: TaskRunner,
                  child_command: Sequence[str]) -> Executor:
    """The executor of ``cfg``; a missing optional extra (ray, submitit) is a one-line error now."""
    use_gpus = cfg.device != "cpu"
    if cfg.executor == "ray":
        from pipeline.benchmark.ray_executor import RayExecutor, import_ray

        import_ray()
        return RayExecutor(run_task, cfg.owner_timeout, cfg.ray_address, cfg.ray_gpus, cfg.ray_linear_gpus,
                           cfg.ray_cpus, use_gpus=use_gpus)
    if cfg.executor == "slurm":
        from pipeline.benchmark.slurm_executor import SlurmExecutor, import_submitit

        import_submitit()
        return SlurmExecutor(run_task, cfg.owner_timeout, ws.benchmark_dir / "slurm", cfg.slurm_partition,
                             cfg.slurm_gpus_per_task, cfg.slurm_time, cfg.slurm_parallelism, cfg.slurm_cluster,
                             use_gpus=use_gpus)
    devices = visible_devices(cfg.device) if cfg.max_parallel > 1 else ()
    return LocalExecutor(run_task, child_command, cfg.owner_timeout, cfg.max_parallel, devices)
