"""Named transform presets on torchvision.transforms.v2.

Clips arrive as uint8 ``(T, H, W, C)`` (the decoder convention) and leave as
float ``(C, T, H, W)`` (the model convention); this module is the one place
that converts. v2 transforms treat the leading T as a batch dimension, so one
random crop/flip is applied identically to every frame of a clip.

``normalize=False`` stops before the float conversion: the clip leaves as uint8
``(C, T, H, W)``, a quarter of the bytes to collate, pin and copy to the GPU, and
:class:`DeviceNormalize` finishes the batch where it lands with the same
arithmetic, so the model sees the very same tensor (tests/test_transforms.py).

Presets:
    ``standard``  random resized crop + horizontal flip (appearance-defined classes)
    ``crop``      random resized crop only: use it when left/right matters
                  (Something-Something, direction-of-motion classes)
    ``none``      eval transform also in training

Recipe options (``vtl train --randaugment N,M --random-erasing P``) add to a training preset:
RandAugment on the uint8 frames after the crop, random erasing on the finished clip. Both draw
their parameters once per call and v2 treats the leading T as a batch dimension, so every frame of
a clip gets the same ops, magnitudes and erased box (tests/test_recipe.py proves it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torchvision.transforms import v2

from pipeline.choices import AUGMENTATIONS


def build_transform(size: int, mean: Sequence[float], std: Sequence[float], *, train: bool,
                    augment: str = "standard", normalize: bool = True,
                    randaugment: tuple[int, int] | None = None,
                    random_erasing: float = 0.0) -> Callable[[np.ndarray], torch.Tensor]:
    """The clip transform; ``randaugment`` (ops per clip, magnitude 0-30) and ``random_erasing``
    (probability) apply in training only."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation preset {augment!r}")
    if random_erasing and not normalize:
        raise ValueError("random erasing fills with the mean: it needs normalize=True")
    if train and augment != "none":
        ops: list = [v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True)]
        if augment == "standard":
            ops.append(v2.RandomHorizontalFlip())
    else:
        ops = [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    if train and randaugment is not None:
        ops.append(v2.RandAugment(num_ops=randaugment[0], magnitude=randaugment[1]))
    # The geometric ops run on uint8 in both modes (the float conversion always came after them),
    # which is what lets the uint8 path be finished on the device without changing a value.
    ops += _to_float(mean, std, normalize)
    if train and random_erasing > 0:  # after normalising: the erased box is the mean (0), as in timm
        ops.append(v2.RandomErasing(p=random_erasing, value=0))
    pipeline = v2.Compose(ops)

    def apply(clip: np.ndarray) -> torch.Tensor:
        frames = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2)  # T, C, H, W
        return pipeline(frames).permute(1, 0, 2, 3).contiguous()  # C, T, H, W

    return apply


def _to_float(mean: Sequence[float], std: Sequence[float], normalize: bool) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))] if normalize else []


def eval_crops(size: int, mean: Sequence[float], std: Sequence[float],
               crops: int, *, normalize: bool = True) -> list[Callable[[np.ndarray], torch.Tensor]]:
    """Test-time spatial views: ``1`` = centre crop; ``3`` = the standard three crops along
    the long side (start, centre, end) of the clip resized to ``size`` on its short side."""
    if crops == 1:
        return [build_transform(size, mean, std, train=False, normalize=normalize)]
    if crops != 3:
        raise ValueError("crops must be 1 or 3")
    tail = v2.Compose(_to_float(mean, std, normalize) or [v2.Identity()])

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


class DeviceNormalize:
    """Finish on the device a batch that ``build_transform(..., normalize=False)`` left as uint8.

    ``(B, C, T, H, W)`` uint8 → float32 through the same ``to_dtype(scale=True)`` and
    ``(x - mean) / std`` element for element as the host path (``ToDtype`` then ``Normalize``), so
    the result equals the host path's batch exactly (elementwise float32 arithmetic is
    correctly rounded on CPUs and GPUs alike). A float batch passes through unchanged, so the
    call is safe on either path.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = list(mean), list(std)
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dtype != torch.uint8:
            return batch
        x = v2.functional.to_dtype(batch, torch.float32, scale=True)
        if x.device not in self._stats:  # one small upload per device, not one per batch
            shape = (1, -1) + (1,) * (x.ndim - 2)  # channels are dim 1 of (B, C, T, H, W)
            self._stats[x.device] = tuple(torch.as_tensor(v, dtype=torch.float32, device=x.device).view(shape)
                                          for v in (self.mean, self.std))
        mean, std = self._stats[x.device]
        return x.sub_(mean).div_(std)
