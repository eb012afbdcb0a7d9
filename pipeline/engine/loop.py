"""One training epoch and one inference pass: the readable core of ``train`` and ``evaluate``.

``amp`` is an autocast dtype (``torch.bfloat16`` or ``torch.float16``) or None;
``memory_format`` (e.g. ``torch.channels_last_3d``) is applied to each input batch;
``normalize`` (e.g. :class:`pipeline.data.transforms.DeviceNormalize`) finishes each batch on the
device, for loaders that send uint8 clips (a quarter of the bytes of float32).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipeline.errors import UserError
from pipeline.progress import bar

Normalize = Callable[[torch.Tensor], torch.Tensor]
Mix = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # (inputs, targets)


def _autocast(device: torch.device, amp: torch.dtype | None):
    return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()


def _to(inputs: torch.Tensor, device: torch.device, memory_format: torch.memory_format | None,
        normalize: Normalize | None = None) -> torch.Tensor:
    inputs = inputs.to(device, non_blocking=True)
    if normalize is not None:  # after the copy: uint8 crosses the bus, float32 is made on the device
        inputs = normalize(inputs)
    return inputs.contiguous(memory_format=memory_format) if memory_format is not None else inputs


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None, criterion: nn.Module,
                    device: torch.device, *, desc: str, clip_grad: float | None = None,
                    amp: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None,
                    memory_format: torch.memory_format | None = None,
                    normalize: Normalize | None = None, mix: Mix | None = None, accumulate: int = 1,
                    on_step: Callable[[], None] | None = None) -> dict[str, float]:
    """Train for one pass over ``loader``; the caller has set train/eval modes.

    ``mix`` (e.g. :class:`pipeline.data.mixing.MixCut`) turns a batch and its labels into mixed
    inputs and soft targets; ``accumulate`` batches make one optimizer step (the loss of each is
    divided by the batches in its group, so the gradient is that of their union); ``on_step`` runs
    after every optimizer step (e.g. an EMA update).

    Returns this process's sums (``seen``, ``loss_sum``, ``correct``) so DDP ranks can be combined.
    """
    seen, correct, loss_sum = 0, 0, 0.0
    start = time.perf_counter()
    total = len(loader)
    progress = bar(loader, desc=desc, unit="batch")
    optimizer.zero_grad(set_to_none=True)
    for step, (inputs, labels, _) in enumerate(progress, start=1):
        inputs, labels = _to(inputs, device, memory_format, normalize), labels.to(device, non_blocking=True)
        inputs, targets = mix(inputs, labels) if mix is not None else (inputs, labels)
        with _autocast(device, amp):
            logits = model(inputs)
            loss = criterion(logits.float(), targets)
        if scaler is None and not torch.isfinite(loss):
            # Without fp16 loss scaling (which skips such steps itself) this step would turn every
            # weight into NaN: stop the run here; last.pt still holds the previous epoch.
            raise UserError(f"training diverged: the loss is {loss.item()} in {desc} (batch {step}); lower --lr or "
                            "set --clip-grad")
        group = min(accumulate, total - (step - 1) // accumulate * accumulate)  # batches in this step's group
        (scaler.scale(loss / group) if scaler is not None else loss / group).backward()
        if step % accumulate == 0 or step == total:
            _optimizer_step(model, optimizer, scaler, clip_grad)
            if on_step is not None:
                on_step()
            if scheduler is not None:
                scheduler.step()
        n = labels.numel()
        seen += n
        loss_sum += loss.item() * n
        correct += (logits.argmax(1) == labels).sum().item()
        progress.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False,
                             clips_s=f"{seen / (time.perf_counter() - start):.1f}")
    progress.close()
    return {"seen": seen, "loss_sum": loss_sum, "correct": correct, "seconds": time.perf_counter() - start}


def _optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                    clip_grad: float | None) -> None:
    """One update from the accumulated gradients (unscaled and clipped first), then clear them."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip_grad:
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, device: torch.device, *, desc: str,
            amp: torch.dtype | None = None,
            memory_format: torch.memory_format | None = None,
            normalize: Normalize | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Softmax probabilities, labels and video indices of every item of ``loader``."""
    model.eval()
    probs, labels, videos = [], [], []
    for inputs, y, v in bar(loader, desc=desc, unit="batch"):
        with _autocast(device, amp):
            logits = model(_to(inputs, device, memory_format, normalize))
        probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        labels.append(y.numpy())
        videos.append(v.numpy())
    if not probs:
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(videos)


@torch.inference_mode()
def extract_features(backbone: nn.Module, loader: DataLoader, device: torch.device, *, desc: str,
                     amp: torch.dtype | None = None,
                     memory_format: torch.memory_format | None = None,
                     normalize: Normalize | None = None) -> np.ndarray:
    backbone.eval()
    out = []
    for x, _, _ in bar(loader, desc=desc, unit="batch"):
        with _autocast(device, amp):
            out.append(backbone(_to(x, device, memory_format, normalize)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
