"""An exponential moving average of a model's weights (``vtl train --ema DECAY``).

After every optimizer step each floating-point entry of the state (parameters and BatchNorm
statistics, as in timm's ``ModelEmaV2``) becomes ``decay · ema + (1 − decay) · live``; integer
entries (``num_batches_tracked``) are copied. The average starts as a copy of the model; it is what
validation scores and what ``best.pt``/``last.pt`` store as the model, while ``last.pt`` also keeps
the live weights so a resumed run continues exactly.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class Ema:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        live = model.state_dict()
        for key, avg in self.module.state_dict().items():
            if avg.is_floating_point():
                avg.lerp_(live[key].to(avg.dtype), 1.0 - self.decay)  # avg + (1-d)(live - avg)
            else:
                avg.copy_(live[key])
