"""Training on imbalanced classes: loss weights by inverse class frequency (``--class-weights auto``)
and a sampler that makes every class equally frequent in each epoch (``--sampler balanced``).

Both are computed on the train split the run actually uses (after ``--fraction``). Mean class
accuracy, reported everywhere, is the score they aim at.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def class_weights(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Inverse class frequency, normalised to mean 1 over the classes present; 0 for a class with no
    training example (it contributes no loss anyway)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = 1.0 / counts[present]
    return weights / weights[present].mean()


class BalancedSampler(Sampler[int]):
    """Per epoch, ``len(labels)`` indices with every class equally often (±1 when the count does not
    divide): a class's examples are drawn in a fresh random order, cycled when the class is smaller
    than its share (oversampling) and cut when larger. The whole order is shuffled, seeded by
    (seed, epoch) through :meth:`set_epoch`, like ``DistributedSampler``; under DDP each rank takes
    every ``world_size``-th index of that order, padded to equal length."""

    def __init__(self, labels: Sequence[int], *, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.per_rank = -(-len(self.labels) // world_size)  # ceil

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_indices(self) -> np.ndarray:
        """The whole epoch's order, before it is split across ranks."""
        rng = np.random.default_rng([self.seed, self.epoch])
        classes = np.unique(self.labels)
        shares = np.full(len(classes), len(self.labels) // len(classes))
        shares[rng.permutation(len(classes))[: len(self.labels) % len(classes)]] += 1  # who gets the remainder
        picks = []
        for c, share in zip(classes, shares, strict=True):
            members = np.flatnonzero(self.labels == c)
            rounds = -(-share // len(members))
            order = np.concatenate([rng.permutation(members) for _ in range(rounds)])
            picks.append(order[:share])
        return rng.permutation(np.concatenate(picks))

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_indices()
        padded = np.resize(order, self.per_rank * self.world_size)  # repeats the start, as DistributedSampler
        return iter(padded[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank


def loss_weights(mode: str, labels: Sequence[int], num_classes: int) -> torch.Tensor | None:
    """The cross-entropy's class weights for ``--class-weights mode`` (None: unweighted)."""
    if mode == "none":
        return None
    return torch.tensor(class_weights(labels, num_classes), dtype=torch.float32)
