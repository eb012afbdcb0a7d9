"""``--select-lr``: one learning rate per source × strategy (per backbone for scratch), chosen on the
**validation** split only.

Every cell of a group is trained at each factor of the configured rate; a factor's score is the mean,
over the group's fractions and seeds, of each run's best validation top-1 (video level: the number
that also picks the run's ``best.pt``). The highest mean wins; a tie goes to the factor nearest ×1.
The test split is evaluated afterwards for the chosen factor's cells only, so it never takes part
in the choice. A cell that failed (a diverged loss at ×3, say) has no score, and its factor is judged
on the cells that finished; a factor with none is never chosen.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.benchmark.grid import Cell
from pipeline.workspace import Workspace

SELECTION_COLUMNS = ("source", "backbone", "strategy", "lr_factor", "lr", "val_top1", "cells", "chosen")


def choose_lr(ws: Workspace, cells: Sequence[Cell]) -> tuple[dict[tuple[str, str, str], float], list[dict[str, Any]]]:
    """({group: chosen factor}, one row per group × factor for ``lr_selection.csv``)."""
    scores: dict[tuple[str, str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    lrs: dict[tuple[tuple[str, str, str], float], float] = {}
    for c in cells:
        lrs[(c.group, c.lr_factor)] = c.lr
        run = ws.run(c.run)
        val = run.best_val_top1() if run.failure() is None else None
        scores[c.group][c.lr_factor].extend([] if val is None else [val])
    chosen: dict[tuple[str, str, str], float] = {}
    rows: list[dict[str, Any]] = []
    for group, by_factor in scores.items():
        means = {f: float(np.mean(v)) for f, v in by_factor.items() if v}
        chosen[group] = max(means, key=lambda f: (means[f], -abs(math.log(f)))) if means else 1.0
        for f in sorted(by_factor):
            rows.append({"source": group[0], "backbone": group[1], "strategy": group[2], "lr_factor": f"{f:.3g}",
                         "lr": f"{lrs[(group, f)]:.3g}", "val_top1": round(means[f], 6) if f in means else "",
                         "cells": len(by_factor[f]), "chosen": "yes" if f == chosen[group] else ""})
    return chosen, rows
