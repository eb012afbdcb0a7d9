"""``vtl benchmark``: which source (backbone + pretrained weights) transfers best to this target?

The grid is sources × strategies × label fractions × seeds, plus the ``scratch`` baseline of
every backbone at every fraction and seed. In order:

1. **Transferability** (before any training): the frozen features of each source on the
   target's *training* split, extracted once into the same feature cache ``vtl train`` uses
   for linear probes (so linear cells reuse them), scored with LogME and, where the source
   is a ``vtl train`` checkpoint with its own classifier, LEEP → ``benchmark/transferability.csv``
   with the predicted ranking.
2. **Cells**: one ``vtl train`` run + ``vtl evaluate`` on the test split per cell, named
   ``bench-<source>-<strategy>-f<fraction>-s<seed>`` (scratch: ``bench-<backbone>-scratch-…``).
   The grid resumes: a cell whose ``eval/<run>/metrics.json`` exists (for the same settings)
   is not recomputed, and a half-trained one resumes from its ``last.pt``.
3. **Report**: ``benchmark/results.csv`` (one row per cell), ``report.md``,
   ``learning_curve.png``, ``best_strategy.png`` (see :mod:`pipeline.report.benchmark`).

Locking: the benchmark holds the workspace lock from start to end, so no other ``vtl``
process writes to the workspace meanwhile. With ``--max-parallel N`` (N > 1) the cells run
in N child processes (``python -m pipeline.stages.benchmark cell …``) that do not take the
lock themselves: they run under the parent's lock, each writing only its own
``train/<run>/`` and ``eval/<run>/`` (the features linear cells need are extracted by the
parent first). A child exits when its parent dies.

The sources file (YAML; see ``configs/sources.yaml``)::

    strategies: [linear, finetune]      # optional defaults of --strategies/--fractions/--seeds
    fractions: [0.1, 0.25, 0.5, 1.0]
    seeds: 3
    train:                              # `vtl train` options for every cell ...
      epochs: 10
      lr: 0.001
      linear: {epochs: 60, lr: 0.01}    # ... and per strategy (scratch too)
    sources:
      - name: imagenet-effnet           # display name: letters, digits, . _ + -
        backbone: efficientnet_lite0
        weights: imagenet1k             # a tag, or the path of a `vtl train` checkpoint
        train: {input_size: 112, partial: {freeze_to: stage3}}   # per-source overrides

Settings are merged in the order ``train`` < ``train.<strategy>`` < the source's ``train``
< the source's ``train.<strategy>``. The scratch baseline of a backbone takes ``train`` <
``train.scratch``, then from the sources of that backbone the input settings (``input_size``,
``temporal``, ``sampling``) and their ``train.scratch``: sources of one backbone must agree
on them, so that one baseline serves them all.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import check_keys, load_yaml
from pipeline.errors import UserError
from pipeline.files import read_csv, write_csv
from pipeline.progress import echo, warn
from pipeline.sharding import Shard
from pipeline.workspace import Workspace

STRATEGY_CHOICES = ("linear", "partial", "finetune", "gradual")
DEFAULT_STRATEGIES = ("linear", "finetune")
DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
DEFAULT_SEEDS = 3
TOP_KEYS = ("train", "sources", "strategies", "fractions", "seeds")
SOURCE_KEYS = ("name", "backbone", "weights", "train")
# `vtl train` options the grid sets itself; a sources file may set every other TrainConfig field.
GRID_KEYS = ("backbone", "strategy", "weights", "fraction", "seed", "name", "extra")
# TrainConfig fields that change speed, not results: ignored when checking a finished cell's settings.
VOLATILE_KEYS = ("name", "extra", "workers", "amp", "channels_last", "compile")
INPUT_KEYS = ("input_size", "temporal", "sampling")  # shared by a backbone's sources and its scratch run
SCRATCH = "scratch"
RESULT_COLUMNS = ("source", "backbone", "weights", "strategy", "fraction", "seed", "top1", "mean_class_accuracy",
                  "train_seconds", "transfer_gain", "examples_per_class", "run")
TRANSFER_COLUMNS = ("source", "backbone", "weights", "logme", "leep", "predicted_rank", "num_videos",
                    "feature_dim", "feature_key")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


# ----------------------------------------------------------------------------- the sources file


@dataclass
class Source:
    name: str
    backbone: str
    weights: str  # a tag, or an absolute path
    train: dict[str, Any] = field(default_factory=dict)  # flat overrides
    per_strategy: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class SourcesFile:
    path: Path
    sources: list[Source]
    train: dict[str, Any] = field(default_factory=dict)
    per_strategy: dict[str, dict[str, Any]] = field(default_factory=dict)
    strategies: tuple[str, ...] | None = None
    fractions: tuple[float, ...] | None = None
    seeds: int | None = None


def train_keys() -> tuple[str, ...]:
    """The `vtl train` options a sources file may set: TrainConfig's fields but the grid's."""
    from pipeline.stages.train import TrainConfig

    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in GRID_KEYS)


def _split_train(section: Any, where: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A ``train:`` mapping → (flat options, {strategy: options})."""
    if section is None:
        return {}, {}
    if not isinstance(section, dict):
        raise UserError(f"{where}: expected a mapping of `vtl train` options")
    flat, per = {}, {}
    strategies = (SCRATCH, *STRATEGY_CHOICES)
    allowed = train_keys()
    check_keys(section, (*allowed, *strategies), where)
    for k, v in section.items():
        if k in strategies:
            if v is None:
                continue
            if not isinstance(v, dict):
                raise UserError(f"{where}.{k}: expected a mapping of `vtl train` options")
            check_keys(v, allowed, f"{where}.{k}")
            per[k] = dict(v)
        else:
            flat[k] = v
    return flat, per


def load_sources(path: Path) -> SourcesFile:
    """Read and validate a sources file; relative weight paths are relative to the file."""
    path = Path(path)
    data = load_yaml(path)
    check_keys(data, TOP_KEYS, str(path))
    flat, per = _split_train(data.get("train"), f"{path}: train")
    items = data.get("sources")
    if not isinstance(items, list) or not items:
        raise UserError(f"{path}: `sources` must be a non-empty list of {{name, backbone, weights}}")
    base = path.resolve().parent
    sources: list[Source] = []
    for i, item in enumerate(items):
        where = f"{path}: sources[{i}]"
        if not isinstance(item, dict):
            raise UserError(f"{where}: expected a mapping with keys {', '.join(SOURCE_KEYS)}")
        check_keys(item, SOURCE_KEYS, where)
        for key in ("name", "backbone", "weights"):
            if item.get(key) in (None, ""):
                raise UserError(f"{where}: missing key {key!r}")
        name = str(item["name"])
        if not _NAME.match(name):
            raise UserError(f"{where}: name {name!r} may hold only letters, digits and . _ + - (it names runs)")
        if name == SCRATCH or name in {s.name for s in sources}:
            raise UserError(f"{where}: name {name!r} is " + ("reserved" if name == SCRATCH else "used twice"))
        weights = str(item["weights"])
        if weights == "none":
            raise UserError(f"{where}: a source needs pretrained weights (the scratch baseline is always run)")
        s_flat, s_per = _split_train(item.get("train"), f"{where}.train")
        sources.append(Source(name, str(item["backbone"]), _weights_value(str(item["backbone"]), weights, base),
                              s_flat, s_per))
    return SourcesFile(path, sources, flat, per,
                       strategies=parse_strategies(data["strategies"], str(path)) if "strategies" in data else None,
                       fractions=parse_fractions(data["fractions"], str(path)) if "fractions" in data else None,
                       seeds=_seeds(data["seeds"], str(path)) if "seeds" in data else None)


def _weights_value(backbone: str, weights: str, base: Path) -> str:
    """A tag stays a tag; anything else is a path, made absolute relative to the sources file."""
    from pipeline.models.registry import get_spec

    if weights in get_spec(backbone).weights:
        return weights
    p = Path(weights).expanduser()
    looks_like_path = "/" in weights or p.suffix in (".pt", ".pth", ".pyth", ".ckpt") or (base / p).exists()
    if not looks_like_path:
        return weights  # an unknown tag: `resolve` says which tags exist
    return str(p if p.is_absolute() else (base / p).resolve())


def _listish(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    return [str(value)]


def parse_strategies(value: Any, where: str = "--strategies") -> tuple[str, ...]:
    names = _listish(value)
    for n in names:
        if n == SCRATCH:
            raise UserError(f"{where}: scratch is always run as the baseline; list only transfer strategies")
        if n not in STRATEGY_CHOICES:
            raise UserError(f"{where}: unknown strategy {n!r}; choose from {', '.join(STRATEGY_CHOICES)}")
    if not names:
        raise UserError(f"{where}: no strategy given")
    return tuple(dict.fromkeys(names))


def parse_fractions(value: Any, where: str = "--fractions") -> tuple[float, ...]:
    out = []
    for v in _listish(value):
        try:
            f = float(v)
        except ValueError:
            raise UserError(f"{where}: {v!r} is not a number") from None
        if not 0.0 < f <= 1.0:
            raise UserError(f"{where}: fractions must be in (0, 1], got {v}")
        out.append(f)
    if not out:
        raise UserError(f"{where}: no fraction given")
    return tuple(sorted(set(out)))


def _seeds(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where}: seeds must be a positive integer (the number of seeds), got {value!r}")
    return value


# ----------------------------------------------------------------------------- the grid


@dataclass
class Cell:
    source: str  # display name; "scratch" for the baseline
    backbone: str
    weights: str  # resolved ("none" for scratch)
    strategy: str
    fraction: float
    seed: int
    options: dict[str, Any]  # `vtl train` options from the sources file

    @property
    def run(self) -> str:
        head = f"{self.backbone}-{SCRATCH}" if self.strategy == SCRATCH else f"{self.source}-{self.strategy}"
        return f"bench-{head}-f{self.fraction:g}-s{self.seed}"

    def train_config(self):
        from pipeline.stages.train import TrainConfig

        return TrainConfig(backbone=self.backbone, strategy=self.strategy,
                           weights=None if self.strategy == SCRATCH else self.weights,
                           fraction=self.fraction, seed=self.seed, name=self.run, **self.options)


def source_options(sf: SourcesFile, source: Source, strategy: str) -> dict[str, Any]:
    return {**sf.train, **sf.per_strategy.get(strategy, {}), **source.train, **source.per_strategy.get(strategy, {})}


def scratch_options(sf: SourcesFile, backbone: str) -> dict[str, Any]:
    opts = {**sf.train, **sf.per_strategy.get(SCRATCH, {})}
    chosen: dict[str, Any] | None = None
    first = ""
    for s in sf.sources:
        if s.backbone != backbone:
            continue
        mine = {**opts, **{k: v for k, v in s.train.items() if k in INPUT_KEYS}, **s.per_strategy.get(SCRATCH, {})}
        if chosen is None:
            chosen, first = mine, s.name
        elif mine != chosen:
            diff = sorted(k for k in set(mine) | set(chosen) if mine.get(k) != chosen.get(k))
            raise UserError(f"{sf.path}: sources {first!r} and {s.name!r} share backbone {backbone} but would "
                            f"train different scratch baselines ({', '.join(diff)}): give them the same "
                            f"{', '.join(INPUT_KEYS)} and train.scratch settings")
    return chosen if chosen is not None else opts


def plan(sf: SourcesFile, strategies: Sequence[str], fractions: Sequence[float], seeds: int) -> list[Cell]:
    """Every cell of the grid, the scratch baselines last; validates every cell's settings."""
    cells: list[Cell] = []
    for s in sf.sources:
        for strategy in strategies:
            for fraction in fractions:
                for seed in range(seeds):
                    cells.append(Cell(s.name, s.backbone, s.weights, strategy, fraction, seed,
                                      source_options(sf, s, strategy)))
    for backbone in dict.fromkeys(s.backbone for s in sf.sources):
        opts = scratch_options(sf, backbone)
        for fraction in fractions:
            for seed in range(seeds):
                cells.append(Cell(SCRATCH, backbone, "none", SCRATCH, fraction, seed, dict(opts)))
    for c in cells:
        try:
            c.train_config()
        except UserError as e:
            what = f"the scratch baseline of {c.backbone}" if c.strategy == SCRATCH else \
                f"source {c.source!r} with strategy {c.strategy}"
            raise UserError(f"{sf.path}: {what}: {e}") from None
        except TypeError as e:
            raise UserError(f"{sf.path}: {e}") from None
    return cells


# ----------------------------------------------------------------------------- the stage


@dataclass
class BenchmarkConfig:
    sources: Path
    strategies: tuple[str, ...] | None = None  # None: the sources file's, else DEFAULT_STRATEGIES
    fractions: tuple[float, ...] | None = None
    seeds: int | None = None
    max_parallel: int = 1
    force: bool = False  # retrain and re-evaluate every cell


def run_benchmark(ws: Workspace, cfg: BenchmarkConfig) -> dict[str, Any]:
    from pipeline.stages.sample import latest_sampling

    ws.require_prepared()
    if cfg.max_parallel < 1:
        raise UserError(f"--max-parallel must be at least 1, got {cfg.max_parallel}")
    sf = load_sources(cfg.sources)
    strategies = cfg.strategies or sf.strategies or DEFAULT_STRATEGIES
    fractions = cfg.fractions or sf.fractions or DEFAULT_FRACTIONS
    seeds = cfg.seeds or sf.seeds or DEFAULT_SEEDS
    cells = plan(sf, strategies, fractions, seeds)
    _check_weights(sf)
    latest_sampling(ws)  # fails early when `vtl sample` was not run
    if not ws.manifest_rows("test"):
        raise UserError(f"{ws.root} has no test split, and every cell is evaluated on it: prepare the workspace "
                        "with --test-fraction above 0 (or an official test split)")
    out = ws.benchmark_dir
    t0 = time.perf_counter()
    with ws.lock("benchmark"):
        echo(f"benchmark: {len(sf.sources)} source(s) × {len(strategies)} strategies × {len(fractions)} "
             f"fraction(s) × {seeds} seed(s) + scratch = {len(cells)} cells")
        scores = compute_transferability(ws, sf, need_eval_features="linear" in strategies)
        write_csv(out / "transferability.csv", TRANSFER_COLUMNS, scores)
        todo = _cells_to_run(ws, cells, force=cfg.force)
        echo(f"benchmark: {len(cells) - len(todo)} cell(s) done before, {len(todo)} to run")
        if cfg.max_parallel > 1 and len(todo) > 1:
            _run_parallel(ws, todo, cfg.max_parallel)
        else:
            for i, (cell, restart) in enumerate(todo, start=1):
                echo(f"benchmark: cell {i}/{len(todo)}: {cell.run}")
                _run_cell(ws, cell, restart=restart)
        rows = collect_results(ws, cells)
        from pipeline.report.benchmark import add_transfer_gains, write_report

        add_transfer_gains(rows)
        write_csv(out / "results.csv", RESULT_COLUMNS, [_csv_row(r) for r in rows])
        summary = write_report(out, rows, scores, workspace_name=ws.root.name,
                               num_test_videos=len(ws.manifest_rows("test")))
    return {**summary, "results": out / "results.csv", "transferability": out / "transferability.csv",
            "cells": len(cells), "ran": len(todo), "seconds": time.perf_counter() - t0}


def _check_weights(sf: SourcesFile) -> None:
    """Every source's weights must be on this machine before anything trains."""
    from pipeline.models.registry import get_spec
    from pipeline.models.weights import resolve

    problems = []
    for s in sf.sources:
        try:
            resolve(get_spec(s.backbone), s.weights)
        except UserError as e:
            problems.append(f"source {s.name!r}: {e}")
    if problems:
        raise UserError(f"{sf.path}: " + "; ".join(problems))


def _csv_row(r: dict[str, Any]) -> dict[str, Any]:
    out = dict(r)
    for k in ("top1", "mean_class_accuracy", "transfer_gain"):
        if out.get(k) is not None:
            out[k] = round(float(out[k]), 6)
    out["train_seconds"] = round(float(out["train_seconds"]), 2)
    out["fraction"] = f"{out['fraction']:g}"
    if out.get("transfer_gain") is None:
        out["transfer_gain"] = ""
    return out


# ----------------------------------------------------------------------------- transferability


def compute_transferability(ws: Workspace, sf: SourcesFile, *, need_eval_features: bool = False,
                            ) -> list[dict[str, Any]]:
    """LogME (and LEEP where possible) of every source on the target's training split.

    Features come from (and go to) the feature cache of the source's ``linear`` settings, so
    linear cells reuse them. With ``need_eval_features`` the val/test features are extracted
    too (so concurrent linear cells only read the cache)."""
    from pipeline.transfer.transferability import rank_sources

    classes = ws.classes()
    rows: list[dict[str, Any]] = []
    for s in sf.sources:
        try:
            rows.append(_score_source(ws, sf, s, classes, need_eval_features))
        except UserError as e:
            raise UserError(f"source {s.name!r}: {e}") from None
    order = rank_sources({r["source"]: r["logme"] for r in rows if r["logme"] is not None})
    for r in rows:
        r["predicted_rank"] = order.index(r["source"]) + 1 if r["source"] in order else None
        echo(f"benchmark: transferability of {r['source']}: LogME "
             + ("n/a" if r["logme"] is None else f"{r['logme']:.4f}") + ", LEEP "
             + ("n/a" if r["leep"] is None else f"{r['leep']:.4f}"))
    return rows


def _score_source(ws: Workspace, sf: SourcesFile, s: Source, classes: list[str],
                  need_eval_features: bool) -> dict[str, Any]:
    from pipeline.data.cache import ClipCache, FeatureCache
    from pipeline.data.splits import load_splits
    from pipeline.engine import distributed
    from pipeline.engine.distributed import DistInfo
    from pipeline.engine.trainer import Speed
    from pipeline.models.registry import get_spec
    from pipeline.models.temporal import LEARNABLE_POOLINGS
    from pipeline.stages.sample import latest_sampling
    from pipeline.stages.train import cached_features, feature_key
    from pipeline.transfer.transferability import leep, logme

    opts = source_options(sf, s, "linear")
    spec = get_spec(s.backbone)
    sampling = opts.get("sampling") or latest_sampling(ws)
    cache = ClipCache(ws.clips_dir(sampling))
    if not cache.params():
        raise UserError(f"no clip cache {sampling!r} in {ws.root}; run `vtl sample` first")
    size = opts.get("input_size") or spec.input_size
    temporal = opts.get("temporal", "avg")
    if temporal in LEARNABLE_POOLINGS:
        temporal = "avg"  # a learnable temporal head has no frozen features; score the average
    splits = load_splits(ws.iter_manifest(), cache, classes, 1.0, 0)
    if not need_eval_features:
        splits = {"train": splits["train"]}
    key = feature_key(s.backbone, s.weights, temporal, sampling, size)
    fc = FeatureCache(ws.features_dir(key))
    for name, split in splits.items():
        marker = fc.root / f"{name}.ids.json"
        if fc.has(name) and json.loads(marker.read_text()) != split.ids:
            # Written for a subset (a `vtl train --fraction` linear run) or an older sampling:
            # extract the whole split again, so every fraction's subset can be read from it.
            echo(f"benchmark: the cached {name} features of {s.name!r} do not cover the split; re-extracting")
            marker.unlink()
    if not all(fc.has(n) or not sp.ids for n, sp in splits.items()):
        from pipeline.models.classifier import build_model

        echo(f"benchmark: features of source {s.name!r} ({s.backbone} @ {Path(s.weights).name})")
        model, _ = build_model(s.backbone, len(classes), weights=s.weights, temporal=temporal)
        # One process (no DDP), full precision: the same features a linear cell would extract.
        info = DistInfo()
        speed = Speed.choose(distributed.device(info), amp=False, channels_last=False,
                             video=spec.kind == "video")
        cached_features(ws, model, cache, splits, key, size, spec.mean, spec.std,
                        int(opts.get("batch_size", 8)), info, speed)
        del model
    ids, feats, offsets = fc.read("train")
    index = {c: i for i, c in enumerate(classes)}
    label_of = {r["id"]: index[r["label"]] for r in ws.manifest_rows("train")}
    labels = np.asarray([label_of[i] for i in ids], dtype=np.int64)
    video_feats = _per_video(feats, offsets)
    score = _logme(s, video_feats, labels, logme)
    return {"source": s.name, "backbone": s.backbone, "weights": s.weights, "logme": score,
            "leep": _leep(s, feats, offsets, labels, temporal, leep), "num_videos": len(ids),
            "feature_dim": int(feats.shape[1]), "feature_key": key}


def _logme(s: Source, feats: np.ndarray, labels: np.ndarray, logme_fn) -> float | None:
    """LogME of per-video features; None (with a warning) when it cannot be computed.

    The features are divided by their overall standard deviation first: LogME's maximised
    evidence does not depend on the features' scale (the prior precision absorbs it), but its
    float64 iteration does, and a badly trained source can produce features around 1e14."""
    scale = float(np.std(feats))
    if not np.all(np.isfinite(feats)) or scale == 0.0:
        warn(f"benchmark: LogME of source {s.name!r} is n/a: its features are "
             + ("constant" if scale == 0.0 else "not finite"))
        return None
    try:
        return round(logme_fn(feats / scale, labels), 6)
    except (ValueError, FloatingPointError, ZeroDivisionError, OverflowError, np.linalg.LinAlgError) as e:
        warn(f"benchmark: LogME of source {s.name!r} is n/a ({type(e).__name__}: {e})")
        return None


def _per_video(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.stack([values[offsets[i]:offsets[i + 1]].mean(axis=0) for i in range(len(offsets) - 1)])


def _leep(s: Source, feats: np.ndarray, offsets: np.ndarray, labels: np.ndarray, temporal: str, leep_fn):
    """LEEP from the source checkpoint's own head on the features; None for a registry tag."""
    from pipeline.models.weights import is_checkpoint, load_file

    if not Path(s.weights).is_file():
        return None
    ckpt = load_file(Path(s.weights))
    if not is_checkpoint(ckpt) or ckpt.get("temporal", "avg") != temporal:
        return None
    state = ckpt.get("model") or {}
    w, b = state.get("head.1.weight"), state.get("head.1.bias")
    if w is None or b is None or tuple(w.shape)[1:] != (feats.shape[1],):
        return None
    logits = feats.astype(np.float64) @ w.double().numpy().T + b.double().numpy()
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    video_probs = _per_video(probs, offsets)
    try:
        return round(leep_fn(video_probs, labels, num_classes=int(labels.max()) + 1), 6)
    except (UserError, ValueError, FloatingPointError) as e:  # e.g. features that are not finite
        warn(f"benchmark: LEEP of source {s.name!r} is n/a ({e})")
        return None


# ----------------------------------------------------------------------------- cells


def _expected_config(ws: Workspace, cell: Cell) -> dict[str, Any]:
    """The settings a cell's ``train/<run>/config.yaml`` must hold to count as this cell."""
    from pipeline.models.registry import get_spec
    from pipeline.stages.sample import latest_sampling

    cfg = cell.train_config()
    d = dataclasses.asdict(cfg)
    for k in VOLATILE_KEYS:
        d.pop(k, None)
    d["weights"] = cfg.resolved_weights()
    d["sampling"] = cfg.sampling or latest_sampling(ws)
    d["input_size"] = cfg.input_size or get_spec(cfg.backbone).input_size
    return d


def _stale(ws: Workspace, cell: Cell) -> list[str]:
    """Settings in which the cell's recorded run differs from the grid's (empty: same or none)."""
    import yaml

    path = ws.train_dir(cell.run) / "config.yaml"
    if not path.is_file():
        return []
    recorded = yaml.safe_load(path.read_text()) or {}
    return sorted(k for k, v in _expected_config(ws, cell).items() if recorded.get(k, v) != v)


def _cells_to_run(ws: Workspace, cells: Sequence[Cell], *, force: bool) -> list[tuple[Cell, bool]]:
    """(cell, restart) of every cell without results for its current settings."""
    todo = []
    for c in cells:
        changed = _stale(ws, c)
        if changed:
            warn(f"benchmark: cell {c.run} was trained with other settings ({', '.join(changed)}): retraining it")
        done = (ws.eval_dir(c.run) / "metrics.json").is_file() and not changed
        if force or not done:
            todo.append((c, force or bool(changed)))
    return todo


def _run_cell(ws: Workspace, cell: Cell, *, restart: bool) -> None:
    from pipeline.stages.evaluate import run_evaluate
    from pipeline.stages.train import run_train

    metrics = ws.eval_dir(cell.run) / "metrics.json"
    if restart and metrics.is_file():
        metrics.unlink()  # a retrained cell is not done until it is evaluated again
    run_train(ws, cell.train_config(), restart=restart)
    run_evaluate(ws, cell.run, "test")


def _run_parallel(ws: Workspace, todo: Sequence[tuple[Cell, bool]], max_parallel: int) -> None:
    """Run cells in up to ``max_parallel`` child processes (under this process's lock)."""
    logs = ws.benchmark_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // max_parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONUNBUFFERED": "1", "VTL_PROGRESS_INTERVAL": os.environ.get("VTL_PROGRESS_INTERVAL", "60")}
    queue = list(todo)
    running: dict[subprocess.Popen, tuple[Cell, Path]] = {}
    failed: list[str] = []
    done = 0
    try:
        while queue or running:
            while queue and len(running) < max_parallel and not failed:
                cell, restart = queue.pop(0)
                metrics = ws.eval_dir(cell.run) / "metrics.json"
                if restart and metrics.is_file():
                    metrics.unlink()
                log = logs / f"{cell.run}.log"
                payload = json.dumps({"config": dataclasses.asdict(cell.train_config()), "restart": restart})
                with open(log, "w") as f:
                    proc = subprocess.Popen([sys.executable, "-m", "pipeline.stages.benchmark", "cell",
                                             str(ws.root), payload], stdout=f, stderr=subprocess.STDOUT, env=env)
                running[proc] = (cell, log)
                echo(f"benchmark: started {cell.run} (pid {proc.pid}, log {log})")
            if failed:
                queue.clear()
            for proc in [p for p in running if p.poll() is not None]:
                cell, log = running.pop(proc)
                done += 1
                if proc.returncode == 0:
                    echo(f"benchmark: finished {cell.run} ({done}/{len(todo)})")
                else:
                    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
                    failed.append(f"{cell.run} (exit {proc.returncode}: {tail[0] if tail else 'no output'}; "
                                  f"see {log})")
            time.sleep(0.2)
    finally:
        for proc in running:
            proc.terminate()
        for proc in running:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if failed:
        raise UserError("benchmark: cell(s) failed: " + "; ".join(failed))


def collect_results(ws: Workspace, cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """One row per cell from its ``eval/<run>/metrics.json`` and ``train/<run>/metrics.jsonl``."""
    counts = _examples_per_class(ws, cells)
    rows = []
    for c in cells:
        path = ws.eval_dir(c.run) / "metrics.json"
        if not path.is_file():
            raise UserError(f"benchmark: cell {c.run} has no {path}; run the benchmark again")
        m = json.loads(path.read_text())
        history = ws.train_dir(c.run) / "metrics.jsonl"
        lines = history.read_text().splitlines() if history.is_file() else []
        seconds = json.loads(lines[-1])["train_seconds"] if lines else float("nan")
        rows.append({"source": c.source, "backbone": c.backbone, "weights": c.weights, "strategy": c.strategy,
                     "fraction": c.fraction, "seed": c.seed, "top1": m.get("video_top1", m["top1"]),
                     "mean_class_accuracy": m.get("video_mean_class_accuracy", m["mean_class_accuracy"]),
                     "train_seconds": seconds, "examples_per_class": counts(c.fraction), "run": c.run})
    return rows


def _examples_per_class(ws: Workspace, cells: Sequence[Cell]):
    """fraction → mean over classes of the labelled training videos a fraction keeps
    (``ceil(n × fraction)``, at least 1, as ``--fraction`` selects them) among the sampled ones."""
    from pipeline.data.cache import ClipCache
    from pipeline.stages.sample import latest_sampling

    sampling = next((c.options["sampling"] for c in cells if c.options.get("sampling")), None)
    cache = ClipCache(ws.clips_dir(sampling or latest_sampling(ws)))
    per_class: dict[str, int] = {}
    for r in ws.manifest_rows("train"):
        if cache.has(r["id"]):
            per_class[r["label"]] = per_class.get(r["label"], 0) + 1
    return lambda f: round(float(np.mean([max(1, math.ceil(n * f)) for n in per_class.values()])), 2) \
        if per_class else float("nan")


def read_results(ws: Workspace) -> list[dict[str, str]]:
    return read_csv(ws.benchmark_dir / "results.csv")


# ----------------------------------------------------------------------------- child process


class _CoordinatedWorkspace(Workspace):
    """A workspace whose lock the parent ``vtl benchmark`` holds: a child cell takes none."""

    @contextmanager
    def lock(self, stage: str, shard: Shard | None = None) -> Iterator[None]:
        yield


def _exit_with_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(143)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()


def _cell_main(argv: list[str]) -> int:
    """``python -m pipeline.stages.benchmark cell WORKSPACE JSON``: train + evaluate one cell.
    Internal: only ``vtl benchmark --max-parallel`` starts it, under its workspace lock."""
    from pipeline.stages.evaluate import run_evaluate
    from pipeline.stages.train import TrainConfig, run_train

    if len(argv) != 3 or argv[0] != "cell":
        print("usage: python -m pipeline.stages.benchmark cell WORKSPACE CONFIG_JSON (internal to vtl benchmark)",
              file=sys.stderr)
        return 2
    _exit_with_parent()
    ws = _CoordinatedWorkspace(argv[1])
    payload = json.loads(argv[2])
    try:
        cfg = TrainConfig(**payload["config"])
        run_train(ws, cfg, restart=bool(payload.get("restart")))
        run_evaluate(ws, cfg.run_name, "test")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    sys.exit(_cell_main(sys.argv[1:]))
