"""Preprocessing: the normalisation matches what each set of weights was trained with, ``--augment
crop`` never flips, and one random crop (and flip) is shared by all frames of a clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models import get_model_weights, list_models

from pipeline.data.transforms import build_transform
from pipeline.models.checkpoint import Checkpoint
from pipeline.models.registry import list_specs

# The publishers' own preprocessing, independent of vtl's registry:
# - torchvision: every weights enum's transforms(), found by the URL of the file (so weights reused by
#   another architecture, e.g. 2D ImageNet ResNet-18 inflated into r3d_18, keep their publisher's numbers);
# - PyTorchVideo's model zoo (its hub tutorial and slowfast configs): mean 0.45, std 0.225 on every channel;
# - EfficientNet-Lite (tensorflow/tpu efficientnet/lite: MEAN_RGB 127.0, STDDEV_RGB 128.0 on 0-255
#   pixels, i.e. about 0.5 and 0.5 on 0-1 pixels);
# - Places365 (CSAIL's run_placesCNN_basic.py normalises with ImageNet mean/std);
# - IG-65M / VMZ R(2+1)D-34 (moabitcoin/ig65m-pytorch's README: Kinetics mean/std).
PYTORCHVIDEO = ((0.45,) * 3, (0.225,) * 3)
EFFICIENTNET_LITE = ((127.0 / 255,) * 3, (128.0 / 255,) * 3)
PLACES365 = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IG65M = ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989))


def _torchvision_by_url() -> dict[str, tuple[tuple[float, ...], tuple[float, ...]]]:
    found = {}
    names = list_models(module=torchvision.models) + list_models(module=torchvision.models.video)
    for name in names:  # the classifiers (detection/segmentation presets have no mean/std)
        for w in get_model_weights(name):
            t = w.transforms()
            found[w.url] = (tuple(t.mean), tuple(t.std))
    return found


def _publisher(spec, tag, torchvision: dict) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if tag.url in torchvision:
        return torchvision[tag.url]
    if spec.family == "pytorchvideo":
        return PYTORCHVIDEO
    if spec.name.startswith("efficientnet_lite"):
        return EFFICIENTNET_LITE
    if "csail.mit.edu" in (tag.url or ""):
        return PLACES365
    if "ig65m-pytorch" in (tag.url or ""):
        return IG65M
    raise AssertionError(f"{spec.name}:{tag.tag}: no known publisher normalisation to check it against")


def test_every_weight_tag_is_normalised_as_its_publisher_trained_it() -> None:
    torchvision = _torchvision_by_url()
    checked = []
    for spec in list_specs():
        for tag in spec.weights.values():
            mean, std = spec.normalization(tag.tag)
            want_mean, want_std = _publisher(spec, tag, torchvision)
            np.testing.assert_allclose(mean, want_mean, atol=3e-3, err_msg=f"{spec.name}:{tag.tag} mean")
            np.testing.assert_allclose(std, want_std, atol=3e-3, err_msg=f"{spec.name}:{tag.tag} std")
            checked.append(f"{spec.name}:{tag.tag}")
    assert "r3d_18:imagenet1k" in checked and "x3d_xs:kinetics400" in checked and len(checked) > 20


def test_a_checkpoint_is_evaluated_with_the_normalisation_it_was_trained_with() -> None:
    # Evaluate and predict normalise with the checkpoint's: the one its starting weights expect.
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    kinetics = ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989))
    for weights, expected in (("imagenet1k", imagenet), ("kinetics400", kinetics), ("none", kinetics)):
        ckpt = Checkpoint(backbone="r3d_18", classes=["a"], model={}, weights=weights)
        np.testing.assert_allclose(ckpt.normalization, expected, atol=1e-6, err_msg=weights)


@pytest.mark.parametrize("train", [False, True])
def test_the_transform_applies_exactly_that_mean_and_std(train: bool) -> None:
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.25, 0.5)
    clip = np.empty((4, 40, 40, 3), np.uint8)
    clip[...] = (51, 102, 204)  # a flat clip: cropping and resizing leave every pixel as it is
    out = build_transform(32, mean, std, train=train)(clip)
    assert out.shape == (3, 4, 32, 32) and out.dtype == torch.float32
    for c in range(3):
        expected = (clip[0, 0, 0, c] / 255.0 - mean[c]) / std[c]
        torch.testing.assert_close(out[c], torch.full_like(out[c], expected), atol=1e-6, rtol=0)


def _ramp_clip(frames: int = 3, size: int = 48) -> np.ndarray:
    """Every row increases left to right (the red channel is the column): a flip reverses it."""
    clip = np.zeros((frames, size, size, 3), np.uint8)
    clip[..., 0] = np.linspace(0, 255, size).astype(np.uint8)[None, None, :]
    return clip


def _flipped(out: torch.Tensor) -> bool:
    red = out[0]  # (T, H, W)
    steps = red[..., 1:] - red[..., :-1]
    assert bool((steps >= -1e-5).all()) or bool((steps <= 1e-5).all()), "neither a ramp nor a mirrored ramp"
    return bool((steps < -1e-5).any())


def test_crop_preset_never_flips_and_standard_does() -> None:
    crop = build_transform(24, (0.0,) * 3, (1.0,) * 3, train=True, augment="crop")
    standard = build_transform(24, (0.0,) * 3, (1.0,) * 3, train=True, augment="standard")
    clip = _ramp_clip()
    flips = {"crop": 0, "standard": 0}
    for seed in range(100):
        torch.manual_seed(seed)
        flips["crop"] += _flipped(crop(clip))
        torch.manual_seed(seed)
        flips["standard"] += _flipped(standard(clip))
    assert flips["crop"] == 0
    assert 25 <= flips["standard"] <= 75  # p = 0.5: the detector does see a flip when there is one


@pytest.mark.parametrize("augment", ["standard", "crop"])
def test_one_crop_and_flip_for_every_frame_of_a_clip(augment: str) -> None:
    # Identical frames stay identical only if every frame gets the same crop (and flip): a per-frame
    # draw would crop each frame elsewhere. The frames hold a 2D pattern, so any shift shows.
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    clip = np.repeat(frame[None], 8, axis=0)
    transform = build_transform(24, (0.0,) * 3, (1.0,) * 3, train=True, augment=augment)
    outs = []
    for seed in range(20):
        torch.manual_seed(seed)
        out = transform(clip)
        for t in range(1, 8):
            torch.testing.assert_close(out[:, t], out[:, 0], atol=0, rtol=0)
        outs.append(out[:, 0])
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # the crop itself is random across draws
