"""A backbone plus a linear head for the target classes: the model every stage trains, built fresh
(:func:`build_model`) or from a ``vtl train`` checkpoint (:func:`load_classifier`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.models.checkpoint import Checkpoint
from pipeline.models.factory import build_backbone
from pipeline.models.registry import Backbone, BackboneSpec, get_spec
from pipeline.models.weights import apply_weights

_HEAD_LINEAR = "head.1"  # the nn.Linear inside Classifier.head (after its Dropout)


class Classifier(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.feature_dim, num_classes))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(clip))

    def head_state(self, model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The head's part of a whole-model state dict, keyed for ``self.head.load_state_dict``."""
        return {k.removeprefix("head."): v for k, v in model_state.items() if k.startswith("head.")}


def linear_head(model_state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weight, bias) of the classifier's linear layer in a :class:`Classifier` state dict, or None."""
    w, b = model_state.get(f"{_HEAD_LINEAR}.weight"), model_state.get(f"{_HEAD_LINEAR}.bias")
    return None if w is None or b is None else (w, b)


def build_model(backbone: str, num_classes: int, *, weights: str = "none", temporal: str = "avg",
                dropout: float = 0.0, drop_path: float | None = None) -> tuple[Classifier, BackboneSpec]:
    """Build backbone + head and load ``weights`` (a tag, a file, or ``none``) into the backbone;
    ``drop_path`` sets its stochastic depth rate (None: the architecture's default)."""
    spec = get_spec(backbone)
    bb = build_backbone(spec, temporal, drop_path)
    apply_weights(bb, spec, weights)
    return Classifier(bb, num_classes, dropout), spec


def load_classifier(path: Path) -> tuple[Classifier, Checkpoint]:
    """Rebuild the model of a checkpoint written by ``vtl train``."""
    ckpt = Checkpoint.load(path)
    model, _ = build_model(ckpt.backbone, len(ckpt.classes), temporal=ckpt.temporal)
    try:
        model.load_state_dict(ckpt.model)
    except RuntimeError as e:
        raise UserError(f"{path} does not match its recorded backbone: {str(e).splitlines()[0]}") from None
    return model, ckpt
