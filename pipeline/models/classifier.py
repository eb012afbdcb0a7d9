"""A backbone plus a linear head for the target classes: the model every stage trains."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.registry import Backbone, BackboneSpec, get_spec
from pipeline.models.temporal import FramePooling
from pipeline.models.weights import apply_weights


class Classifier(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.feature_dim, num_classes))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(clip))


def build_backbone(spec: BackboneSpec, temporal: str = "avg") -> Backbone:
    net = spec.builder()
    return FramePooling(net, spec.feature_dim, temporal) if spec.kind == "frame" else net


def build_model(backbone: str, num_classes: int, *, weights: str = "none", temporal: str = "avg",
                dropout: float = 0.0) -> tuple[Classifier, BackboneSpec]:
    """Build backbone + head and load ``weights`` (a tag, a file, or ``none``) into the backbone."""
    spec = get_spec(backbone)
    bb = build_backbone(spec, temporal)
    apply_weights(bb, spec, weights)
    return Classifier(bb, num_classes, dropout), spec
