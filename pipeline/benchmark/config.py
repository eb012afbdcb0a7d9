"""``BenchmarkConfig``: the options of ``vtl benchmark`` and their defaults (light: the command line
imports it without torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.benchmark.sources import STRATEGY_CHOICES, parse_fractions, parse_lr_factors, parse_strategies
from pipeline.errors import UserError
from pipeline.options import option

DEFAULT_STRATEGIES = ("linear", "finetune")
DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
DEFAULT_SEEDS = 3
DEFAULT_LR_FACTORS = (1 / 3, 1.0, 3.0)  # × each cell's configured lr, tried by --select-lr


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
    max_parallel: int = option(1, "Cells run at once, in child processes when above 1 (under this command's "
                                  "workspace lock).")
    force: bool = option(False, "Retrain and re-evaluate every cell.")

    def __post_init__(self) -> None:
        if self.seeds is not None and self.seeds < 1:
            raise UserError(f"--seeds must be at least 1, got {self.seeds}")
        if self.max_parallel < 1:
            raise UserError(f"--max-parallel must be at least 1, got {self.max_parallel}")
