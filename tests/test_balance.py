"""Imbalanced classes: ``--class-weights auto`` (loss weights) and ``--sampler balanced`` (per-epoch
class frequencies), checked exactly, and through ``vtl train`` on an imbalanced workspace."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import invoke_vtl

from pipeline.data.balance import BalancedSampler, class_weights, loss_weights


def test_auto_weights_are_inverse_frequency_with_mean_one() -> None:
    labels = [0, 0, 0, 1, 2, 2]  # class 3 has no training example
    inverse = np.array([1 / 3, 1, 1 / 2])
    expected = np.append(inverse / inverse.mean(), 0.0)
    np.testing.assert_allclose(class_weights(labels, 4), expected, rtol=1e-12)
    assert class_weights(labels, 4)[:3].mean() == pytest.approx(1.0)
    np.testing.assert_allclose(class_weights([1, 0, 1, 0], 2), [1.0, 1.0])
    assert loss_weights("none", labels, 4) is None
    assert torch.equal(loss_weights("auto", labels, 4), torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize(("counts", "expected"), [
    ((20, 2), {0: 11, 1: 11}),  # 10:1, oversampled to equal shares
    ((7, 3, 1), {0: 4, 1: 4, 2: 3}),  # 11 per epoch over 3 classes: shares 4, 4, 3 in some order
])
def test_balanced_epochs_have_equal_class_frequencies(counts: tuple[int, ...], expected: dict[int, int]) -> None:
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    sampler = BalancedSampler(labels, seed=3)
    seen_orders = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(sampler) == len(labels)
        frequencies = Counter(labels[i] for i in order)
        assert sorted(frequencies.values()) == sorted(expected.values())  # exact, every epoch
        drawn = Counter(order)
        for c in range(len(counts)):  # within a class, no example is drawn twice before every one once
            per_example = [drawn[i] for i, label in enumerate(labels) if label == c]
            assert max(per_example) - min(per_example) <= 1
        seen_orders.append(order)
    assert seen_orders[0] != seen_orders[1]  # reshuffled every epoch
    sampler.set_epoch(1)
    assert list(sampler) == seen_orders[1]  # but the same for the same (seed, epoch): resumable


def test_balanced_sampler_shares_one_epoch_across_ranks() -> None:
    labels = [0] * 9 + [1] * 2
    whole = BalancedSampler(labels, seed=0)
    ranks = [BalancedSampler(labels, seed=0, rank=r, world_size=2) for r in range(2)]
    for s in (whole, *ranks):
        s.set_epoch(5)
    parts = [list(s) for s in ranks]
    assert len(parts[0]) == len(parts[1]) == 6  # 11 padded to 12
    order = whole.epoch_indices().tolist()
    assert parts[0] == order[0::2] and parts[1][:5] == order[1::2]


def test_vtl_train_with_class_weights_and_a_balanced_sampler(tiny_dataset: Path, tmp_path: Path) -> None:
    """An imbalanced copy of the tiny dataset (6:2:6); both options train end to end, through the
    clip loaders (scratch) and the cached-feature loaders (linear), and are recorded in the run config."""
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    minority = sorted(p for p in data.iterdir() if p.is_dir())[1]
    for extra in sorted(minority.iterdir())[2:]:
        extra.unlink()
    ws = tmp_path / "ws"
    invoke_vtl("-q", "prepare", ws, "--root", data, "--workers", "0", "--val-fraction", "0.2", "--test-fraction", "0.2")
    invoke_vtl("-q", "sample", ws, "--frames", "2", "--short-side", "32", "--workers", "0")
    for strategy, backbone in (("linear", "efficientnet_lite0"), ("scratch", "resnet18")):
        invoke_vtl("-q", "train", ws, "--backbone", backbone, "--strategy", strategy, "--epochs", "2",
                   "--input-size", "32", "--batch-size", "4", "--class-weights", "auto", "--sampler", "balanced")
        config = yaml.safe_load((ws / "train" / f"{backbone}-{strategy}" / "config.yaml").read_text())
        assert (config["class_weights"], config["sampler"]) == ("auto", "balanced")
