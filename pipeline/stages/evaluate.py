"""``vtl evaluate``: score a trained run on a split (test by default).

Writes the run's evaluation files (see :class:`pipeline.engine.run_folder.RunFolder`):
``metrics.json`` (the contract's keys), ``per_class.csv`` (precision/recall/F1/support),
``predictions.csv`` (one row per video, top prediction and its probability) and
``confusion.png``. Linear-probe runs are scored on the cached features of their backbone; other
runs on the cached clips, all views of each video.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from pipeline import provenance
from pipeline.data.cache import ClipCache, save_npz_atomic
from pipeline.data.datasets import ClipDataset, FeatureDataset
from pipeline.data.transforms import build_transform, eval_crops
from pipeline.engine import distributed
from pipeline.engine.config import EvaluateConfig, parse_views
from pipeline.engine.determinism import deterministic_mode
from pipeline.engine.loop import predict
from pipeline.engine.metrics import confusion_matrix, per_class, summarize, video_level
from pipeline.engine.run_folder import RunFolder
from pipeline.errors import UserError
from pipeline.files import write_csv
from pipeline.models.checkpoint import Checkpoint
from pipeline.models.classifier import Classifier, load_classifier
from pipeline.progress import detail, echo, log_to
from pipeline.report.plots import plot_confusion, plot_mistakes
from pipeline.workspace import Workspace

__all__ = ["run_evaluate"]


def run_evaluate(ws: Workspace, cfg: EvaluateConfig | None = None) -> dict[str, Any]:
    cfg = cfg or EvaluateConfig()
    ws.require_prepared()
    info_dist = distributed.setup(cfg.device)
    # It writes eval/RUN/ (and reads clips another stage may be rewriting): one writer at a
    # time, like every stage; only rank 0 writes under torchrun, so only rank 0 locks.
    with ws.lock("evaluate") if info_dist.is_main else contextlib.nullcontext():
        run = ws.run(cfg.run) if cfg.run else ws.latest_run()
        if not run.is_trained:
            raise UserError(f"run {run.name!r} has no best.pt in {run.train_dir}")
        with log_to(run.eval_log), deterministic_mode(cfg.deterministic):
            return _evaluate(ws, cfg, info_dist, run)


def _evaluate(ws: Workspace, cfg: EvaluateConfig, info_dist: distributed.DistInfo, run: RunFolder) -> dict[str, Any]:
    started = provenance.now()
    max_views, crops = parse_views(cfg.views)
    if ws.media == "image" and (max_views or crops > 1):
        raise UserError("--views is a video option; this workspace holds images")
    model, ckpt = load_classifier(run.best)
    if ckpt.classes != ws.classes():
        raise UserError(f"run {run.name!r} was trained on other classes than {ws.classes_file} lists")
    cache = ws.clip_cache(ckpt.config["sampling"])
    index = {c: i for i, c in enumerate(ckpt.classes)}
    rows = [r for r in ws.manifest_rows(cfg.split) if cache.has(r["id"])]
    if not rows:
        raise UserError(f"split {cfg.split!r} of {ws.root} has no sampled clips")
    ids, labels = [r["id"] for r in rows], [index[r["label"]] for r in rows]
    cached = run.predictions_cache(_predictions_key(run.best, cfg.split, cfg.views, ids))
    if cached.is_file():
        with np.load(cached) as z:
            probs, y, videos = z["probs"], z["labels"], z["videos"]
    else:
        probs, y, videos = _predict_split(ws, model, ckpt, cache, (ids, labels), cfg, info_dist)
        if info_dist.is_main:
            save_npz_atomic(cached, probs=probs, labels=y, videos=videos)
    metrics = summarize(probs, y, videos, len(ckpt.classes))
    info = {"run": run.name, "split": cfg.split, "backbone": ckpt.backbone, "weights": ckpt.weights,
            "strategy": ckpt.config["strategy"], "media": ws.media, "views": cfg.views or "all cached x 1"}
    record = provenance.finish(provenance.collect(started=started, clip_cache=ckpt.config["sampling"],
                                                  feature_cache=ckpt.feature_key))
    detail(f"evaluate: {run.eval_dir}: {provenance.one_line(record)}")
    if info_dist.is_main:
        _write_reports(run, metrics, info, (probs, y, videos), rows, ckpt.classes, record)
    echo(f"evaluate: {run.name} on {cfg.split}: top1 {metrics['top1']:.3f}, video top1 {metrics['video_top1']:.3f}, "
         f"mean class acc {metrics['mean_class_accuracy']:.3f} ({metrics['num_videos']} videos)")
    return {**metrics, **info, "eval_dir": str(run.eval_dir), provenance.KEY: record}


def _predictions_key(best: Path, split: str, views: str | None, ids: list[str]) -> str:
    """Same checkpoint file, split, views and videos → same predictions."""
    st = best.stat()
    text = f"{st.st_size}:{st.st_mtime_ns}:{split}:{views}:{','.join(ids)}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _predict_split(ws: Workspace, model: Classifier, ckpt: Checkpoint, cache: ClipCache,
                   videos: tuple[list[str], list[int]], cfg: EvaluateConfig,
                   info_dist: distributed.DistInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Softmax over every (video, view, crop) item, each rank scoring its share."""
    ids, labels = videos
    max_views, crops = parse_views(cfg.views)
    dev = distributed.device(info_dist)
    model.to(dev)
    fc = ws.features(ckpt.feature_key) if ckpt.feature_key else None
    if fc is not None and max_views is None and crops == 1 and fc.covers(cfg.split, ids):
        _, feats, offsets = fc.read(cfg.split)
        dataset: Dataset = FeatureDataset(feats, offsets, labels, train=False)
        net: torch.nn.Module = model.head
    else:
        size, (mean, std) = ckpt.config["input_size"], ckpt.normalization
        transform = build_transform(size, mean, std, train=False)
        dataset = ClipDataset(cache, ids, labels, transform, train=False, max_views=max_views,
                              crops=eval_crops(size, mean, std, crops) if crops > 1 else None)
        net = model
    shard = Subset(dataset, range(info_dist.rank, len(dataset), info_dist.world_size))
    loader = DataLoader(shard, batch_size=256 if isinstance(dataset, FeatureDataset) else cfg.batch_size)
    probs, y, vids = predict(net, loader, dev, desc=f"evaluate {cfg.split}")
    return distributed.gather_arrays(info_dist, probs, y, vids)


def _write_reports(run: RunFolder, metrics: dict, info: dict, outputs: tuple[np.ndarray, np.ndarray, np.ndarray],
                   rows: list[dict], classes: list[str], record: dict[str, Any]) -> None:
    vids, vprobs, vlabels = video_level(*outputs)
    cm = confusion_matrix(vlabels, vprobs.argmax(1), len(classes))
    write_csv(run.per_class_csv, ("class", "precision", "recall", "f1", "support"),
              [{"class": c, **{k: round(v, 6) for k, v in m.items()}} for c, m in zip(classes, per_class(cm),
                                                                                        strict=True)])
    preds = []
    for v, p, t in zip(vids, vprobs, vlabels, strict=True):
        k = int(p.argmax())
        preds.append({"path": rows[int(v)]["path"], "label": classes[int(t)], "predicted": classes[k],
                      "probability": round(float(p[k]), 6), "correct": int(k == int(t))})
    write_csv(run.predictions_csv, ("path", "label", "predicted", "probability", "correct"), preds)
    plot_confusion(cm, classes, run.confusion_png, title=f"{info['run']} on {info['split']}")
    if info["media"] == "image":
        mistakes = sorted((p for p in preds if not p["correct"]), key=lambda p: -p["probability"])
        plot_mistakes(mistakes[:12], run.mistakes_png)
    run.write_eval(metrics, info, record)  # metrics.json last: numbers (+ provenance), scripts read it
