"""``BenchmarkConfig``: the options of ``vtl benchmark`` and their defaults (light: the command line
imports it without torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.benchmark.sources import STRATEGY_CHOICES, parse_fractions, parse_lr_factors, parse_strategies
from pipeline.engine.config import check_tracker, deterministic_option, device_option, tracker_option
from pipeline.errors import UserError
from pipeline.options import check_choices, option

DEFAULT_STRATEGIES = ("linear", "finetune")
DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
DEFAULT_SEEDS = 3
DEFAULT_LR_FACTORS = (1 / 3, 1.0, 3.0)  # × each cell's configured lr, tried by --select-lr
EXECUTORS = ("local", "ray", "slurm")
SUBMITIT_CLUSTERS = ("slurm", "local", "debug")


@dataclass
class BenchmarkConfig:
    """The grid's settings beyond the sources file; None: the file's value, else the default here."""

    sources: Path = option(help="YAML file of sources (backbone + weights tag or checkpoint) and training "
                                "settings.")
    strategies: tuple[str, ...] | None = option(
        None, f"Comma-separated: {', '.join(STRATEGY_CHOICES)} (default: the file's, else "
              f"{','.join(DEFAULT_STRATEGIES)}). scratch always runs as the baseline.",
        parse=parse_strategies, metavar="LIST")
    fractions: tuple[float, ...] | None = option(
        None, "Comma-separated label fractions of the train split (default: the file's, else "
              f"{','.join(map(str, DEFAULT_FRACTIONS))}).", parse=parse_fractions, metavar="LIST")
    seeds: int | None = option(None, f"Seeds 0..N-1 per cell (default: the file's, else {DEFAULT_SEEDS}).")
    select_lr: bool = option(True, "Train every source × strategy (scratch too) at several learning rates and keep "
                                   "the one with the best validation top-1; only that rate is tested.")
    lr_factors: tuple[float, ...] | None = option(
        None, "Comma-separated multiples of the configured lr that --select-lr tries (default: the file's, else "
              f"{','.join(f'{f:.3g}' for f in DEFAULT_LR_FACTORS)}).", parse=parse_lr_factors, metavar="LIST")
    max_parallel: int = option(1, "Cells run at once by the local executor, in child processes (one GPU "
                                  "each) when above 1.")
    force: bool = option(False, "Retrain and re-evaluate every cell.")
    executor: str = option("local", "Where the cells run: local (this machine: --max-parallel child processes, "
                                    "one GPU each), ray (Ray tasks, --ray-address), slurm (submitit job arrays). "
                                    "See docs/distributed.md.", choices=EXECUTORS)
    device: str | None = device_option()
    deterministic: bool = deterministic_option()
    tracker: str = tracker_option()
    owner_timeout: float = option(300.0, "Seconds without a heartbeat after which a cell's owner (another "
                                         "executor, machine) counts as dead and its cell is taken over.")
    ray_address: str | None = option(None, "ray: the cluster to join (default: a Ray instance started here).")
    ray_gpus: float = option(1.0, "ray: GPUs a cell (and a feature extraction) asks for.")
    ray_linear_gpus: float = option(0.25, "ray: GPUs a linear cell asks for (it trains a head on cached "
                                          "features).")
    ray_cpus: float = option(1.0, "ray: CPUs every task asks for.")
    slurm_partition: str | None = option(None, "slurm: the partition (default: the cluster's).")
    slurm_gpus_per_task: int = option(1, "slurm: GPUs of each job of the arrays.")
    slurm_time: int = option(240, "slurm: time limit of each job, in minutes (a timed-out job is requeued and "
                                  "resumes from last.pt).")
    slurm_parallelism: int = option(64, "slurm: jobs of an array running at once.")
    slurm_cluster: str | None = option(None, "slurm: submitit's cluster: slurm, or local / debug to run the jobs "
                                             "on this machine (default: slurm where sbatch exists, else local).",
                                       choices=SUBMITIT_CLUSTERS)
    no_wait: bool = option(False, "slurm: submit the whole benchmark as one driver job and exit (it submits the "
                                  "arrays and writes the report); then --collect.")
    collect: bool = option(False, "Train nothing: write results.csv and the report from the cells finished so "
                                  "far (e.g. after --no-wait).")

    def __post_init__(self) -> None:
        check_choices(self)
        check_tracker(self.tracker)
        if self.seeds is not None and self.seeds < 1:
            raise UserError(f"--seeds must be at least 1, got {self.seeds}")
        for name in ("max_parallel", "slurm_parallelism", "slurm_time"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.owner_timeout <= 0 or min(self.ray_gpus, self.ray_linear_gpus, self.ray_cpus) < 0:
            raise UserError("--owner-timeout must be positive and --ray-gpus/--ray-linear-gpus/--ray-cpus >= 0")
        if self.no_wait and (self.executor != "slurm" or self.collect):
            raise UserError("--no-wait submits a driver job: it needs --executor slurm (and no --collect)")
