"""``vtl train``: adapt a backbone to the workspace's classes with one strategy.

Frozen strategies (``linear``) first extract the backbone's features once into the workspace's
feature cache and train the head on them; the others train on the cached clips. Strategies that
train a pretrained backbone start, by default, from a head already fitted on those cached features
(LP-FT, Kumar et al. ICLR 2022: a random head's large early gradients distort the pretrained
features; a fitted head does not), written as the run's head phase. Every epoch writes ``last.pt``
(full state, so a re-run resumes where it stopped) and the history; the best epoch on the
validation split is ``best.pt`` (see :class:`pipeline.engine.run_folder.RunFolder`).
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.choices import LEARNABLE_POOLINGS
from pipeline.data.balance import BalancedSampler
from pipeline.data.cache import ClipCache, FeatureCache, feature_key
from pipeline.data.datasets import ClipDataset, FeatureDataset
from pipeline.data.splits import Split, load_splits
from pipeline.data.transforms import build_transform
from pipeline.engine import distributed
from pipeline.engine.config import SPEED_OPTIONS, TrainConfig
from pipeline.engine.determinism import deterministic_mode, seed_worker
from pipeline.engine.distributed import DistInfo
from pipeline.engine.features import FeatureExtractor
from pipeline.engine.run_folder import RunFolder
from pipeline.engine.speed import Speed
from pipeline.engine.tracking import track_run, tracking_uri
from pipeline.engine.trainer import Fit, fit
from pipeline.errors import UserError
from pipeline.models.checkpoint import Checkpoint
from pipeline.models.classifier import Classifier, build_model
from pipeline.models.registry import BackboneSpec, get_spec
from pipeline.progress import echo, log_to, warn
from pipeline.report.runs import leakage_warning
from pipeline.workspace import Workspace

__all__ = ["TrainConfig", "run_train", "loader_workers", "seed_everything"]


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


def run_train(ws: Workspace, cfg: TrainConfig, *, restart: bool = False) -> dict[str, Any]:
    ws.require_prepared()
    info = distributed.setup(cfg.device)
    sampling = cfg.sampling or ws.latest_sampling()
    cache = ws.clip_cache(sampling)
    spec = get_spec(cfg.backbone)
    if ws.media == "image" and spec.kind == "video":
        raise UserError(f"{cfg.backbone} is a video backbone; an image workspace needs a frame/image backbone")
    cfg.check_clip_length(int(cache.params()["sampling"]["frames"]))
    weights = cfg.resolved_weights()
    if caveat := leakage_warning(ws, cfg.backbone, weights):
        warn(caveat)
    job = _Job(ws, cfg, spec, cache, sampling, weights, info, ws.classes())
    # Only rank 0 writes, so only rank 0 holds the workspace lock (and writes the log).
    with (ws.lock("train") if info.is_main else contextlib.nullcontext(), log_to(job.folder.train_log),
          deterministic_mode(cfg.deterministic)):
        seed_everything(cfg.seed)
        result = job.run(restart)
        if cfg.tracker == "mlflow" and info.is_main:
            track_run(job.folder, uri=tracking_uri(ws.mlruns_dir), experiment=ws.root.name)
        return result


@dataclass
class _Job:
    """One ``vtl train`` run: its settings resolved against the workspace."""

    ws: Workspace
    cfg: TrainConfig
    spec: BackboneSpec
    cache: ClipCache
    sampling: str  # the clip cache's key
    weights: str  # resolved: a tag, a file or none
    info: DistInfo
    classes: list[str]

    @property
    def folder(self) -> RunFolder:
        return self.ws.run(self.cfg.run_name)

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) the clips are normalised with: what the starting weights expect."""
        return self.spec.normalization(self.weights)

    def run(self, restart: bool) -> dict[str, Any]:
        cfg = self.cfg
        splits = load_splits(self.ws.iter_manifest(), self.cache, self.classes, cfg.fraction, cfg.seed)
        model, _ = build_model(cfg.backbone, len(self.classes), weights=self.weights, temporal=cfg.temporal,
                               dropout=cfg.dropout, drop_path=cfg.drop_path)
        speed = Speed.choose(distributed.device(self.info), amp=cfg.amp, channels_last=cfg.channels_last,
                             video=self.spec.kind == "video")
        speed.prepare(model)
        if cfg.make_strategy().frozen_backbone:
            if cfg.temporal in LEARNABLE_POOLINGS:
                raise UserError("--strategy linear trains only the head on cached features; a learnable "
                                "--temporal head needs --strategy partial --freeze-to stage4 (or finetune)")
            fkey, loaders = self.feature_loaders(model, splits, cfg, speed)
            return fit(Fit(self.folder, model, model.head, loaders, cfg, self.run_config(cfg), self.info, speed, fkey,
                           train_split=splits["train"]), restart=restart)
        if cfg.fits_head_first and (restart or not self.folder.last.is_file()):
            self.fit_head_first(model, splits, speed, restart)
        return fit(Fit(self.folder, model, model, self.clip_loaders(splits), cfg, self.run_config(cfg), self.info,
                       speed, train_split=splits["train"]), restart=restart)

    def run_config(self, cfg: TrainConfig) -> dict[str, Any]:
        """What a run's results depend on: a resumed run must have the same."""
        run_config = {**asdict(cfg), "weights": self.weights, "sampling": self.sampling,
                      "sampling_params": self.cache.params()["sampling"], "input_size": cfg.size,
                      "classes": self.classes, "media": self.ws.media}
        for volatile in SPEED_OPTIONS:  # speed, not results: may change on resume
            run_config.pop(volatile)
        return run_config

    def feature_loaders(self, model: Classifier, splits: dict[str, Split], cfg: TrainConfig,
                        speed: Speed) -> tuple[str, dict[str, DataLoader]]:
        """Loaders of the frozen backbone's cached features, for a head trained on them."""
        fkey = feature_key(cfg.backbone, self.weights, cfg.temporal, self.sampling, cfg.size)
        # Features of the whole splits: a --fraction subset only selects rows of them, so
        # every fraction and seed of a benchmark shares one cache.
        everything = splits if cfg.fraction == 1.0 else load_splits(self.ws.iter_manifest(), self.cache,
                                                                     self.classes, 1.0, cfg.seed)
        extractor = FeatureExtractor(model.backbone, build_transform(cfg.size, *self.normalization, train=False),
                                     cfg.batch_size, self.info, speed)
        features = extractor.fill(self.ws.features(fkey), self.cache, everything)
        return fkey, _feature_loaders(features, splits, cfg)

    def fit_head_first(self, model: Classifier, splits: dict[str, Split], speed: Speed, restart: bool) -> None:
        """LP-FT's first phase: fit the head on cached frozen features (the run's head phase), then
        start the fine-tuning from its best epoch."""
        cfg = self.cfg
        if cfg.temporal in LEARNABLE_POOLINGS:
            # A learnable temporal head sits inside the backbone: its random init would be frozen
            # into the features. Fine-tune from a random head instead.
            warn(f"--temporal {cfg.temporal}: no linear-probe head initialisation (LP-FT); the head starts random")
            return
        head_cfg = cfg.head_phase()
        fkey, loaders = self.feature_loaders(model, splits, head_cfg, speed)
        echo(f"train: fitting the head on frozen features first ({head_cfg.epochs} epochs, LP-FT)")
        phase = self.folder.head_phase
        fit(Fit(phase, model, model.head, loaders, head_cfg, self.run_config(head_cfg), self.info, speed, fkey),
            restart=restart)
        model.head.load_state_dict(model.head_state(Checkpoint.load(phase.best).model))

    def clip_loaders(self, splits: dict[str, Split]) -> dict[str, DataLoader]:
        cfg, workers = self.cfg, loader_workers(self.cfg.workers, self.info)
        loaders = {}
        for name, split in splits.items():
            if not split.ids:
                continue
            train = name == "train"
            transform = build_transform(cfg.size, *self.normalization, train=train, augment=cfg.augment,
                                        randaugment=cfg.randaugment_ops, random_erasing=cfg.random_erasing)
            ds = ClipDataset(self.cache, split.ids, split.labels, transform, train=train)
            # Training workers start afresh each epoch, after the trainer has reseeded the loader and set
            # the dataset's epoch: persistent ones would keep the first epoch's seeds (no exact resume).
            loaders[name] = DataLoader(ds, batch_size=cfg.batch_size, num_workers=workers,
                                       **_order(cfg, split.labels, train), drop_last=train and len(ds) > cfg.batch_size,
                                       pin_memory=torch.cuda.is_available(),
                                       persistent_workers=workers > 0 and not train, worker_init_fn=seed_worker)
        return loaders


def _order(cfg: TrainConfig, labels: list[int], train: bool) -> dict[str, Any]:
    """How a loader orders its items: shuffled or class-balanced in training (reseeded every epoch by
    the trainer), in order otherwise."""
    if train and cfg.sampler == "balanced":
        return {"sampler": BalancedSampler(labels, seed=cfg.seed)}
    return {"shuffle": train, "generator": torch.Generator().manual_seed(cfg.seed)}


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
        loaders[name] = DataLoader(ds, batch_size=max(cfg.batch_size, 32), **_order(cfg, split.labels, name == "train"))
    return loaders
