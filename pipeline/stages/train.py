"""``vtl train``: adapt a backbone to the workspace's classes with one strategy.

Frozen strategies (``linear``) first extract the backbone's features once into
``features/<backbone>@<weights>@<sampling>/`` and train the head on them; the
others train on the cached clips. Strategies that train a pretrained backbone
start, by default, from a head already fitted on those cached features (LP-FT,
Kumar et al. ICLR 2022: a random head's large early gradients distort the
pretrained features; a probed head does not), written under ``RUN/probe/``.
Every epoch writes ``last.pt`` (full state, so a re-run resumes where it
stopped) and ``metrics.jsonl``; the best epoch on the validation split is
``best.pt``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from pipeline.data.cache import ClipCache, FeatureCache
from pipeline.data.datasets import ClipDataset, FeatureDataset
from pipeline.data.splits import Split, load_splits
from pipeline.data.transforms import AUGMENTATIONS, build_transform
from pipeline.engine import checkpoint, distributed
from pipeline.engine.distributed import DistInfo
from pipeline.engine.loop import extract_features
from pipeline.engine.trainer import Speed, fit
from pipeline.errors import UserError
from pipeline.models.classifier import Classifier, build_model
from pipeline.models.registry import get_spec
from pipeline.models.temporal import LEARNABLE_POOLINGS, TEMPORAL_POOLINGS
from pipeline.progress import echo, warn
from pipeline.report.runs import leakage_warning
from pipeline.stages.sample import latest_sampling
from pipeline.transfer.strategies import Strategy
from pipeline.workspace import Workspace


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
    layer_decay: float | None = None  # finetune/partial/gradual: stage k of K trains at lr × D^(K-k)
    unfreeze_every: int = 1  # gradual: epochs between unfreezing one more stage
    label_smoothing: float = 0.0
    dropout: float = 0.0
    fraction: float = 1.0
    seed: int = 0
    input_size: int | None = None  # None: the backbone's default
    augment: str = "standard"
    sampling: str | None = None  # clip-cache key; None: the latest `vtl sample`
    workers: int | None = None  # DataLoader processes; None: chosen for the machine
    name: str | None = None
    patience: int | None = None  # early stopping: epochs without a validation gain
    clip_grad: float | None = None  # max gradient norm
    warmup: float = 0.1  # share of the steps spent warming the LR up (then cosine decay)
    amp: bool = False  # autocast: bf16 on CPU/recent GPUs, fp16 + loss scaling otherwise
    channels_last: bool = False
    compile: bool = False  # torch.compile the trained module
    freeze_bn_stats: bool = False  # backbone BatchNorms keep their pretrained running statistics
    probe_epochs: int = 20  # partial/finetune/gradual from pretrained weights: LP-FT head epochs (0: random head)
    probe_lr: float = 1e-2  # LR of that head-only phase (on cached features, so cheap)

    def __post_init__(self) -> None:
        self.make_strategy()  # validates the strategy and its options
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
        if not 0.0 <= self.warmup < 1.0:
            raise UserError(f"--warmup must be in [0, 1), got {self.warmup}")
        if self.probe_epochs < 0 or self.probe_lr <= 0:
            raise UserError("--probe-epochs must be >= 0 and --probe-lr positive")
        if self.patience is not None and self.patience <= 0:
            raise UserError("--patience must be positive")
        if self.strategy == "scratch" and self.weights not in (None, "none"):
            raise UserError("--strategy scratch trains from random initialisation: drop --weights")

    def make_strategy(self) -> Strategy:
        return Strategy(self.strategy, self.freeze_to, self.backbone_lr_mult, layer_decay=self.layer_decay,
                        unfreeze_every=self.unfreeze_every, freeze_bn_stats=self.freeze_bn_stats)

    @property
    def probes_head(self) -> bool:
        """LP-FT: fit the head on frozen features before training the backbone."""
        return (self.strategy in ("partial", "finetune", "gradual") and self.probe_epochs > 0
                and self.resolved_weights() != "none")

    def probe_config(self) -> TrainConfig:
        """The head-only phase of LP-FT: a linear probe with this run's data settings."""
        return replace(self, strategy="linear", epochs=self.probe_epochs, lr=self.probe_lr, freeze_to=None,
                       layer_decay=None, patience=None, batch_size=max(self.batch_size, 32), probe_epochs=0)

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


def loader_workers(requested: int | None, info: DistInfo) -> int:
    """DataLoader processes: clips are already decoded, so on a CPU the cores are better
    spent on compute (0); on a GPU a few workers per process keep it fed."""
    if requested is not None:
        return requested
    if not torch.cuda.is_available():
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // max(1, info.world_size) - 1))


# ----------------------------------------------------------------------------- data




def feature_key(backbone: str, weights: str, temporal: str, sampling: str, size: int) -> str:
    w = weights
    if Path(weights).is_file():  # a user's checkpoint: key by content, not by path
        w = "file-" + hashlib.blake2b(Path(weights).read_bytes(), digest_size=6).hexdigest()
    return f"{backbone}@{w}@{temporal}@{sampling}@{size}"


def cached_features(ws: Workspace, model: Classifier, cache: ClipCache, splits: dict[str, Split],
                    key: str, size: int, mean, std, batch_size: int, info: DistInfo,
                    speed: Speed) -> FeatureCache:
    """Backbone features of every view of every video, extracted once per key (each DDP rank
    extracts its share; rank 0 writes the cache)."""
    fc = FeatureCache(ws.features_dir(key))
    transform = build_transform(size, mean, std, train=False)
    dev = distributed.device(info)
    model.backbone.to(dev)
    for name, split in splits.items():
        if fc.has(name) or not split.ids:
            continue
        ds = ClipDataset(cache, split.ids, split.labels, transform, train=False)
        order = list(range(info.rank, len(ds), info.world_size))
        loader = DataLoader(Subset(ds, order), batch_size=batch_size)
        feats = extract_features(model.backbone, loader, dev, desc=f"features {name}", amp=speed.amp,
                                 memory_format=speed.memory_format)
        feats, order_all = distributed.gather_arrays(info, feats, np.asarray(order, dtype=np.int64))
        feats = feats[np.argsort(order_all)]  # back to dataset order
        views = [len(cache.read(i)) for i in split.ids]
        if info.is_main:
            fc.write(name, split.ids, feats, np.concatenate([[0], np.cumsum(views)]))
        distributed.barrier(info)
    return fc


# ----------------------------------------------------------------------------- the stage


def run_train(ws: Workspace, cfg: TrainConfig, *, restart: bool = False) -> dict[str, Any]:
    ws.require_prepared()
    info = distributed.setup()
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
    speed = Speed.choose(distributed.device(info), amp=cfg.amp, channels_last=cfg.channels_last,
                         video=spec.kind == "video")
    # Only rank 0 writes, so only rank 0 holds the workspace lock.
    with ws.lock("train") if info.is_main else contextlib.nullcontext():
        seed_everything(cfg.seed)
        splits = load_splits(ws.iter_manifest(), cache, classes, cfg.fraction, cfg.seed)
        model, _ = build_model(cfg.backbone, len(classes), weights=weights, temporal=cfg.temporal,
                               dropout=cfg.dropout)
        speed.prepare(model)
        strategy = cfg.make_strategy()
        if strategy.frozen_backbone:
            if cfg.temporal in LEARNABLE_POOLINGS:
                raise UserError("--strategy linear trains only the head on cached features; a learnable "
                                "--temporal head needs --strategy partial --freeze-to stage4 (or finetune)")
            fkey, loaders = _probe_data(ws, model, cache, classes, splits, cfg, weights, sampling, size, info, speed)
            return fit(out, model, model.head, strategy, loaders, cfg, _run_config(ws, cfg, weights, sampling,
                       cache, size, classes), fkey, info, speed, restart=restart)
        if cfg.probes_head and (restart or not (out / "last.pt").is_file()):
            _probe_head(ws, model, cache, classes, splits, cfg, weights, sampling, size, info, speed, out, restart)
        loaders = _clip_loaders(cache, splits, cfg, size, spec.mean, spec.std, loader_workers(cfg.workers, info))
        return fit(out, model, model, strategy, loaders, cfg,
                   _run_config(ws, cfg, weights, sampling, cache, size, classes), None, info, speed, restart=restart)


def _run_config(ws: Workspace, cfg: TrainConfig, weights: str, sampling: str, cache: ClipCache, size: int,
                classes: list[str]) -> dict[str, Any]:
    """What a run's results depend on: a resumed run must have the same."""
    run_config = {**asdict(cfg), "weights": weights, "sampling": sampling,
                  "sampling_params": cache.params()["sampling"], "input_size": size,
                  "classes": classes, "media": ws.media}
    for volatile in ("workers", "amp", "channels_last", "compile"):  # speed, not results: may change on resume
        run_config.pop(volatile)
    return run_config


def _probe_data(ws: Workspace, model: Classifier, cache: ClipCache, classes: list[str], splits: dict[str, Split],
                cfg: TrainConfig, weights: str, sampling: str, size: int, info: DistInfo,
                speed: Speed) -> tuple[str, dict[str, DataLoader]]:
    """Feature loaders for a head trained on the frozen backbone's cached features."""
    spec = get_spec(cfg.backbone)
    fkey = feature_key(cfg.backbone, weights, cfg.temporal, sampling, size)
    # Features of the whole splits: a --fraction subset only selects rows of them, so
    # every fraction and seed of a benchmark shares one cache.
    everything = splits if cfg.fraction == 1.0 else load_splits(ws.iter_manifest(), cache, classes, 1.0, cfg.seed)
    fc = cached_features(ws, model, cache, everything, fkey, size, spec.mean, spec.std, cfg.batch_size, info, speed)
    return fkey, _feature_loaders(fc, splits, cfg)


def _probe_head(ws: Workspace, model: Classifier, cache: ClipCache, classes: list[str], splits: dict[str, Split],
                cfg: TrainConfig, weights: str, sampling: str, size: int, info: DistInfo, speed: Speed,
                out: Path, restart: bool) -> None:
    """LP-FT's first phase: fit the head on cached frozen features (``RUN/probe/``), then start
    the fine-tuning from its best epoch."""
    if cfg.temporal in LEARNABLE_POOLINGS:
        # A learnable temporal head sits inside the backbone: its random init would be frozen
        # into the probe's features. Fine-tune from a random head instead.
        warn(f"--temporal {cfg.temporal}: no linear-probe head initialisation (LP-FT); the head starts random")
        return
    probe = cfg.probe_config()
    fkey, loaders = _probe_data(ws, model, cache, classes, splits, probe, weights, sampling, size, info, speed)
    echo(f"train: fitting the head on frozen features first ({probe.epochs} epochs, LP-FT)")
    fit(out / "probe", model, model.head, probe.make_strategy(), loaders, probe,
        _run_config(ws, probe, weights, sampling, cache, size, classes), fkey, info, speed, restart=restart)
    best = checkpoint.load(out / "probe" / "best.pt")["model"]
    model.head.load_state_dict({k.removeprefix("head."): v for k, v in best.items() if k.startswith("head.")})


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
                  std, workers: int) -> dict[str, DataLoader]:
    loaders = {}
    for name, split in splits.items():
        if not split.ids:
            continue
        train = name == "train"
        transform = build_transform(size, mean, std, train=train, augment=cfg.augment)
        ds = ClipDataset(cache, split.ids, split.labels, transform, train=train)
        loaders[name] = DataLoader(ds, batch_size=cfg.batch_size, shuffle=train, num_workers=workers,
                                   generator=torch.Generator().manual_seed(cfg.seed),
                                   drop_last=train and len(ds) > cfg.batch_size,
                                   pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)
    return loaders
