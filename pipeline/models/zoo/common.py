"""Helpers shared by the zoo modules: metadata read from torchvision's weight enums."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class TorchvisionMeta:
    url: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    clip_len: int | None
    min_clip_len: int
    min_input_size: int


def torchvision_meta(weights: Any) -> TorchvisionMeta:
    """URL, crop size, mean/std and clip length of a torchvision weights enum member
    (e.g. ``R3D_18_Weights.KINETICS400_V1``), from its transforms and metadata."""
    t = weights.transforms()
    crop = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else t.crop_size
    m = re.search(r"clip_len=(\d+)", weights.meta.get("_docs", ""))
    min_size = weights.meta.get("min_size", (1, 1))[0]
    return TorchvisionMeta(url=weights.url, input_size=int(crop), mean=tuple(t.mean), std=tuple(t.std),
                           clip_len=int(m.group(1)) if m else None,
                           min_clip_len=int(weights.meta.get("min_temporal_size", 1)),
                           min_input_size=max(int(min_size), 32))


def replace_module(root: nn.Module, dotted: str, new: nn.Module) -> None:
    """Replace the submodule at ``dotted`` (e.g. ``classifier.6``) by ``new``."""
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    if isinstance(parent, nn.Sequential) and child.isdigit():
        parent[int(child)] = new
    else:
        setattr(parent, child, new)


def stochastic_depth(drop_path: float | None) -> dict[str, float]:
    """torchvision's stochastic depth keyword (EfficientNet, ConvNeXt, MViT, Swin3D) for a
    ``drop_path`` rate; none when it is None (the architecture's default)."""
    return {} if drop_path is None else {"stochastic_depth_prob": drop_path}
