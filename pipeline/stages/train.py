"""``vtl train``: adapt a backbone to the workspace's classes with one strategy.

Frozen strategies (``linear``) first extract the backbone's features once into
``features/<backbone>@<weights>@<sampling>/`` and train the head on them; the
others train on the cached clips. Every epoch writes ``last.pt`` (full state,
so a re-run resumes where it stopped) and ``metrics.jsonl``; the best epoch on
the validation split is ``best.pt``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipeline.data.cache import ClipCache, FeatureCache
from pipeline.data.datasets import ClipDataset, FeatureDataset
from pipeline.data.transforms import AUGMENTATIONS, build_transform
from pipeline.engine import checkpoint
from pipeline.engine.loop import extract_features, predict, train_one_epoch
from pipeline.engine.metrics import summarize
from pipeline.errors import UserError
from pipeline.models.classifier import Classifier, build_model
from pipeline.models.registry import get_spec
from pipeline.models.temporal import TEMPORAL_POOLINGS
from pipeline.progress import echo, warn
from pipeline.report.runs import leakage_warning
from pipeline.stages.sample import latest_sampling
from pipeline.transfer.strategies import Strategy
from pipeline.workspace import Workspace, write_text


@dataclass
class TrainConfig:
    backbone: str
    strategy: str
    weights: str | None = None  # None: the backbone's first tag (pretrained strategies) / none (scratch)
    freeze_to: str | None = None
    temporal: str = "avg"
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 8
    weight_decay: float = 1e-4
    backbone_lr_mult: float = 0.1
    label_smoothing: float = 0.0
    dropout: float = 0.0
    fraction: float = 1.0
    seed: int = 0
    input_size: int | None = None  # None: the backbone's default
    augment: str = "standard"
    sampling: str | None = None  # clip-cache key; None: the latest `vtl sample`
    workers: int = 0
    name: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        Strategy(self.strategy, self.freeze_to, self.backbone_lr_mult)  # validates the strategy
        get_spec(self.backbone)  # validates the name
        if self.temporal not in TEMPORAL_POOLINGS:
            raise UserError(f"unknown --temporal {self.temporal!r}; choose one of {', '.join(TEMPORAL_POOLINGS)}")
        if self.augment not in AUGMENTATIONS:
            raise UserError(f"unknown --augment {self.augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
        if not 0.0 < self.fraction <= 1.0:
            raise UserError(f"--fraction must be in (0, 1], got {self.fraction}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive")
        if self.lr <= 0:
            raise UserError("--lr must be positive")
        if self.strategy == "scratch" and self.weights not in (None, "none"):
            raise UserError("--strategy scratch trains from random initialisation: drop --weights")

    @property
    def run_name(self) -> str:
        return self.name or f"{self.backbone}-{self.strategy}"

    def resolved_weights(self) -> str:
        if self.strategy == "scratch":
            return "none"
        if self.weights:
            return self.weights
        spec = get_spec(self.backbone)
        if not spec.weights:
            raise UserError(f"{self.backbone} has no pretrained weights; pass --weights PATH or use scratch")
        return next(iter(spec.weights))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------- data


@dataclass
class Split:
    ids: list[str]
    labels: list[int]


def load_splits(ws: Workspace, cache: ClipCache, classes: list[str], fraction: float,
                seed: int) -> dict[str, Split]:
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, Split] = {}
    for split in ("train", "val", "test"):
        rows = [r for r in ws.manifest_rows(split) if cache.has(r["id"])]
        splits[split] = Split([r["id"] for r in rows], [index[r["label"]] for r in rows])
    if fraction < 1.0:
        splits["train"] = stratified_fraction(splits["train"], fraction, seed)
    if not splits["train"].ids:
        raise UserError(f"no training clips in {cache.root}: was `vtl sample` run on this workspace?")
    return splits


def stratified_fraction(split: Split, fraction: float, seed: int) -> Split:
    """A seeded subset with ``ceil(n × fraction)`` (at least 1) samples of every class."""
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    labels = np.asarray(split.labels)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = max(1, math.ceil(len(members) * fraction))
        keep.extend(rng.choice(members, size=k, replace=False).tolist())
    keep.sort()
    return Split([split.ids[i] for i in keep], [split.labels[i] for i in keep])


def feature_key(backbone: str, weights: str, temporal: str, sampling: str, size: int) -> str:
    w = weights
    if Path(weights).is_file():  # a user's checkpoint: key by content, not by path
        w = "file-" + hashlib.blake2b(Path(weights).read_bytes(), digest_size=6).hexdigest()
    return f"{backbone}@{w}@{temporal}@{sampling}@{size}"


def cached_features(ws: Workspace, model: Classifier, cache: ClipCache, splits: dict[str, Split],
                    key: str, size: int, mean, std, batch_size: int, workers: int) -> FeatureCache:
    """Backbone features of every view of every video, extracted once per key."""
    fc = FeatureCache(ws.features_dir(key))
    transform = build_transform(size, mean, std, train=False)
    dev = device()
    model.backbone.to(dev)
    for name, split in splits.items():
        if fc.has(name) or not split.ids:
            continue
        ds = ClipDataset(cache, split.ids, split.labels, transform, train=False)
        loader = DataLoader(ds, batch_size=batch_size, num_workers=workers)
        feats = extract_features(model.backbone, loader, dev, desc=f"features {name}")
        views = [len(cache.read(i)) for i in split.ids]
        fc.write(name, split.ids, feats, np.concatenate([[0], np.cumsum(views)]))
    return fc


# ----------------------------------------------------------------------------- the stage


def run_train(ws: Workspace, cfg: TrainConfig, *, restart: bool = False) -> dict[str, Any]:
    ws.require_prepared()
    classes = ws.classes()
    sampling = cfg.sampling or latest_sampling(ws)
    cache = ClipCache(ws.clips_dir(sampling))
    if not cache.params():
        raise UserError(f"no clip cache {sampling!r} in {ws.root}; run `vtl sample` first")
    spec = get_spec(cfg.backbone)
    if ws.media == "image" and spec.kind == "video":
        raise UserError(f"{cfg.backbone} is a video backbone; an image workspace needs a frame/image backbone")
    weights = cfg.resolved_weights()
    caveat = leakage_warning(ws, cfg.backbone, weights)
    if caveat:
        warn(caveat)
    size = cfg.input_size or spec.input_size
    out = ws.train_dir(cfg.run_name)
    with ws.lock("train"):
        seed_everything(cfg.seed)
        splits = load_splits(ws, cache, classes, cfg.fraction, cfg.seed)
        model, _ = build_model(cfg.backbone, len(classes), weights=weights, temporal=cfg.temporal,
                               dropout=cfg.dropout)
        strategy = Strategy(cfg.strategy, cfg.freeze_to, cfg.backbone_lr_mult)
        run_config = {**asdict(cfg), "weights": weights, "sampling": sampling,
                      "sampling_params": cache.params()["sampling"], "input_size": size,
                      "classes": classes, "media": ws.media}
        fkey = None
        if strategy.frozen_backbone:
            if cfg.temporal in ("conv", "attention"):
                raise UserError("--strategy linear trains only the head on cached features; a learnable "
                                "--temporal head needs --strategy partial --freeze-to stage4 (or finetune)")
            fkey = feature_key(cfg.backbone, weights, cfg.temporal, sampling, size)
            fc = cached_features(ws, model, cache, splits, fkey, size, spec.mean, spec.std, cfg.batch_size,
                                 cfg.workers)
            loaders = _feature_loaders(fc, splits, cfg)
            trained: nn.Module = model.head
        else:
            loaders = _clip_loaders(cache, splits, cfg, size, spec.mean, spec.std)
            trained = model
        result = _fit(out, model, trained, strategy, loaders, cfg, run_config, fkey, restart=restart)
    return result


def _feature_loaders(fc: FeatureCache, splits: dict[str, Split], cfg: TrainConfig) -> dict[str, DataLoader]:
    loaders = {}
    for name, split in splits.items():
        if not split.ids:
            continue
        ids, feats, offsets = fc.read(name)
        index = {v: i for i, v in enumerate(ids)}
        rows = [index[i] for i in split.ids]  # a --fraction subset of train selects its rows
        sel_offsets = np.concatenate([[0], np.cumsum([offsets[r + 1] - offsets[r] for r in rows])])
        sel = np.concatenate([feats[offsets[r]:offsets[r + 1]] for r in rows])
        ds = FeatureDataset(sel, sel_offsets, split.labels, train=name == "train")
        loaders[name] = DataLoader(ds, batch_size=max(cfg.batch_size, 32), shuffle=name == "train",
                                   generator=torch.Generator().manual_seed(cfg.seed))
    return loaders


def _clip_loaders(cache: ClipCache, splits: dict[str, Split], cfg: TrainConfig, size: int, mean,
                  std) -> dict[str, DataLoader]:
    loaders = {}
    for name, split in splits.items():
        if not split.ids:
            continue
        train = name == "train"
        transform = build_transform(size, mean, std, train=train, augment=cfg.augment)
        ds = ClipDataset(cache, split.ids, split.labels, transform, train=train)
        loaders[name] = DataLoader(ds, batch_size=cfg.batch_size, shuffle=train, num_workers=cfg.workers,
                                   generator=torch.Generator().manual_seed(cfg.seed),
                                   drop_last=train and len(ds) > cfg.batch_size,
                                   persistent_workers=cfg.workers > 0)
    return loaders


def _fit(out: Path, model: Classifier, trained: nn.Module, strategy: Strategy, loaders: dict[str, DataLoader],
         cfg: TrainConfig, run_config: dict, fkey: str | None, *, restart: bool) -> dict[str, Any]:
    dev = device()
    model.to(dev)
    groups = strategy.param_groups(model, cfg.lr)
    if strategy.frozen_backbone:
        groups = [g for g in groups if g["name"] == "head"]
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * len(loaders["train"])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in groups], total_steps=max(steps, 1), pct_start=0.1,
        anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    history: list[dict] = []
    start_epoch, best = 0, -1.0
    last_path, best_path = out / "last.pt", out / "best.pt"
    if last_path.is_file() and not restart:
        state = checkpoint.load(last_path)
        if state["config"] != run_config:
            raise UserError(f"{out} holds a run with other settings; use --restart or another --name")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        checkpoint.set_rng_state(state["rng"])
        start_epoch, best, history = state["epoch"], state["best_val_top1"], list(state["history"])
        if start_epoch >= cfg.epochs:
            echo(f"train: {out} already finished ({cfg.epochs} epochs); --restart to train again")
            return _result(out, history, best)
        echo(f"train: resuming {out} at epoch {start_epoch + 1}/{cfg.epochs}")
    write_text(out / "config.yaml", _yaml(run_config))
    seconds = history[-1]["train_seconds"] if history else 0.0
    for epoch in range(start_epoch, cfg.epochs):
        # Reseed at every epoch: a run resumed from last.pt replays exactly the epochs an
        # uninterrupted run would have (shuffling, view draws, augmentation).
        torch.manual_seed(cfg.seed * 100003 + epoch)
        loaders["train"].generator.manual_seed(cfg.seed * 100003 + epoch)
        t0 = time.perf_counter()
        strategy.set_train_mode(model)
        stats = train_one_epoch(trained, loaders["train"], optimizer, scheduler, criterion, dev,
                                desc=f"epoch {epoch + 1}/{cfg.epochs}")
        seconds += time.perf_counter() - t0
        val = _validate(trained, loaders.get("val") or loaders["train"], dev, len(run_config["classes"]))
        record = {"epoch": epoch + 1, **stats, "val_top1": val["video_top1"],
                  "val_mean_class_accuracy": val["video_mean_class_accuracy"], "lr": scheduler.get_last_lr()[0],
                  "train_seconds": round(seconds, 3)}
        history.append(record)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "rng": checkpoint.rng_state(),
                 "config": run_config, "classes": run_config["classes"], "backbone": cfg.backbone,
                 "weights": run_config["weights"], "temporal": cfg.temporal, "feature_key": fkey,
                 "history": history}
        if record["val_top1"] > best:
            best = record["val_top1"]
            state["best_val_top1"] = best
            checkpoint.save(best_path, {**state, "optimizer": {}, "scheduler": {}})
        state["best_val_top1"] = best
        checkpoint.save(last_path, state)
        write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        echo(f"epoch {epoch + 1}/{cfg.epochs}: loss {stats['train_loss']:.3f} train {stats['train_top1']:.3f} "
             f"val {record['val_top1']:.3f} ({stats['clips_per_s']:.1f} clips/s)")
    return _result(out, history, best)


def _validate(model: nn.Module, loader: DataLoader, dev: torch.device, num_classes: int) -> dict:
    probs, labels, videos = predict(model, loader, dev, desc="validate")
    return summarize(probs, labels, videos, num_classes)


def _result(out: Path, history: list[dict], best: float) -> dict[str, Any]:
    return {"run_dir": str(out), "best_val_top1": best, "epochs": len(history),
            "train_seconds": history[-1]["train_seconds"] if history else 0.0}


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)
