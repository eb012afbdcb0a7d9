"""Map-style datasets over the caches (no IterableDataset: samplers and DDP stay simple).

Training picks one cached view of a video at random per epoch (the
augmentation of frozen-feature training, and multi-draw sampling for clips);
evaluation enumerates every view so clip- and video-level scores can both be
computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.cache import ClipCache


class ClipDataset(Dataset):
    """Items are ``(clip float (C,T,H,W), label, video index)``."""

    def __init__(self, cache: ClipCache, ids: Sequence[str], labels: Sequence[int],
                 transform: Callable[[np.ndarray], torch.Tensor], *, train: bool):
        self.cache = cache
        self.ids = list(ids)
        self.labels = list(labels)
        self.transform = transform
        self.train = train
        if train:
            self.items = [(i, -1) for i in range(len(self.ids))]
        else:
            self.items = [(i, v) for i, vid in enumerate(self.ids) for v in range(len(cache.read(vid)))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        video, view = self.items[index]
        clips = self.cache.read(self.ids[video])
        if view < 0:
            view = int(torch.randint(len(clips), ()).item())
        return self.transform(np.array(clips[view])), self.labels[video], video  # copy out of the mmap


class FeatureDataset(Dataset):
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
            row = lo + int(torch.randint(hi - lo, ()).item())
        return self.features[row], self.labels[video], video
