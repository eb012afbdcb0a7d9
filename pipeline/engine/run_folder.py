"""The files of one run, named in one place: ``train/<run>/`` (written by the trainer) and
``eval/<run>/`` (written by ``vtl evaluate``). Every other module asks a :class:`RunFolder` for a
path or a record instead of spelling file names.

``train/<run>/``: ``config.yaml`` (what the results depend on, and under ``provenance`` where they
came from: :mod:`pipeline.provenance`), ``train.log`` (what the terminal showed), ``last.pt`` (full state, for
resuming), ``best.pt`` (best validation epoch, no training state), ``metrics.jsonl`` (one record
per epoch), ``train_split.json`` (the training videos the run used, after ``--fraction``),
``tensorboard/``, and ``head/`` for the head-only first phase of LP-FT (a run folder
of its own). ``eval/<run>/``: ``metrics.json`` (numbers, and the evaluation's ``provenance``), ``evaluate.log``,
``info.json`` (what was scored),
``per_class.csv``, ``predictions.csv``, ``confusion.png``, ``mistakes.png`` (images), a hidden
cache of the predictions, and ``failed.json`` when a benchmark cell failed (why).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.files import write_json, write_text
from pipeline.provenance import KEY as PROVENANCE


@dataclass(frozen=True)
class RunFolder:
    train_dir: Path
    eval_dir: Path

    @property
    def name(self) -> str:
        return self.train_dir.name

    # -- training ------------------------------------------------------------------------------
    @property
    def best(self) -> Path:
        return self.train_dir / "best.pt"

    @property
    def last(self) -> Path:
        return self.train_dir / "last.pt"

    @property
    def tensorboard_dir(self) -> Path:
        return self.train_dir / "tensorboard"

    @property
    def head_phase(self) -> RunFolder:
        """LP-FT's first phase: the head fitted on frozen features before fine-tuning."""
        return RunFolder(self.train_dir / "head", self.eval_dir / "head")

    @property
    def is_trained(self) -> bool:
        return self.best.is_file()

    @property
    def train_log(self) -> Path:
        return self.train_dir / "train.log"

    def config(self) -> dict[str, Any] | None:
        """The recorded settings (without the provenance, see :meth:`provenance`)."""
        path = self.train_dir / "config.yaml"
        if not path.is_file():
            return None
        recorded = yaml.safe_load(path.read_text()) or {}
        recorded.pop(PROVENANCE, None)
        return recorded

    def provenance(self) -> dict[str, Any] | None:
        """Where the training came from (:func:`pipeline.provenance.collect`)."""
        path = self.train_dir / "config.yaml"
        return (yaml.safe_load(path.read_text()) or {}).get(PROVENANCE) if path.is_file() else None

    def write_config(self, config: dict[str, Any], provenance: dict[str, Any]) -> None:
        write_text(self.train_dir / "config.yaml",
                   yaml.safe_dump({**config, PROVENANCE: provenance}, sort_keys=False))

    def history(self) -> list[dict[str, Any]]:
        path = self.train_dir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def write_history(self, history: list[dict[str, Any]]) -> None:
        write_text(self.train_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))

    def write_train_split(self, ids: list[str], labels: list[str]) -> None:
        """The training videos this run uses (after ``--fraction``) and their classes."""
        write_json(self.train_dir / "train_split.json",
                   {"videos_per_class": dict(sorted(Counter(labels).items())), "ids": ids})

    def train_split(self) -> dict[str, Any] | None:
        return _read_json(self.train_dir / "train_split.json")

    def examples_per_class(self) -> float | None:
        """Mean number of labelled training videos per class this run used (None if not recorded)."""
        split = self.train_split()
        counts = list(split["videos_per_class"].values()) if split else []
        return round(sum(counts) / len(counts), 2) if counts else None

    def is_finished(self, epochs: int, patience: int | None) -> bool:
        """Trained to the last epoch, or stopped early (see :func:`stopped_early`)."""
        history = self.history()
        return self.is_trained and (len(history) >= epochs or stopped_early(history, patience))

    def best_val_top1(self) -> float | None:
        """The best epoch's validation top-1 (video level): what picks ``best.pt``."""
        scores = [h["val_top1"] for h in self.history()]
        return max(scores) if scores else None

    def train_seconds(self) -> float:
        """Training time of the epochs done so far (NaN before the first epoch)."""
        history = self.history()
        return float(history[-1]["train_seconds"]) if history else math.nan

    # -- evaluation ----------------------------------------------------------------------------
    @property
    def per_class_csv(self) -> Path:
        return self.eval_dir / "per_class.csv"

    @property
    def predictions_csv(self) -> Path:
        return self.eval_dir / "predictions.csv"

    @property
    def confusion_png(self) -> Path:
        return self.eval_dir / "confusion.png"

    @property
    def mistakes_png(self) -> Path:
        return self.eval_dir / "mistakes.png"

    def predictions_cache(self, key: str) -> Path:
        """Softmax outputs of one (checkpoint, split, views, videos) evaluation, reused by a re-run."""
        return self.eval_dir / f".predictions-{key}.npz"

    @property
    def eval_log(self) -> Path:
        return self.eval_dir / "evaluate.log"

    @property
    def is_evaluated(self) -> bool:
        return (self.eval_dir / "metrics.json").is_file()

    def eval_metrics(self) -> dict[str, Any] | None:
        return _read_json(self.eval_dir / "metrics.json")

    def eval_info(self) -> dict[str, Any] | None:
        return _read_json(self.eval_dir / "info.json")

    def write_eval(self, metrics: dict[str, Any], info: dict[str, Any], provenance: dict[str, Any]) -> None:
        """``info.json`` first, ``metrics.json`` last: its presence marks a finished evaluation."""
        write_json(self.eval_dir / "info.json", info)
        write_json(self.eval_dir / "metrics.json", {**metrics, PROVENANCE: provenance})

    def forget_eval(self) -> None:
        """A retrained run is not evaluated until it is evaluated again."""
        (self.eval_dir / "metrics.json").unlink(missing_ok=True)

    # -- failures (of a benchmark cell: the grid goes on without it) ----------------------------
    def record_failure(self, error: str) -> None:
        write_json(self.eval_dir / "failed.json", {"error": error})

    def failure(self) -> str | None:
        """Why the last attempt at this run failed; None if it did not (or was never tried)."""
        record = _read_json(self.eval_dir / "failed.json")
        return None if record is None else str(record["error"])

    def forget_failure(self) -> None:
        (self.eval_dir / "failed.json").unlink(missing_ok=True)


def stopped_early(history: list[dict[str, Any]], patience: int | None) -> bool:
    """Early stopping: the best validation epoch is ``patience`` or more epochs old."""
    if not patience or not history:
        return False
    scores = [h["val_top1"] for h in history]
    return len(scores) - 1 - scores.index(max(scores)) >= patience


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None
