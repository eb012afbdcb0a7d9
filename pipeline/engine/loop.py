"""One training epoch and one inference pass: the readable core of ``train`` and ``evaluate``."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipeline.progress import bar


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None, criterion: nn.Module,
                    device: torch.device, *, desc: str, clip_grad: float | None = None) -> dict[str, float]:
    """Train for one pass over ``loader``; the caller has set train/eval modes."""
    seen, correct, loss_sum = 0, 0, 0.0
    start = time.perf_counter()
    progress = bar(loader, desc=desc, unit="batch")
    for inputs, labels, _ in progress:
        inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        logits = model(inputs)
        loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        n = labels.numel()
        seen += n
        loss_sum += loss.item() * n
        correct += (logits.argmax(1) == labels).sum().item()
        progress.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False,
                             clips_s=f"{seen / (time.perf_counter() - start):.1f}")
    progress.close()
    elapsed = time.perf_counter() - start
    return {"train_loss": loss_sum / max(seen, 1), "train_top1": correct / max(seen, 1),
            "clips_per_s": seen / max(elapsed, 1e-9)}


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, device: torch.device, *,
            desc: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Softmax probabilities, labels and video indices of every item of ``loader``."""
    model.eval()
    probs, labels, videos = [], [], []
    for inputs, y, v in bar(loader, desc=desc, unit="batch"):
        probs.append(torch.softmax(model(inputs.to(device)).float(), dim=1).cpu().numpy())
        labels.append(y.numpy())
        videos.append(v.numpy())
    if not probs:
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(videos)


@torch.inference_mode()
def extract_features(backbone: nn.Module, loader: DataLoader, device: torch.device, *, desc: str) -> np.ndarray:
    backbone.eval()
    out = [backbone(x.to(device)).float().cpu().numpy() for x, _, _ in bar(loader, desc=desc, unit="batch")]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
