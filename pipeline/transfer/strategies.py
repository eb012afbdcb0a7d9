"""Transfer strategies: *how* a pretrained backbone is adapted to the target.

Each strategy decides which parameters train, their learning-rate groups and
the BatchNorm mode of frozen parts. The field's guidance (Yosinski et al. 2014;
Kornblith et al. 2019): with little target data and a source close to the
target, freeze (``linear``/``partial``); with more data or a distant source,
fine-tune; always compare with ``scratch`` to catch negative transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pipeline.errors import UserError
from pipeline.models.classifier import Classifier

STRATEGIES = ("scratch", "linear", "partial", "finetune")


@dataclass(frozen=True)
class Strategy:
    name: str
    freeze_to: str | None = None  # partial: last frozen stage
    backbone_lr_mult: float = 0.1  # finetune/partial: backbone LR = head LR × this

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise UserError(f"unknown strategy {self.name!r}; choose one of {', '.join(STRATEGIES)}")
        if self.name == "partial" and not self.freeze_to:
            raise UserError("--strategy partial needs --freeze-to STAGE")

    @property
    def frozen_backbone(self) -> bool:
        """True when the whole backbone is frozen: features can be computed once and cached."""
        return self.name == "linear"

    @property
    def needs_pretrained(self) -> bool:
        return self.name != "scratch"

    def frozen_modules(self, model: Classifier) -> list[nn.Module]:
        if self.name == "linear":
            return [model.backbone]
        if self.name == "partial":
            stages = model.backbone.stage_modules()
            if self.freeze_to not in stages:
                raise UserError(f"--freeze-to {self.freeze_to!r} is not a stage of this backbone "
                                f"({', '.join(stages)})")
            names = list(stages)
            return [stages[n] for n in names[: names.index(self.freeze_to) + 1]]
        return []

    def param_groups(self, model: Classifier, lr: float) -> list[dict]:
        """Freeze what this strategy freezes and return the optimizer's parameter groups."""
        for p in model.parameters():
            p.requires_grad_(True)
        for m in self.frozen_modules(model):
            for p in m.parameters():
                p.requires_grad_(False)
        head = [p for p in model.head.parameters() if p.requires_grad]
        body = [p for p in model.backbone.parameters() if p.requires_grad]
        groups = [{"name": "head", "params": head, "lr": lr}]
        if body:
            mult = 1.0 if self.name == "scratch" else self.backbone_lr_mult
            groups.append({"name": "backbone", "params": body, "lr": lr * mult})
        return groups

    def set_train_mode(self, model: nn.Module) -> None:
        """``model.train()``, but frozen parts stay in eval mode so their BatchNorm
        statistics are not updated by target batches."""
        model.train()
        inner = model.module if hasattr(model, "module") else model
        for m in self.frozen_modules(inner):
            m.eval()
