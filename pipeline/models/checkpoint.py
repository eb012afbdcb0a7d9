"""The checkpoint a ``vtl train`` run writes, as one typed object, and the safe reading of torch files.

A :class:`Checkpoint` holds what is needed to reuse a model (backbone name, the weights it started
from, temporal pooling, classes, model state, the run's config and feature-cache key) and, in
``last.pt``, what is needed to resume it exactly (optimizer, scheduler, grad scaler and RNG states,
epoch, history, best validation top-1). It is the only place that knows the keys of the file;
every other module reads and writes checkpoints through it.

Every file is read with ``torch.load(weights_only=True)``: a pickle payload is refused, never
executed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline import __version__
from pipeline.errors import UserError
from pipeline.files import replaced_on_success

KIND = "vtl-checkpoint"  # the "kind" entry that marks a file as written by `vtl train`


def load_torch_file(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Weights only load failed" in str(e) or "Unsupported global" in str(e):
            raise UserError(f"refusing to load {path}: it holds pickled objects beyond tensors "
                            "(weights_only loading; the payload was not executed)") from None
        raise UserError(f"cannot read weights file {path}: {text[:200]}") from None


def is_checkpoint(obj: Any) -> bool:
    """True for the contents of a file written by :meth:`Checkpoint.save`."""
    return isinstance(obj, dict) and obj.get("kind") == KIND


@dataclass
class Checkpoint:
    """One ``best.pt`` or ``last.pt``. ``model`` is the whole classifier's state dict."""

    backbone: str
    classes: list[str]
    model: dict[str, torch.Tensor]
    weights: str = "none"  # what the backbone started from: a tag, a file, or none
    temporal: str = "avg"
    config: dict[str, Any] = field(default_factory=dict)  # the run config (what results depend on)
    feature_key: str | None = None  # the feature cache of a head trained on frozen features
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    best_val_top1: float = -1.0
    epoch: int = 0
    # Training states, for resuming (empty in best.pt):
    optimizer: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    scaler: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    live_model: dict[str, torch.Tensor] = field(default_factory=dict)  # --ema: the live weights (model: the average)
    vtl_version: str = __version__

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) of the network's input: what training normalised its clips with."""
        from pipeline.models.registry import get_spec

        return get_spec(self.backbone).normalization(self.weights)

    def without_training_state(self) -> Checkpoint:
        return dataclasses.replace(self, optimizer={}, scheduler={}, scaler={}, rng={}, live_model={})

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The backbone part of ``model``, keys relative to the backbone module."""
        prefix = "backbone."
        return {k[len(prefix):]: v for k, v in self.model.items() if k.startswith(prefix)}

    def save(self, path: Path) -> None:
        """Write atomically: a file under ``path`` is always complete."""
        with replaced_on_success(Path(path)) as tmp:
            torch.save({"kind": KIND, **dataclasses.asdict(self)}, tmp)

    @classmethod
    def from_contents(cls, obj: Any, path: Path) -> Checkpoint:
        """The checkpoint in a loaded file's contents; a one-line error if it is none."""
        if not is_checkpoint(obj):
            raise UserError(f"{path} is not a vtl checkpoint (written by `vtl train`)")
        if not isinstance(obj.get("model"), dict) or not obj.get("backbone"):
            raise UserError(f"{path} is a vtl checkpoint without model weights")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in obj.items() if k in known}
        values.setdefault("classes", [])
        return cls(**values)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        if not Path(path).is_file():
            raise UserError(f"checkpoint {path} does not exist")
        return cls.from_contents(load_torch_file(Path(path)), Path(path))
