"""The training loop around :func:`pipeline.engine.loop.train_one_epoch`.

Modelled on torchvision's ``references/video_classification``: full-state
checkpoints every epoch (model, optimizer, scheduler, grad scaler, epoch, RNG,
config, classes, backbone and weights) so a re-run resumes exactly; a linear
warm-up then cosine schedule; early stopping on validation; DDP under
torchrun (only rank 0 writes); AMP, channels-last and torch.compile switches.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

from pipeline.engine import checkpoint, distributed
from pipeline.engine.distributed import DistInfo
from pipeline.engine.loop import predict, train_one_epoch
from pipeline.engine.metrics import summarize
from pipeline.errors import UserError
from pipeline.files import write_text
from pipeline.models.classifier import Classifier
from pipeline.progress import echo, warn
from pipeline.transfer.strategies import Strategy


@dataclass(frozen=True)
class Speed:
    """How batches run: autocast dtype, gradient scaler need, memory format."""

    amp: torch.dtype | None = None
    fp16_scaler: bool = False
    channels_last: bool = False
    video: bool = True

    @property
    def memory_format(self) -> torch.memory_format | None:
        # Frame networks fold time into the batch and convert each frame batch themselves.
        return torch.channels_last_3d if self.channels_last and self.video else None

    @classmethod
    def choose(cls, device: torch.device, *, amp: bool, channels_last: bool, video: bool) -> Speed:
        dtype, scaler = None, False
        if amp and device.type == "cuda":
            if torch.cuda.is_bf16_supported():
                dtype = torch.bfloat16
            else:
                dtype, scaler = torch.float16, True  # fp16 needs loss scaling; bf16 does not
        elif amp and cpu_has_fast_bf16():
            dtype = torch.bfloat16
        elif amp:
            # Measured on an AVX2 CPU: bf16 autocast makes r3d_18 ~70x slower (no native bf16
            # kernels, oneDNN emulates them). Mixed precision only pays with AVX512-BF16/AMX.
            warn("--amp ignored: this CPU has no native bf16 instructions (avx512_bf16/amx), training in fp32")
        return cls(dtype, scaler, channels_last, video)

    def prepare(self, model: nn.Module) -> None:
        if self.channels_last:
            model.to(memory_format=torch.channels_last_3d if self.video else torch.channels_last)
            if not self.video:
                model.backbone.channels_last = True


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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


def fit(out: Path, model: Classifier, trained: nn.Module, strategy: Strategy, loaders: dict[str, DataLoader],
        cfg: Any, run_config: dict, fkey: str | None, info: DistInfo, speed: Speed, *,
        restart: bool) -> dict[str, Any]:
    """Train ``trained`` (the whole model, or its head on cached features) for ``cfg.epochs``."""
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
    last_path, best_path = out / "last.pt", out / "best.pt"
    if last_path.is_file() and not restart:
        state = checkpoint.load(last_path)
        if state["config"] != run_config:
            raise UserError(f"{out} holds a run with other settings; use --restart or another --name")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        start_epoch, best, history = state["epoch"], state["best_val_top1"], list(state["history"])
        if start_epoch >= cfg.epochs or _stopped(history, cfg.patience):
            echo(f"train: {out} already finished ({len(history)} epochs); --restart to train again")
            return _result(out, history, best)
        echo(f"train: resuming {out} at epoch {start_epoch + 1}/{cfg.epochs}")
    if info.is_main:
        write_text(out / "config.yaml", _yaml(run_config))
    net = _wrap(trained, info, dev, cfg.compile)
    train_loader = _distributed(loaders["train"], info, shuffle=True, seed=cfg.seed)
    val_loader = _distributed(loaders.get("val") or loaders["train"], info, shuffle=False, seed=cfg.seed)
    board = _tensorboard(out) if info.is_main else None
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
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else {},
                     "epoch": epoch + 1, "rng": checkpoint.rng_state(), "config": run_config,
                     "classes": run_config["classes"], "backbone": cfg.backbone, "weights": run_config["weights"],
                     "temporal": cfg.temporal, "feature_key": fkey, "history": history, "best_val_top1": best}
            if improved:
                checkpoint.save(best_path, {**state, "optimizer": {}, "scheduler": {}, "scaler": {}})
            checkpoint.save(last_path, state)
            write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
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
    return _result(out, history, best)


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


def _tensorboard(out: Path):
    """TensorBoard event files under ``out/tensorboard`` when tensorboard is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _result(out: Path, history: list[dict], best: float) -> dict[str, Any]:
    return {"run_dir": str(out), "best_val_top1": best, "epochs": len(history),
            "train_seconds": history[-1]["train_seconds"] if history else 0.0}


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


__all__ = ["fit", "Speed", "epoch_seed"]
