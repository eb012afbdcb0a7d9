"""The uint8 path: clips left as uint8 by the transform and normalised on the device give the very
tensor today's host-normalised path gives (train augmentation, eval crops, and through the loader
and the engine's loop)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate

from pipeline.data.cache import ClipCache
from pipeline.data.datasets import ClipDataset
from pipeline.data.transforms import AUGMENTATIONS, DeviceNormalize, build_transform, eval_crops
from pipeline.engine.loop import extract_features

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
KINETICS = ([0.43216, 0.394666, 0.37645], [0.22803, 0.22145, 0.216989])
LITE = ([0.498, 0.498, 0.498], [0.502, 0.502, 0.502])  # EfficientNet-Lite's (x - 127) / 128


def clips(n: int, seed: int = 0, shape: tuple[int, int, int] = (6, 36, 50)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("mean,std", [IMAGENET, KINETICS, LITE])
@pytest.mark.parametrize("train,augment", [(True, a) for a in AUGMENTATIONS] + [(False, "standard")])
def test_device_normalisation_equals_the_host_path(mean, std, train: bool, augment: str) -> None:
    host = build_transform(28, mean, std, train=train, augment=augment)
    raw = build_transform(28, mean, std, train=train, augment=augment, normalize=False)
    expected, sent = [], []
    for i, clip in enumerate(clips(5)):
        torch.manual_seed(i)  # the same crop and flip draws on both paths
        expected.append(host(clip))
        torch.manual_seed(i)
        sent.append(raw(clip))
    for s, e in zip(sent, expected, strict=True):
        assert s.dtype == torch.uint8 and s.shape == e.shape == (3, 6, 28, 28)
    assert sent[0].nbytes * 4 == expected[0].nbytes
    batch = DeviceNormalize(mean, std)(default_collate(sent))
    assert batch.dtype == torch.float32
    assert torch.equal(batch, default_collate(expected))  # bit for bit, not approximately


def test_three_crop_eval_views_match_too() -> None:
    host, raw = eval_crops(28, *IMAGENET, 3), eval_crops(28, *IMAGENET, 3, normalize=False)
    clip = clips(1, shape=(4, 30, 64))[0]
    for h, r in zip(host, raw, strict=True):
        assert torch.equal(DeviceNormalize(*IMAGENET)(r(clip)[None]), h(clip)[None])


def test_a_float_batch_passes_through_unchanged() -> None:
    x = torch.randn(2, 3, 4, 8, 8)
    assert DeviceNormalize(*IMAGENET)(x) is x


def test_the_engine_sees_the_same_features_through_a_uint8_loader(tmp_path: Path) -> None:
    cache = ClipCache(tmp_path / "clips")
    cache.init({"test": True})
    ids = []
    for i, clip in enumerate(clips(6, seed=3)):
        cache.write(f"v{i}", clip[None])
        ids.append(f"v{i}")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(3, 4, 3), nn.AdaptiveAvgPool3d(1), nn.Flatten())

    def features(normalize: bool) -> np.ndarray:
        tf = build_transform(24, *KINETICS, train=False, normalize=normalize)
        loader = DataLoader(ClipDataset(cache, ids, [0] * len(ids), tf, train=False), batch_size=4)
        return extract_features(net, loader, torch.device("cpu"), desc="test",
                                normalize=None if normalize else DeviceNormalize(*KINETICS))

    assert np.array_equal(features(False), features(True))
