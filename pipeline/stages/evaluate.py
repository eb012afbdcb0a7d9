"""``vtl evaluate``: score a trained run on a split (test by default).

Writes ``eval/<run>/``: ``metrics.json`` (the contract's keys), ``per_class.csv``
(precision/recall/F1/support), ``predictions.csv`` (one row per video, top
prediction and its probability) and ``confusion.png``. Linear-probe runs are
scored on the cached features of their backbone; other runs on the cached
clips, all views of each video.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from pipeline.data.cache import ClipCache, FeatureCache
from pipeline.data.datasets import ClipDataset, FeatureDataset
from pipeline.data.transforms import build_transform
from pipeline.engine import checkpoint
from pipeline.engine.loop import predict
from pipeline.engine.metrics import confusion_matrix, per_class, summarize, video_level
from pipeline.errors import UserError
from pipeline.models.classifier import Classifier, build_model
from pipeline.models.registry import get_spec
from pipeline.progress import echo
from pipeline.report.plots import plot_confusion, plot_mistakes
from pipeline.stages.train import device
from pipeline.workspace import Workspace, write_csv, write_json


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


def run_evaluate(ws: Workspace, run: str | None = None, split: str = "test",
                 batch_size: int = 16) -> dict[str, Any]:
    ws.require_prepared()
    run = run or default_run(ws)
    best = ws.train_dir(run) / "best.pt"
    if not best.is_file():
        raise UserError(f"run {run!r} has no best.pt in {ws.train_dir(run)}")
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
    dev = device()
    model.to(dev)
    fkey = ckpt.get("feature_key")
    fc = FeatureCache(ws.features_dir(fkey)) if fkey else None
    if fc is not None and fc.has(split) and fc.read(split)[0] == ids:
        _, feats, offsets = fc.read(split)
        loader = DataLoader(FeatureDataset(feats, offsets, labels, train=False), batch_size=256)
        probs, y, videos = predict(model.head, loader, dev, desc=f"evaluate {split}")
    else:
        spec = get_spec(ckpt["backbone"])
        transform = build_transform(cfg["input_size"], spec.mean, spec.std, train=False)
        loader = DataLoader(ClipDataset(cache, ids, labels, transform, train=False), batch_size=batch_size)
        probs, y, videos = predict(model, loader, dev, desc=f"evaluate {split}")
    metrics = summarize(probs, y, videos, len(classes))
    info = {"run": run, "split": split, "backbone": ckpt["backbone"], "weights": ckpt["weights"],
            "strategy": cfg["strategy"], "media": ws.media}
    out = ws.eval_dir(run)
    _write_reports(out, metrics, info, probs, y, videos, rows, classes)
    echo(f"evaluate: {run} on {split}: top1 {metrics['top1']:.3f}, video top1 {metrics['video_top1']:.3f}, "
         f"mean class acc {metrics['mean_class_accuracy']:.3f} ({metrics['num_videos']} videos)")
    return {**metrics, **info, "eval_dir": str(out)}


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
