"""Map-style datasets over the caches (no IterableDataset: samplers and DDP stay simple).

Training picks one cached view of a video at random per epoch (the
augmentation of frozen-feature training, and multi-draw sampling for clips),
drawn from (the epoch's seed, the video) rather than from a global generator, so
the draw is the same whichever process fetches the item: one process or DDP
ranks, any number of loader workers, an uninterrupted or a resumed run.
Evaluation enumerates every view so clip- and video-level scores can both be
computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.cache import ClipCache


class _EpochViews(Dataset):
    """The per-epoch view draw of training items (see the module docstring)."""

    epoch_seed = 0

    def set_epoch(self, epoch_seed: int) -> None:
        """Called by the trainer before each epoch (before loader workers start: they copy it)."""
        self.epoch_seed = epoch_seed

    def draw_view(self, video: int, views: int) -> int:
        return int(np.random.default_rng([self.epoch_seed, video]).integers(views)) if views > 1 else 0


class ClipDataset(_EpochViews):
    """Items are ``(clip float (C,T,H,W), label, video index)``.

    Evaluation items enumerate (video, view, crop): at most ``max_views`` cached
    views per video, each through every transform of ``crops`` (default: just
    ``transform``), for multi-view testing.
    """

    def __init__(self, cache: ClipCache, ids: Sequence[str], labels: Sequence[int],
                 transform: Callable[[np.ndarray], torch.Tensor], *, train: bool, max_views: int | None = None,
                 crops: Sequence[Callable[[np.ndarray], torch.Tensor]] | None = None):
        self.cache = cache
        self.ids = list(ids)
        self.labels = list(labels)
        self.transforms = list(crops) if crops else [transform]
        self.train = train
        if train:
            self.items = [(i, -1, 0) for i in range(len(self.ids))]
        else:
            self.items = [(i, v, c) for i, vid in enumerate(self.ids)
                          for v in range(min(len(cache.read(vid)), max_views or 1 << 30))
                          for c in range(len(self.transforms))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        video, view, crop = self.items[index]
        clips = self.cache.read(self.ids[video])
        if view < 0:
            view = self.draw_view(video, len(clips))
        clip = np.array(clips[view])  # copy out of the memory map
        return self.transforms[crop](clip), self.labels[video], video


class FeatureDataset(_EpochViews):
    """Cached backbone features: ``(feature (D,), label, video index)``.

    ``features`` stacks every view of every video; ``offsets[i]:offsets[i+1]``
    are video i's views.
    """

    def __init__(self, features: np.ndarray, offsets: np.ndarray, labels: Sequence[int], *, train: bool):
        self.features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.offsets = offsets
        self.labels = list(labels)
        self.train = train
        n = len(self.labels)
        self.items = ([(i, -1) for i in range(n)] if train else
                      [(i, int(j)) for i in range(n) for j in range(offsets[i], offsets[i + 1])])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        video, row = self.items[index]
        if row < 0:
            lo, hi = int(self.offsets[video]), int(self.offsets[video + 1])
            row = lo + self.draw_view(video, hi - lo)
        return self.features[row], self.labels[video], video
