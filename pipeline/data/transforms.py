"""Named transform presets on torchvision.transforms.v2.

Clips arrive as uint8 ``(T, H, W, C)`` (the decoder convention) and leave as
float ``(C, T, H, W)`` (the model convention); this module is the one place
that converts. v2 transforms treat the leading T as a batch dimension, so one
random crop/flip is applied identically to every frame of a clip.

Presets:
    ``standard``  random resized crop + horizontal flip (appearance-defined classes)
    ``crop``      random resized crop only: use it when left/right matters
                  (Something-Something, direction-of-motion classes)
    ``none``      eval transform also in training
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torchvision.transforms import v2

from pipeline.choices import AUGMENTATIONS


def build_transform(size: int, mean: Sequence[float], std: Sequence[float], *, train: bool,
                    augment: str = "standard") -> Callable[[np.ndarray], torch.Tensor]:
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation preset {augment!r}")
    if train and augment != "none":
        ops: list = [v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True)]
        if augment == "standard":
            ops.append(v2.RandomHorizontalFlip())
    else:
        ops = [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    pipeline = v2.Compose([*ops, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])

    def apply(clip: np.ndarray) -> torch.Tensor:
        frames = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2)  # T, C, H, W
        return pipeline(frames).permute(1, 0, 2, 3).contiguous()  # C, T, H, W

    return apply


def eval_crops(size: int, mean: Sequence[float], std: Sequence[float],
               crops: int) -> list[Callable[[np.ndarray], torch.Tensor]]:
    """Test-time spatial views: ``1`` = centre crop; ``3`` = the standard three crops along
    the long side (start, centre, end) of the clip resized to ``size`` on its short side."""
    if crops == 1:
        return [build_transform(size, mean, std, train=False)]
    if crops != 3:
        raise ValueError("crops must be 1 or 3")
    tail = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])

    def crop_at(position: int) -> Callable[[np.ndarray], torch.Tensor]:
        def apply(clip: np.ndarray) -> torch.Tensor:
            frames = v2.functional.resize(torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2),
                                          size, antialias=True)
            h, w = frames.shape[-2:]
            top = [0, (h - size) // 2, h - size][position] if h > w else (h - size) // 2
            left = [0, (w - size) // 2, w - size][position] if w >= h else (w - size) // 2
            return tail(v2.functional.crop(frames, top, left, size, size)).permute(1, 0, 2, 3).contiguous()

        return apply

    return [crop_at(i) for i in range(3)]
