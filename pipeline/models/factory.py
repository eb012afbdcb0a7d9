"""Building a backbone from its registry spec (timm's ``create_model``): the spec's builder, wrapped
in temporal pooling when it is a frame network."""

from __future__ import annotations

from pipeline.errors import UserError
from pipeline.models.registry import Backbone, BackboneSpec
from pipeline.models.temporal import FramePooling


def build_backbone(spec: BackboneSpec, temporal: str = "avg", drop_path: float | None = None) -> Backbone:
    """A randomly initialised backbone; frame networks are pooled over time with ``temporal``.
    ``drop_path``: its stochastic depth rate (None: the architecture's default)."""
    check_drop_path(spec, drop_path)
    net = spec.builder(drop_path=drop_path) if spec.drop_path and drop_path is not None else spec.builder()
    return FramePooling(net, spec.feature_dim, temporal) if spec.kind == "frame" else net


def check_drop_path(spec: BackboneSpec, drop_path: float | None) -> None:
    """A one-line error when a stochastic depth rate is asked of a backbone without it."""
    if drop_path and not spec.drop_path:
        raise UserError(f"{spec.name} has no stochastic depth: drop --drop-path")
