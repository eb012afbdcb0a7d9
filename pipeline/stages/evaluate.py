"""``vtl evaluate``: score a trained run on a split (test by default).

Writes ``eval/<run>/``: ``metrics.json`` (the contract's keys), ``per_class.csv``
(precision/recall/F1/support), ``predictions.csv`` (one row per video, top
prediction and its probability) and ``confusion.png``. Linear-probe runs are
scored on the cached features of their backbone; other runs on the cached
clips, all views of each video.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from pipeline.data.cache import ClipCache, FeatureCache, save_npz_atomic
from pipeline.data.datasets import ClipDataset, FeatureDataset
from pipeline.data.transforms import build_transform, eval_crops
from pipeline.engine import checkpoint, distributed
from pipeline.engine.loop import predict
from pipeline.engine.metrics import confusion_matrix, per_class, summarize, video_level
from pipeline.errors import UserError
from pipeline.files import write_csv, write_json
from pipeline.models.classifier import Classifier, build_model
from pipeline.models.registry import get_spec
from pipeline.progress import echo
from pipeline.report.plots import plot_confusion, plot_mistakes
from pipeline.workspace import Workspace


def default_run(ws: Workspace) -> str:
    runs = sorted((p for p in (ws.root / "train").glob("*/best.pt")), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UserError(f"no trained run in {ws.root}: run `vtl train {ws.root} ...` first")
    return runs[-1].parent.name


def load_classifier(path: Path) -> tuple[Classifier, dict]:
    """Rebuild the model of a checkpoint written by ``vtl train``."""
    ckpt = checkpoint.load(path)
    model, _ = build_model(ckpt["backbone"], len(ckpt["classes"]), weights="none",
                           temporal=ckpt.get("temporal", "avg"))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise UserError(f"{path} does not match its recorded backbone: {str(e).splitlines()[0]}") from None
    return model, ckpt


def parse_views(views: str | None) -> tuple[int | None, int]:
    """``"10x3"`` → (10 clips, 3 crops); None → every cached clip, centre crop."""
    if views is None:
        return None, 1
    try:
        clips, crops = (int(v) for v in views.lower().split("x"))
    except ValueError:
        raise UserError(f"--views must look like CLIPSxCROPS (e.g. 5x3), got {views!r}") from None
    if clips < 1 or crops not in (1, 3):
        raise UserError(f"--views {views}: CLIPS must be ≥ 1 and CROPS 1 or 3")
    return clips, crops


def run_evaluate(ws: Workspace, run: str | None = None, split: str = "test", batch_size: int = 16,
                 views: str | None = None) -> dict[str, Any]:
    ws.require_prepared()
    info_dist = distributed.setup()
    # It writes eval/RUN/ (and reads clips another stage may be rewriting): one writer at a
    # time, like every stage; only rank 0 writes under torchrun, so only rank 0 locks.
    with ws.lock("evaluate") if info_dist.is_main else contextlib.nullcontext():
        return _evaluate(ws, run, split, batch_size, views, info_dist)


def _evaluate(ws: Workspace, run: str | None, split: str, batch_size: int, views: str | None,
              info_dist: distributed.DistInfo) -> dict[str, Any]:
    run = run or default_run(ws)
    best = ws.train_dir(run) / "best.pt"
    if not best.is_file():
        raise UserError(f"run {run!r} has no best.pt in {ws.train_dir(run)}")
    max_views, crops = parse_views(views)
    if ws.media == "image" and (max_views or crops > 1):
        raise UserError("--views is a video option; this workspace holds images")
    model, ckpt = load_classifier(best)
    classes = ckpt["classes"]
    if classes != ws.classes():
        raise UserError(f"run {run!r} was trained on other classes than {ws.classes_file} lists")
    cfg = ckpt["config"]
    cache = ClipCache(ws.clips_dir(cfg["sampling"]))
    index = {c: i for i, c in enumerate(classes)}
    rows = [r for r in ws.manifest_rows(split) if cache.has(r["id"])]
    if not rows:
        raise UserError(f"split {split!r} of {ws.root} has no sampled clips")
    ids, labels = [r["id"] for r in rows], [index[r["label"]] for r in rows]
    out = ws.eval_dir(run)
    key = _predictions_key(best, split, views, ids)
    cached = out / f".predictions-{key}.npz"
    if cached.is_file():
        with np.load(cached) as z:
            probs, y, videos = z["probs"], z["labels"], z["videos"]
    else:
        probs, y, videos = _predict_split(ws, model, ckpt, cache, ids, labels, split, batch_size, max_views, crops,
                                          info_dist)
        if info_dist.is_main:
            save_npz_atomic(cached, probs=probs, labels=y, videos=videos)
    metrics = summarize(probs, y, videos, len(classes))
    info = {"run": run, "split": split, "backbone": ckpt["backbone"], "weights": ckpt["weights"],
            "strategy": cfg["strategy"], "media": ws.media, "views": views or "all cached x 1"}
    if info_dist.is_main:
        _write_reports(out, metrics, info, probs, y, videos, rows, classes)
    echo(f"evaluate: {run} on {split}: top1 {metrics['top1']:.3f}, video top1 {metrics['video_top1']:.3f}, "
         f"mean class acc {metrics['mean_class_accuracy']:.3f} ({metrics['num_videos']} videos)")
    return {**metrics, **info, "eval_dir": str(out)}


def _predictions_key(best: Path, split: str, views: str | None, ids: list[str]) -> str:
    """Same checkpoint file, split, views and videos → same predictions."""
    st = best.stat()
    text = f"{st.st_size}:{st.st_mtime_ns}:{split}:{views}:{','.join(ids)}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _predict_split(ws: Workspace, model: Classifier, ckpt: dict, cache: ClipCache, ids: list[str],
                   labels: list[int], split: str, batch_size: int, max_views: int | None, crops: int,
                   info_dist: distributed.DistInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Softmax over every (video, view, crop) item, each rank scoring its share."""
    dev = distributed.device(info_dist)
    model.to(dev)
    cfg = ckpt["config"]
    fkey = ckpt.get("feature_key")
    fc = FeatureCache(ws.features_dir(fkey)) if fkey else None
    if fc is not None and max_views is None and crops == 1 and fc.has(split) and fc.read(split)[0] == ids:
        _, feats, offsets = fc.read(split)
        dataset: Dataset = FeatureDataset(feats, offsets, labels, train=False)
        net: torch.nn.Module = model.head
    else:
        spec = get_spec(ckpt["backbone"])
        size = cfg["input_size"]
        transform = build_transform(size, spec.mean, spec.std, train=False)
        dataset = ClipDataset(cache, ids, labels, transform, train=False, max_views=max_views,
                              crops=eval_crops(size, spec.mean, spec.std, crops) if crops > 1 else None)
        net = model
    shard = Subset(dataset, range(info_dist.rank, len(dataset), info_dist.world_size))
    loader = DataLoader(shard, batch_size=256 if isinstance(dataset, FeatureDataset) else batch_size)
    probs, y, videos = predict(net, loader, dev, desc=f"evaluate {split}")
    return distributed.gather_arrays(info_dist, probs, y, videos)


def _write_reports(out: Path, metrics: dict, info: dict, probs: np.ndarray, labels: np.ndarray, videos: np.ndarray,
                   rows: list[dict], classes: list[str]) -> None:
    vids, vprobs, vlabels = video_level(probs, labels, videos)
    cm = confusion_matrix(vlabels, vprobs.argmax(1), len(classes))
    write_csv(out / "per_class.csv", ("class", "precision", "recall", "f1", "support"),
              [{"class": c, **{k: round(v, 6) for k, v in m.items()}} for c, m in zip(classes, per_class(cm),
                                                                                        strict=True)])
    preds = []
    for v, p, t in zip(vids, vprobs, vlabels, strict=True):
        k = int(p.argmax())
        preds.append({"path": rows[int(v)]["path"], "label": classes[int(t)], "predicted": classes[k],
                      "probability": round(float(p[k]), 6), "correct": int(k == int(t))})
    write_csv(out / "predictions.csv", ("path", "label", "predicted", "probability", "correct"), preds)
    plot_confusion(cm, classes, out / "confusion.png", title=f"{info['run']} on {info['split']}")
    if info["media"] == "image":
        mistakes = sorted((p for p in preds if not p["correct"]), key=lambda p: -p["probability"])
        plot_mistakes(mistakes[:12], out / "mistakes.png")
    write_json(out / "info.json", info)
    write_json(out / "metrics.json", metrics)  # numbers only: scripts read it


__all__ = ["run_evaluate", "load_classifier", "default_run"]
