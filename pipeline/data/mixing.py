"""Mixup and CutMix on a training batch (``vtl train --mixup A --cutmix A``), as in timm's
``Mixup``: each batch draws λ ~ Beta(A, A) and pairs every clip with the batch reversed.

* mixup: ``x = λ·x + (1 − λ)·x.flip(0)``;
* cutmix: one box of area share ``1 − λ`` (the same box on every frame of every clip) is pasted
  from the reversed batch, and λ is corrected to the share actually kept after clipping the box;
* both set: one of the two per batch, each with probability ½.

The targets are soft: ``λ·onehot(y) + (1 − λ)·onehot(y.flip(0))``, which sum to one and which
``nn.CrossEntropyLoss`` takes as class probabilities (with label smoothing and class weights).
Every draw comes from torch's global generator, which the trainer reseeds every epoch, so a resumed
run replays the same mixes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class MixCut:
    """Mix a batch ``(B, C, [T,] H, W)`` and its labels; :attr:`lam` is the last λ used."""

    def __init__(self, mixup: float, cutmix: float, num_classes: int):
        if mixup < 0 or cutmix < 0 or mixup + cutmix == 0:
            raise ValueError("MixCut needs mixup or cutmix > 0 (and neither negative)")
        self.mixup, self.cutmix, self.num_classes = mixup, cutmix, num_classes
        self.lam = 1.0

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        use_cutmix = self.cutmix > 0 and (self.mixup == 0 or torch.rand(()).item() < 0.5)
        alpha = self.cutmix if use_cutmix else self.mixup
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        partner = inputs.flip(0)
        if use_cutmix:
            top, left, h, w = self._box(inputs.shape[-2:], lam)
            inputs = inputs.clone()
            inputs[..., top:top + h, left:left + w] = partner[..., top:top + h, left:left + w]
            lam = 1.0 - h * w / (inputs.shape[-2] * inputs.shape[-1])
        else:
            inputs = inputs * lam + partner * (1.0 - lam)
        self.lam = lam
        return inputs, self.targets(labels, lam)

    def targets(self, labels: torch.Tensor, lam: float) -> torch.Tensor:
        """Soft targets: ``lam`` on each clip's class, ``1 − lam`` on its partner's."""
        hot = F.one_hot(labels, self.num_classes).float()
        return hot * lam + hot.flip(0) * (1.0 - lam)

    @staticmethod
    def _box(size: torch.Size, lam: float) -> tuple[int, int, int, int]:
        """A box of area share ``1 − lam`` centred at a uniform point, clipped to the frame."""
        height, width = int(size[0]), int(size[1])
        ratio = (1.0 - lam) ** 0.5
        cy, cx = int(torch.randint(height, ()).item()), int(torch.randint(width, ()).item())
        h2, w2 = int(height * ratio) // 2, int(width * ratio) // 2
        top, bottom = max(cy - h2, 0), min(cy + h2, height)
        left, right = max(cx - w2, 0), min(cx + w2, width)
        return top, left, bottom - top, right - left
