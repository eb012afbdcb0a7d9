"""Frozen backbone features of whole splits, extracted once into a feature cache: what a ``linear``
run, the head phase of LP-FT and the benchmark's transferability scores train on or score.
Under torchrun each rank extracts its share and rank 0 writes the cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from pipeline.data.cache import ClipCache, FeatureCache
from pipeline.data.datasets import ClipDataset
from pipeline.data.splits import Split
from pipeline.engine import distributed
from pipeline.engine.distributed import DistInfo
from pipeline.engine.loop import extract_features
from pipeline.engine.speed import Speed


@dataclass
class FeatureExtractor:
    """A frozen backbone and how to feed it (eval transform, batch size, process, speed switches)."""

    backbone: nn.Module
    transform: Callable[[np.ndarray], torch.Tensor]
    batch_size: int
    info: DistInfo
    speed: Speed

    def fill(self, features: FeatureCache, cache: ClipCache, splits: dict[str, Split]) -> FeatureCache:
        """Extract every view of every video of the splits not cached in ``features`` yet."""
        dev = distributed.device(self.info)
        self.backbone.to(dev)
        for name, split in splits.items():
            if features.has(name) or not split.ids:
                continue
            ds = ClipDataset(cache, split.ids, split.labels, self.transform, train=False)
            order = list(range(self.info.rank, len(ds), self.info.world_size))
            loader = DataLoader(Subset(ds, order), batch_size=self.batch_size)
            feats = extract_features(self.backbone, loader, dev, desc=f"features {name}", amp=self.speed.amp,
                                     memory_format=self.speed.memory_format)
            feats, order_all = distributed.gather_arrays(self.info, feats, np.asarray(order, dtype=np.int64))
            feats = feats[np.argsort(order_all)]  # back to dataset order
            views = [len(cache.read(i)) for i in split.ids]
            if self.info.is_main:
                features.write(name, split.ids, feats, np.concatenate([[0], np.cumsum(views)]))
            distributed.barrier(self.info)
        return features
