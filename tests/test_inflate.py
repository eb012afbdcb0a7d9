"""I3D inflation: on a boring video the inflated 3D ResNet reproduces the 2D ResNet's features.

The 2D checkpoint is built here (no download): a seeded torchvision resnet18 whose batch-norm
statistics are set from a forward pass and then perturbed, so that copying them matters.

Two facts shape the comparison:

* torchvision's video ResNets have no max-pool after the stem, so the 2D reference is
  resnet18 with ``maxpool`` replaced by Identity.
* The 3D convs zero-pad in time. On a boring video that makes the clip's edge frames differ
  from the 2D result (a zero frame is mixed in), so the exact property holds either (a) with
  the temporal padding switched to replicate padding, which keeps a constant-in-time input
  constant at every layer, or (b) at time indices far enough from both ends to be untouched
  by the zero padding.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pipeline.errors import UserError
from pipeline.models.inflate import inflate_resnet2d_into_video


def _resnet18_2d() -> nn.Module:
    """A seeded resnet18 with realistic, then perturbed, batch-norm parameters and statistics."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    # One train-mode pass with momentum 1 sets running stats to this batch's statistics, so
    # activations stay at a sane scale through 8 blocks in eval mode.
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 64, 64))
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.momentum = 0.1
                bn.running_mean += 0.05 * torch.randn_like(bn.running_mean)
                bn.running_var *= 1.0 + 0.2 * torch.rand_like(bn.running_var)
                bn.weight.copy_(1.0 + 0.2 * torch.randn_like(bn.weight))
                bn.bias.copy_(0.1 * torch.randn_like(bn.bias))
    return model.eval()


@pytest.fixture(scope="module")
def resnet2d() -> nn.Module:
    return _resnet18_2d()


def _features_2d(model: nn.Module, frame: torch.Tensor) -> torch.Tensor:
    """Feature map after layer4 of the 2D net without its max-pool, shape (B, 512, h, w)."""
    x = model.relu(model.bn1(model.conv1(frame)))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def _features_3d(model: nn.Module, clip: torch.Tensor) -> torch.Tensor:
    """Feature map after layer4 of a torchvision video ResNet, shape (B, 512, t, h, w)."""
    return model.layer4(model.layer3(model.layer2(model.layer1(model.stem(clip)))))


def _inflated(arch: str, resnet2d: nn.Module) -> tuple[nn.Module, list[str]]:
    torch.manual_seed(1)
    model = getattr(torchvision.models.video, arch)(weights=None)
    left = inflate_resnet2d_into_video(resnet2d.state_dict(), model)
    return model.eval(), left


def _replicate_time_padding(model: nn.Module) -> None:
    """Swap each Conv3d's zero padding in time for replicate padding (space is unchanged)."""
    for conv in model.modules():
        if isinstance(conv, nn.Conv3d) and conv.padding[0] > 0:
            pad_t = conv.padding[0]
            conv.padding = (0, conv.padding[1], conv.padding[2])
            conv.register_forward_pre_hook(
                lambda _m, args, p=pad_t: (F.pad(args[0], (0, 0, 0, 0, p, p), mode="replicate"),)
            )


def _boring_clip(frame: torch.Tensor, num_frames: int) -> torch.Tensor:
    return frame.unsqueeze(2).expand(-1, -1, num_frames, -1, -1).contiguous()


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    # Tolerance relative to the feature scale: float32 sums in a different order.
    scale = expected.abs().max().item()
    assert scale > 0.1  # the comparison is not vacuous
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("arch", ["r3d_18", "mc3_18"])
def test_pooled_features_match_2d_on_boring_video(arch: str, resnet2d: nn.Module) -> None:
    model, _ = _inflated(arch, resnet2d)
    _replicate_time_padding(model)
    torch.manual_seed(2)
    frame = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pooled_2d = _features_2d(resnet2d, frame).mean(dim=(2, 3))
        feats_3d = _features_3d(model, _boring_clip(frame, 8))
    _assert_close(feats_3d.mean(dim=(2, 3, 4)), pooled_2d)


@pytest.mark.parametrize(
    ("arch", "num_frames", "clean"),
    [
        # r3d_18: each t=3 conv zero-pads 1 frame and the first conv of layer2-4 has stride 2
        # (output j reads inputs 2j-1..2j+1). Frames whose receptive field reaches the padding,
        # from the start: stem + 4 layer1 convs = 5; layer2 3 + 3 = 6; layer3 4 + 3 = 7;
        # layer4 4 + 3 = 7 (from the end, one fewer). 128 frames -> 16 at layer4: 7..8 clean.
        ("r3d_18", 128, slice(7, 9)),
        # mc3_18: only the stem and layer1 are temporal (5 frames per side), no temporal stride.
        ("mc3_18", 16, slice(5, 11)),
    ],
)
def test_centre_frames_match_2d_with_zero_padding(
    arch: str, num_frames: int, clean: slice, resnet2d: nn.Module
) -> None:
    model, _ = _inflated(arch, resnet2d)
    torch.manual_seed(3)
    frame = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        feats_2d = _features_2d(resnet2d, frame)
        feats_3d = _features_3d(model, _boring_clip(frame, num_frames))
    centre = feats_3d[:, :, clean]
    _assert_close(centre, feats_2d.unsqueeze(2).expand_as(centre))
    # The edge frames do see the zero padding: the check above is about the clip centre only.
    assert not torch.allclose(feats_3d[:, :, 0], feats_2d, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("arch", ["r3d_18", "mc3_18"])
def test_everything_but_fc_is_inflated(arch: str, resnet2d: nn.Module) -> None:
    model, left = _inflated(arch, resnet2d)
    assert left == ["fc.weight", "fc.bias"]
    state = model.state_dict()
    # The stem kernel is the 2D one repeated over 3 frames, divided by 3.
    expected = resnet2d.conv1.weight.unsqueeze(2).expand(-1, -1, 3, -1, -1) / 3
    torch.testing.assert_close(state["stem.0.weight"], expected)
    torch.testing.assert_close(state["layer3.1.conv2.1.running_var"], resnet2d.layer3[1].bn2.running_var)


def test_r2plus1d_inflates_only_downsample_branches(resnet2d: nn.Module) -> None:
    model, left = _inflated("r2plus1d_18", resnet2d)
    state = model.state_dict()
    inflated = {key for key in state if key not in left}
    bn_keys = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    assert inflated == {
        f"layer{i}.0.downsample.{part}"
        for i in (2, 3, 4)
        for part in ["0.weight", *(f"1.{k}" for k in bn_keys)]
    }
    # (2+1)D convs, and the batch norms that follow them, stay at their initial values.
    untouched = [
        "stem.0.weight",
        "stem.3.weight",
        "layer1.0.conv1.0.0.weight",
        "layer1.0.conv1.1.running_var",
    ]
    assert set(untouched) <= set(left)
    assert "fc.weight" in left
    torch.testing.assert_close(
        state["layer2.0.downsample.0.weight"], resnet2d.layer2[0].downsample[0].weight.unsqueeze(2)
    )
    torch.manual_seed(1)
    fresh = torchvision.models.video.r2plus1d_18(weights=None).state_dict()
    torch.testing.assert_close(state["layer1.0.conv1.1.running_var"], fresh["layer1.0.conv1.1.running_var"])
    torch.testing.assert_close(state["stem.0.weight"], fresh["stem.0.weight"])


def test_rejects_non_resnet_inputs(resnet2d: nn.Module) -> None:
    video = torchvision.models.video.r3d_18(weights=None)
    with pytest.raises(UserError, match="ResNet state dict"):
        inflate_resnet2d_into_video({"features.0.weight": torch.zeros(1)}, video)
    with pytest.raises(UserError, match="video ResNet"):
        inflate_resnet2d_into_video(resnet2d.state_dict(), nn.Sequential(nn.Linear(2, 2)))
    bottleneck = torchvision.models.resnet50(weights=None).state_dict()
    with pytest.raises(UserError, match="Bottleneck"):
        inflate_resnet2d_into_video(bottleneck, video)
