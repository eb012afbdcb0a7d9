"""Transferability: how well each source should transfer, scored before any training (LogME on
every source, LEEP where the source has a classifier of its own: a ``vtl train`` checkpoint).

The frozen features of each source on the target's training split are extracted once into the
same feature cache ``vtl train`` uses for linear probes, so the grid's linear cells reuse them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.benchmark.grid import source_options
from pipeline.benchmark.sources import Source, SourcesFile
from pipeline.choices import LEARNABLE_POOLINGS
from pipeline.data.cache import feature_key
from pipeline.data.splits import load_splits
from pipeline.data.transforms import build_transform
from pipeline.engine import distributed
from pipeline.engine.config import TrainConfig
from pipeline.engine.distributed import DistInfo
from pipeline.engine.features import FeatureExtractor
from pipeline.engine.speed import Speed
from pipeline.errors import UserError
from pipeline.models.checkpoint import Checkpoint, is_checkpoint, load_torch_file
from pipeline.models.classifier import build_model, linear_head
from pipeline.progress import echo, warn
from pipeline.transfer.transferability import leep, logme, rank_sources
from pipeline.workspace import Workspace

TRANSFER_COLUMNS = ("source", "backbone", "weights", "logme", "leep", "predicted_rank", "num_videos",
                    "feature_dim", "feature_key")


def compute_transferability(ws: Workspace, sf: SourcesFile, *, need_eval_features: bool = False,
                            ) -> list[dict[str, Any]]:
    """LogME (and LEEP where possible) of every source on the target's training split.

    Features come from (and go to) the feature cache of the source's ``linear`` settings, so
    linear cells reuse them. With ``need_eval_features`` the val/test features are extracted
    too (so concurrent linear cells only read the cache)."""
    classes = ws.classes()
    rows: list[dict[str, Any]] = []
    for s in sf.sources:
        try:
            rows.append(_score_source(ws, sf, s, classes, need_eval_features))
        except Exception as e:  # noqa: BLE001 - a broken source fails its own cells, not the grid
            warn(f"benchmark: no transferability scores for source {s.name!r}: {' '.join(str(e).split())}")
            rows.append({"source": s.name, "backbone": s.backbone, "weights": s.weights, "logme": None,
                         "leep": None, "num_videos": 0, "feature_dim": None, "feature_key": None})
    order = rank_sources({r["source"]: r["logme"] for r in rows if r["logme"] is not None})
    for r in rows:
        r["predicted_rank"] = order.index(r["source"]) + 1 if r["source"] in order else None
        echo(f"benchmark: transferability of {r['source']}: LogME "
             + ("n/a" if r["logme"] is None else f"{r['logme']:.4f}") + ", LEEP "
             + ("n/a" if r["leep"] is None else f"{r['leep']:.4f}"))
    return rows


def _score_source(ws: Workspace, sf: SourcesFile, s: Source, classes: list[str],
                  need_eval_features: bool) -> dict[str, Any]:
    # The input settings of the source's linear cells: the features they would train on.
    opts = source_options(sf, s, "linear")
    cfg = TrainConfig(backbone=s.backbone, strategy="linear", weights=s.weights,
                      **{k: opts[k] for k in ("sampling", "input_size", "temporal", "batch_size") if k in opts})
    sampling = cfg.sampling or ws.latest_sampling()
    cache = ws.clip_cache(sampling)
    # A learnable temporal head has no frozen features; score the average pooling instead.
    temporal = "avg" if cfg.temporal in LEARNABLE_POOLINGS else cfg.temporal
    splits = load_splits(ws.iter_manifest(), cache, classes, 1.0, 0)
    if not need_eval_features:
        splits = {"train": splits["train"]}
    key = feature_key(s.backbone, s.weights, temporal, sampling, cfg.size)
    features = ws.features(key)
    for name, split in splits.items():
        if features.has(name) and not features.covers(name, split.ids):
            # Written for a subset (a `vtl train --fraction` linear run) or an older sampling:
            # extract the whole split again, so every fraction's subset can be read from it.
            echo(f"benchmark: the cached {name} features of {s.name!r} do not cover the split; re-extracting")
            features.forget(name)
    if not all(features.has(n) or not sp.ids for n, sp in splits.items()):
        echo(f"benchmark: features of source {s.name!r} ({s.backbone} @ {Path(s.weights).name})")
        model, spec = build_model(s.backbone, len(classes), weights=s.weights, temporal=temporal)
        # One process (no DDP), full precision: the same features a linear cell would extract.
        info = DistInfo()
        speed = Speed.choose(distributed.device(info), amp=False, channels_last=False, video=spec.kind == "video")
        transform = build_transform(cfg.size, *spec.normalization(s.weights), train=False)
        FeatureExtractor(model.backbone, transform, cfg.batch_size, info, speed).fill(features, cache, splits)
        del model
    ids, feats, offsets = features.read("train")
    index = {c: i for i, c in enumerate(classes)}
    label_of = {r["id"]: index[r["label"]] for r in ws.manifest_rows("train")}
    labels = np.asarray([label_of[i] for i in ids], dtype=np.int64)
    score = _logme(s, _per_video(feats, offsets), labels)
    return {"source": s.name, "backbone": s.backbone, "weights": s.weights, "logme": score,
            "leep": _leep(s, feats, offsets, labels, temporal), "num_videos": len(ids),
            "feature_dim": int(feats.shape[1]), "feature_key": key}


def _logme(s: Source, feats: np.ndarray, labels: np.ndarray) -> float | None:
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
        return round(logme(feats / scale, labels), 6)
    except (ValueError, FloatingPointError, ZeroDivisionError, OverflowError, np.linalg.LinAlgError) as e:
        warn(f"benchmark: LogME of source {s.name!r} is n/a ({type(e).__name__}: {e})")
        return None


def _per_video(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.stack([values[offsets[i]:offsets[i + 1]].mean(axis=0) for i in range(len(offsets) - 1)])


def _leep(s: Source, feats: np.ndarray, offsets: np.ndarray, labels: np.ndarray, temporal: str) -> float | None:
    """LEEP from the source checkpoint's own head on the features; None for a registry tag."""
    if not Path(s.weights).is_file():
        return None
    contents = load_torch_file(Path(s.weights))
    if not is_checkpoint(contents):
        return None
    ckpt = Checkpoint.from_contents(contents, Path(s.weights))
    head = linear_head(ckpt.model)
    if ckpt.temporal != temporal or head is None or tuple(head[0].shape)[1:] != (feats.shape[1],):
        return None
    w, b = head
    logits = feats.astype(np.float64) @ w.double().numpy().T + b.double().numpy()
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    video_probs = _per_video(probs, offsets)
    try:
        return round(leep(video_probs, labels, num_classes=int(labels.max()) + 1), 6)
    except (UserError, ValueError, FloatingPointError) as e:  # e.g. features that are not finite
        warn(f"benchmark: LEEP of source {s.name!r} is n/a ({e})")
        return None
