"""Transfer strategies: *how* a pretrained backbone is adapted to the target.

Each strategy decides which parameters train, their learning-rate groups and
the BatchNorm mode of frozen parts:

``scratch``   everything trains at the head LR from random initialisation (the baseline
              that reveals negative transfer).
``linear``    the backbone is frozen; only the head trains (on cached features).
``partial``   stages up to ``--freeze-to STAGE`` are frozen (BatchNorm statistics too);
              the rest trains with the backbone LR.
``finetune``  everything trains: the head at ``lr``, the backbone at ``lr × --backbone-lr-mult``
              (discriminative LRs), or, with ``--layer-decay D``, stage k of K at ``lr × D^(K-k)``
              (the top stage at ``lr``, lower ones geometrically less).
``gradual``   fastai-style gradual unfreezing (Howard & Ruder 2018): the head alone for
              ``--unfreeze-every K`` epochs, then one more stage from the top every K epochs,
              each at its (lower) discriminative / layer-decayed LR.

The field's guidance (Yosinski et al. 2014; Kornblith et al. 2019): with little target data
and a source close to the target, freeze (``linear``/``partial``); with more data or a distant
source, fine-tune; always compare with ``scratch`` to catch negative transfer. See docs/models.md.

The optimizer always holds every trainable-at-some-point parameter (frozen ones have
``requires_grad=False`` and no gradient, so AdamW skips them): ``gradual`` only flips flags at
epoch starts (:meth:`Strategy.on_epoch_start`), and the LR schedule's groups never change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from pipeline.choices import STRATEGIES
from pipeline.errors import UserError
from pipeline.models.classifier import Classifier


@dataclass
class Strategy:
    name: str
    freeze_to: str | None = None  # partial: last frozen stage
    backbone_lr_mult: float = 0.1  # partial/finetune/gradual: backbone LR = head LR × this
    layer_decay: float | None = None  # instead of backbone_lr_mult: stage k of K gets lr × D^(K-k)
    unfreeze_every: int = 1  # gradual: epochs between unfreezing one more stage
    freeze_bn_stats: bool = False  # keep every BatchNorm's pretrained running statistics (small batches)
    epoch: int = field(default=0, compare=False)  # gradual: set by on_epoch_start

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise UserError(f"unknown strategy {self.name!r}; choose one of {', '.join(STRATEGIES)}")
        if self.name == "partial" and not self.freeze_to:
            raise UserError("--strategy partial needs --freeze-to STAGE")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise UserError(f"--layer-decay must be in (0, 1], got {self.layer_decay}")
        if self.layer_decay is not None and self.name in ("scratch", "linear"):
            raise UserError(f"--layer-decay needs a strategy that trains the backbone, not {self.name}")
        if self.backbone_lr_mult <= 0:
            raise UserError(f"--backbone-lr-mult must be positive, got {self.backbone_lr_mult}")
        if self.unfreeze_every < 1:
            raise UserError(f"--unfreeze-every must be at least 1, got {self.unfreeze_every}")

    @property
    def frozen_backbone(self) -> bool:
        """True when the whole backbone is frozen: features can be computed once and cached."""
        return self.name == "linear"

    # ------------------------------------------------------------------ which stages train

    @staticmethod
    def stages(model: Classifier) -> dict[str, nn.Module]:
        return dict(model.backbone.stage_modules())

    def unfrozen_stages(self, epoch: int, num_stages: int) -> int:
        """gradual: how many stages (from the top) train during ``epoch`` (0-based)."""
        return min(num_stages, epoch // self.unfreeze_every)

    def frozen_stage_names(self, model: Classifier) -> list[str]:
        names = list(self.stages(model))
        if self.name == "linear":
            return names
        if self.name == "partial":
            if self.freeze_to not in names:
                raise UserError(f"--freeze-to {self.freeze_to!r} is not a stage of this backbone "
                                f"({', '.join(names)})")
            return names[: names.index(self.freeze_to) + 1]
        if self.name == "gradual":
            return names[: len(names) - self.unfrozen_stages(self.epoch, len(names))]
        return []

    def frozen_modules(self, model: Classifier) -> list[nn.Module]:
        if self.name == "linear":
            return [model.backbone]
        stages = self.stages(model)
        return [stages[n] for n in self.frozen_stage_names(model)]

    def _apply_freezing(self, model: Classifier) -> None:
        for p in model.parameters():
            p.requires_grad_(True)
        for m in self.frozen_modules(model):
            for p in m.parameters():
                p.requires_grad_(False)

    # ------------------------------------------------------------------ learning rates

    def stage_lrs(self, model: Classifier, lr: float) -> dict[str, float]:
        """The LR of every backbone stage when it trains."""
        names = list(self.stages(model))
        if self.name == "scratch":
            return {n: lr for n in names}
        if self.layer_decay is not None:
            k_total = len(names)
            return {n: lr * self.layer_decay ** (k_total - k) for k, n in enumerate(names, start=1)}
        return {n: lr * self.backbone_lr_mult for n in names}

    def param_groups(self, model: Classifier, lr: float) -> list[dict]:
        """Freeze what this strategy freezes now and return the optimizer's parameter groups:
        ``head`` first, then ``backbone`` (one LR) or one group per stage (``stage:<name>``,
        when the LRs differ per stage: ``--layer-decay``, and always for ``gradual``)."""
        self._apply_freezing(model)
        head = [p for p in model.head.parameters() if p.requires_grad]
        groups = [{"name": "head", "params": head, "lr": lr}]
        if self.name == "linear":
            return groups
        stages = self.stages(model)
        lrs = self.stage_lrs(model, lr)
        # Stages whose parameters may train at some point of the run (gradual: all of them).
        frozen_for_good = set(self.frozen_stage_names(model)) if self.name == "partial" else set()
        seen: set[int] = set()
        per_stage: list[dict] = []
        for name, module in stages.items():
            params = [p for p in module.parameters() if id(p) not in seen]
            seen.update(id(p) for p in params)
            if name in frozen_for_good or not params:
                continue
            per_stage.append({"name": f"stage:{name}", "params": params, "lr": lrs[name]})
        # Backbone parameters outside every stage (none in the built-in zoo): the lowest stage's LR.
        rest = [p for p in model.backbone.parameters() if id(p) not in seen and p.requires_grad]
        if rest:
            per_stage.insert(0, {"name": "stage:<other>", "params": rest, "lr": min(lrs.values(), default=lr)})
        if self.layer_decay is None and self.name != "gradual":
            body = [p for g in per_stage for p in g["params"]]
            if body:
                groups.append({"name": "backbone", "params": body, "lr": per_stage[0]["lr"]})
            return groups
        return groups + per_stage

    # ------------------------------------------------------------------ per epoch

    def on_epoch_start(self, model: nn.Module, optimizer: object | None, epoch: int) -> list[str]:
        """Called by the train loop before each epoch (0-based ``epoch``, also when resuming).
        ``gradual`` unfreezes its stages here; returns the names of the stages that train."""
        inner = model.module if hasattr(model, "module") else model
        self.epoch = epoch
        if self.name == "gradual":
            self._apply_freezing(inner)
        frozen = set(self.frozen_stage_names(inner))
        return [n for n in self.stages(inner) if n not in frozen]

    def set_train_mode(self, model: nn.Module) -> None:
        """``model.train()``, but frozen parts stay in eval mode so their BatchNorm
        statistics (and dropout) are not changed by target batches; with ``freeze_bn_stats``
        every BatchNorm of the backbone keeps its pretrained statistics (its affine weights
        still train): the usual fix when batches are too small for reliable statistics."""
        model.train()
        inner = model.module if hasattr(model, "module") else model
        for m in self.frozen_modules(inner):
            m.eval()
        if self.freeze_bn_stats:
            for m in inner.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
