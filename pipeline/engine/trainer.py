"""The training loop around :func:`pipeline.engine.loop.train_one_epoch`.

Modelled on torchvision's ``references/video_classification``: full-state
checkpoints every epoch (model, optimizer, scheduler, grad scaler, epoch, RNG,
config, classes, backbone and weights) so a re-run resumes exactly; a linear
warm-up then cosine schedule; early stopping on validation; DDP under
torchrun (only rank 0 writes); AMP, channels-last and torch.compile switches.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

from pipeline.engine import distributed
from pipeline.engine.config import TrainConfig
from pipeline.engine.distributed import DistInfo
from pipeline.engine.loop import predict, train_one_epoch
from pipeline.engine.metrics import summarize
from pipeline.engine.rng import rng_state, set_rng_state
from pipeline.engine.run_folder import RunFolder
from pipeline.engine.speed import Speed
from pipeline.errors import UserError
from pipeline.models.checkpoint import Checkpoint
from pipeline.models.classifier import Classifier
from pipeline.progress import echo


class WarmupCosine:
    """LR factor per step: linear warm-up over ``warmup`` of the steps, then cosine decay to 1%."""

    def __init__(self, total_steps: int, warmup: float):
        self.total = max(1, total_steps)
        self.warm = int(round(warmup * self.total))

    def __call__(self, step: int) -> float:
        if step < self.warm:
            return (step + 1) / (self.warm + 1)
        progress = min(1.0, (step - self.warm) / max(1, self.total - self.warm))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100003 + epoch


def fit(run: RunFolder, model: Classifier, trained: nn.Module, loaders: dict[str, DataLoader], cfg: TrainConfig,
        run_config: dict, fkey: str | None, info: DistInfo, speed: Speed, *, restart: bool) -> dict[str, Any]:
    """Train ``trained`` (the whole model, or its head on cached features) for ``cfg.epochs`` into ``run``.

    ``run_config`` is what the results depend on (recorded in ``config.yaml`` and every checkpoint;
    a resumed run must match it); ``fkey`` the feature cache a head-only run trains on."""
    strategy = cfg.make_strategy()
    dev = distributed.device(info)
    model.to(dev)
    groups = strategy.param_groups(model, cfg.lr)
    if strategy.frozen_backbone:
        groups = [g for g in groups if g["name"] == "head"]
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * len(loaders["train"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(steps, cfg.warmup))
    scaler = torch.amp.GradScaler(dev.type) if speed.fp16_scaler else None
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    history: list[dict] = []
    start_epoch, best = 0, -1.0
    if run.last.is_file() and not restart:
        state = Checkpoint.load(run.last)
        if state.config != run_config:
            raise UserError(f"{run.train_dir} holds a run with other settings; use --restart or another --name")
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        if scaler is not None and state.scaler:
            scaler.load_state_dict(state.scaler)
        set_rng_state(state.rng)
        start_epoch, best, history = state.epoch, state.best_val_top1, list(state.history)
        if start_epoch >= cfg.epochs or _stopped(history, cfg.patience):
            echo(f"train: {run.train_dir} already finished ({len(history)} epochs); --restart to train again")
            return _result(run, history, best)
        echo(f"train: resuming {run.train_dir} at epoch {start_epoch + 1}/{cfg.epochs}")
    if info.is_main:
        run.write_config(run_config)
    net = _wrap(trained, info, dev, cfg.compile)
    train_loader = _distributed(loaders["train"], info, shuffle=True, seed=cfg.seed)
    val_loader = _distributed(loaders.get("val") or loaders["train"], info, shuffle=False, seed=cfg.seed)
    board = _tensorboard(run.tensorboard_dir) if info.is_main else None
    seconds = history[-1]["train_seconds"] if history else 0.0
    for epoch in range(start_epoch, cfg.epochs):
        # Reseed at every epoch: a run resumed from last.pt replays exactly the epochs an
        # uninterrupted run would have (shuffling, view draws, augmentation, dropout).
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        else:
            train_loader.generator.manual_seed(epoch_seed(cfg.seed, epoch))
        strategy.on_epoch_start(model, optimizer, epoch)  # gradual: unfreeze the next stage
        strategy.set_train_mode(model)
        sums = train_one_epoch(net, train_loader, optimizer, scheduler, criterion, dev,
                               desc=f"epoch {epoch + 1}/{cfg.epochs}", clip_grad=cfg.clip_grad, amp=speed.amp,
                               scaler=scaler, memory_format=speed.memory_format)
        seconds += sums["seconds"]
        stats = _reduce(info, sums, dev)
        val = _validate(net, val_loader, dev, len(run_config["classes"]), info, speed)
        record = {"epoch": epoch + 1, **stats, "val_top1": val["video_top1"],
                  "val_mean_class_accuracy": val["video_mean_class_accuracy"],
                  "lr": scheduler.get_last_lr()[0], "train_seconds": round(seconds, 3)}
        history.append(record)
        improved = record["val_top1"] > best
        best = max(best, record["val_top1"])
        if info.is_main:
            state = Checkpoint(backbone=cfg.backbone, classes=run_config["classes"], model=model.state_dict(),
                               weights=run_config["weights"], temporal=cfg.temporal, config=run_config,
                               feature_key=fkey, history=history, best_val_top1=best, epoch=epoch + 1,
                               optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                               scaler=scaler.state_dict() if scaler else {}, rng=rng_state())
            if improved:
                state.without_training_state().save(run.best)
            state.save(run.last)
            run.write_history(history)
            if board is not None:
                for key in ("train_loss", "train_top1", "val_top1", "lr", "clips_per_s"):
                    board.add_scalar(key, record[key], epoch + 1)
        distributed.barrier(info)
        echo(f"epoch {epoch + 1}/{cfg.epochs}: loss {stats['train_loss']:.3f} train {stats['train_top1']:.3f} "
             f"val {record['val_top1']:.3f} ({stats['clips_per_s']:.1f} clips/s)")
        if _stopped(history, cfg.patience):
            echo(f"train: no validation gain in {cfg.patience} epochs: stopping early")
            break
    if board is not None:
        board.close()
    return _result(run, history, best)


def _stopped(history: list[dict], patience: int | None) -> bool:
    """Early stopping: the best validation epoch is ``patience`` or more epochs old."""
    if not patience or not history:
        return False
    scores = [h["val_top1"] for h in history]
    return len(scores) - 1 - scores.index(max(scores)) >= patience


def _wrap(module: nn.Module, info: DistInfo, dev: torch.device, compile_: bool) -> nn.Module:
    if info.enabled and any(p.requires_grad for p in module.parameters()):
        # DDP only synchronises parameters that require grad when it is built: register them
        # all, so stages that `gradual` unfreezes later are averaged across ranks too; frozen
        # ones simply get no gradient (find_unused_parameters).
        flags = [p.requires_grad for p in module.parameters()]
        for p in module.parameters():
            p.requires_grad_(True)
        module = nn.parallel.DistributedDataParallel(
            module, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True)
        for p, flag in zip(module.module.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    return torch.compile(module) if compile_ else module


def _distributed(loader: DataLoader, info: DistInfo, *, shuffle: bool, seed: int) -> DataLoader:
    """The same loader, each rank seeing its share of the dataset."""
    if not info.enabled:
        return loader
    if shuffle:
        sampler = DistributedSampler(loader.dataset, info.world_size, info.rank, shuffle=True, seed=seed,
                                     drop_last=loader.drop_last)
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                          num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                          drop_last=loader.drop_last)
    shard = Subset(loader.dataset, range(info.rank, len(loader.dataset), info.world_size))
    return DataLoader(shard, batch_size=loader.batch_size, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory)


def _reduce(info: DistInfo, sums: dict[str, float], dev: torch.device) -> dict[str, float]:
    seen = sums["seen"]
    if info.enabled:
        # On the training device: nccl reduces CUDA tensors only (a CPU tensor raises there).
        t = torch.tensor([sums["seen"], sums["loss_sum"], sums["correct"]], dtype=torch.float64, device=dev)
        torch.distributed.all_reduce(t)
        seen, loss_sum, correct = (float(x) for x in t.tolist())
    else:
        loss_sum, correct = sums["loss_sum"], sums["correct"]
    return {"train_loss": loss_sum / max(seen, 1), "train_top1": correct / max(seen, 1),
            "clips_per_s": seen / max(sums["seconds"], 1e-9)}


def _validate(model: nn.Module, loader: DataLoader, dev: torch.device, num_classes: int, info: DistInfo,
              speed: Speed) -> dict:
    probs, labels, videos = predict(model, loader, dev, desc="validate", amp=speed.amp,
                                    memory_format=speed.memory_format)
    probs, labels, videos = distributed.gather_arrays(info, probs, labels, videos)
    return summarize(probs, labels, videos, num_classes)


def _tensorboard(folder: Path):
    """TensorBoard event files in ``folder`` when tensorboard is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


def _result(run: RunFolder, history: list[dict], best: float) -> dict[str, Any]:
    return {"run_dir": str(run.train_dir), "best_val_top1": best, "epochs": len(history),
            "train_seconds": history[-1]["train_seconds"] if history else 0.0}


__all__ = ["fit", "epoch_seed"]
