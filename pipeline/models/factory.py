"""Building a backbone from its registry spec (timm's ``create_model``): the spec's builder, wrapped
in temporal pooling when it is a frame network."""

from __future__ import annotations

from pipeline.models.registry import Backbone, BackboneSpec
from pipeline.models.temporal import FramePooling


def build_backbone(spec: BackboneSpec, temporal: str = "avg") -> Backbone:
    """A randomly initialised backbone; frame networks are pooled over time with ``temporal``."""
    net = spec.builder()
    return FramePooling(net, spec.feature_dim, temporal) if spec.kind == "frame" else net
