"""The grid's results: one row per cell from its run's evaluation and history
(``benchmark/results.csv``), with the labelled examples per class each label fraction keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.benchmark.grid import Cell
from pipeline.errors import UserError
from pipeline.files import read_csv
from pipeline.workspace import Workspace

RESULT_COLUMNS = ("source", "backbone", "weights", "strategy", "fraction", "seed", "lr", "val_top1", "top1",
                  "mean_class_accuracy", "train_seconds", "transfer_gain", "examples_per_class", "run", "status",
                  "error")
OK, FAILED = "ok", "failed"  # a row's status


def collect_results(ws: Workspace, cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """One row per cell from its run's evaluation metrics and training history; a failed cell's row
    has ``status`` failed, the ``error`` and no scores."""
    rows = []
    for c in cells:
        run = ws.run(c.run)
        m, error = run.eval_metrics(), run.failure()
        if m is None and error is None:
            raise UserError(f"benchmark: cell {c.run} has no evaluation in {run.eval_dir}; run the benchmark again")
        scores = {"top1": None, "mean_class_accuracy": None} if m is None else {
            "top1": m.get("video_top1", m["top1"]),
            "mean_class_accuracy": m.get("video_mean_class_accuracy", m["mean_class_accuracy"])}
        rows.append({"source": c.source, "backbone": c.backbone, "weights": c.weights, "strategy": c.strategy,
                     "fraction": c.fraction, "seed": c.seed, "lr": c.lr, "val_top1": run.best_val_top1(), **scores,
                     "train_seconds": run.train_seconds(),
                     "examples_per_class": run.examples_per_class(), "run": c.run,
                     "status": OK if m is not None else FAILED, "error": error or ""})
    return rows


def read_results(ws: Workspace) -> list[dict[str, str]]:
    return read_csv(ws.benchmark_dir / "results.csv")


def csv_row(r: dict[str, Any]) -> dict[str, Any]:
    out = dict(r)
    for k in ("val_top1", "top1", "mean_class_accuracy", "transfer_gain"):
        out[k] = "" if out.get(k) is None else round(float(out[k]), 6)
    out["train_seconds"] = round(float(out["train_seconds"]), 2)
    out["fraction"] = f"{out['fraction']:g}"
    out["lr"] = f"{out['lr']:.6g}"
    return out
