"""Run a 2D frame network on every frame and pool the features over time.

``avg`` is TSN's segmental consensus; ``max`` keeps the strongest evidence of
any frame; ``conv`` (a residual 1D temporal convolution) and ``attention``
(learned per-frame weights) are small learnable heads that can use frame
order, which plain pooling cannot.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.choices import TEMPORAL_POOLINGS
from pipeline.models.registry import Backbone, load_checked


class TemporalConv(nn.Module):
    def __init__(self, dim: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=8 if dim % 8 == 0 else 1)
        nn.init.zeros_(self.conv.weight)  # starts as plain average pooling
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, D)
        y = x + torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        return y.mean(dim=1)


class TemporalAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)  # uniform weights at start = average pooling
        nn.init.zeros_(self.score.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.score(x), dim=1)  # (B, T, 1)
        return (w * x).sum(dim=1)


class FramePooling(Backbone):
    """Wraps a frame network ``(N, C, H, W) -> (N, D)`` into a clip backbone."""

    def __init__(self, frame_net: nn.Module, feature_dim: int, temporal: str = "avg"):
        super().__init__()
        if temporal not in TEMPORAL_POOLINGS:
            raise ValueError(f"unknown temporal pooling {temporal!r}")
        self.net = frame_net
        self.feature_dim = feature_dim
        self.temporal = temporal
        self.channels_last = False
        self.pool: nn.Module | None = None
        if temporal == "conv":
            self.pool = TemporalConv(feature_dim)
        elif temporal == "attention":
            self.pool = TemporalAttention(feature_dim)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = clip.shape
        frames = clip.transpose(1, 2).reshape(b * t, c, h, w)
        if self.channels_last:  # set by `vtl train --channels-last`
            frames = frames.contiguous(memory_format=torch.channels_last)
        feats = self.net(frames).reshape(b, t, -1)
        if self.pool is not None:
            return self.pool(feats)
        return feats.amax(dim=1) if self.temporal == "max" else feats.mean(dim=1)

    def stage_modules(self) -> dict[str, nn.Module]:
        stages = dict(self.net.stage_modules())
        if self.pool is not None:
            stages["temporal"] = self.pool
        return stages

    def pretrained_module(self) -> nn.Module:
        return self.net.pretrained_module()

    def load_trained_state(self, state: dict[str, torch.Tensor], *, temporal: str) -> str | None:
        """The frame network always; the learnable temporal head (``conv``/``attention``) only when
        the source run used the same one, else it keeps its initial value (average pooling)."""
        net_state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
        pool_state = {k[len("pool."):]: v for k, v in state.items() if k.startswith("pool.")}
        load_checked(self.net, net_state)
        if self.pool is not None and pool_state and temporal == self.temporal:
            load_checked(self.pool, pool_state)
            return None
        if pool_state or self.pool is not None:
            return f"temporal head {temporal!r} not carried over to {self.temporal!r} (it starts as average pooling)"
        return None
