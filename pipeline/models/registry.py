"""One registry of backbones (timm-style): builder functions registered by name
with the metadata the rest of vtl needs.

A *backbone* here is an ``nn.Module`` that maps a clip ``(B, C, T, H, W)`` to
features ``(B, D)`` and names its stages (input → output) so strategies can
freeze "up to" a stage. Kinds:

* ``video``: a spatio-temporal network (3D/(2+1)D convolutions, transformers).
* ``frame``: a 2D ImageNet network applied to every frame and pooled over
  time (see :mod:`pipeline.models.temporal`); on an image workspace T = 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass(frozen=True)
class WeightTag:
    """A named set of pretrained weights for one backbone.

    ``url`` is where ``vtl weights fetch`` downloads it from; the file name of
    the URL is also its name in the torch hub cache. ``packaged`` returns the
    path of weights shipped inside an installed package (no download at all).
    """

    tag: str
    source: str  # the source dataset, e.g. "imagenet1k", "kinetics400"
    url: str | None = None
    sha256_prefix: str | None = None
    packaged: Callable[[], Path] | None = None

    @property
    def filename(self) -> str | None:
        return self.url.rsplit("/", 1)[-1] if self.url else None


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    kind: str  # "video" or "frame"
    feature_dim: int
    stages: tuple[str, ...]
    input_size: int
    clip_len: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    builder: Callable[[], nn.Module]
    weights: dict[str, WeightTag] = field(default_factory=dict)
    # How a weights file's keys map onto the backbone module (state dict → state dict).
    convert_state: Callable[[dict], dict] | None = None
    family: str = "torchvision"


REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"backbone {spec.name} registered twice")
    REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> BackboneSpec:
    _load_builtin()
    if name not in REGISTRY:
        close = get_close_matches(name, REGISTRY, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown backbone {name!r}{hint}; `vtl backbones` lists them")
    return REGISTRY[name]


def list_specs(kind: str | None = None) -> list[BackboneSpec]:
    _load_builtin()
    return [s for s in REGISTRY.values() if kind is None or s.kind == kind]


def _load_builtin() -> None:
    # Importing the zoo modules registers their backbones.
    from pipeline.models import zoo  # noqa: F401


class Backbone(nn.Module):
    """Base class: ``forward(clip (B,C,T,H,W)) -> (B, feature_dim)``; ``stage_modules()``
    returns the ordered stages used for partial freezing."""

    feature_dim: int

    def stage_modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Load a pretrained state dict (already converted to this module's keys)."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected or missing:
            raise UserError(
                f"weights do not fit {type(self).__name__}: {len(missing)} missing keys "
                f"(e.g. {', '.join(missing[:2])}), {len(unexpected)} unexpected (e.g. {', '.join(unexpected[:2])})"
            )
