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

AUGMENTATIONS = ("standard", "crop", "none")


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
