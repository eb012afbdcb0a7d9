"""Tests generated from the backbone registry (timm-style): every registered backbone

* builds with ``weights=none`` through :func:`pipeline.models.classifier.build_model`,
* takes a clip of its declared shape (batch 1; the heaviest ones at a smaller crop where
  the architecture accepts any size) and returns ``(B, num_classes)`` and ``(B, feature_dim)``;
  unless its size is fixed, a short 64 px clip works too (adaptive heads),
* exposes its stages for freezing: ``spec.stages == list(backbone.stage_modules())``, and every
  backbone parameter belongs to exactly one stage,
* loads an official-format file of its weight tag from a temporary ``TORCH_HOME``: a state dict
  with the official keys, shapes and dtypes (the official builder run on the meta device, one
  distinct value per tensor, saved under the URL's file name, ``{"model_state": …}`` for
  pytorchvideo) ends up in the backbone tensor for tensor, with only the source classifier dropped.
  (tests/test_weights.py does the same with freshly built, randomly initialised models.)

Each model is built once. Heavy ones are marked ``slow``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.models.checkpoint import load_torch_file
from pipeline.models.classifier import build_model
from pipeline.models.registry import list_specs
from pipeline.models.weights import apply_weights

SPECS = {s.name: s for s in list_specs()}
# Spatial size used for the heaviest networks that accept any crop (their declared shape costs
# 10-45 s per forward pass on 2 CPU cores); every other backbone runs at its declared shape.
SMALLER_CROP = {"vgg16_bn": 112, "s3d": 64, "swin3d_t": 64, "swin3d_s": 64, "swin3d_b": 64, "csn_r101": 112,
                "r2plus1d_r50": 112, "x3d_l": 160, "x3d_m": 160, "slowfast_r50": 112}
SLOW = {"vgg16_bn", "s3d", "swin3d_t", "swin3d_s", "swin3d_b", "csn_r101", "r2plus1d_r50", "x3d_l", "mvit_v1_b",
        "mvit_v2_s", "vit_b_16", "slowfast_r50", "inception_v3", "efficientnet_b0", "resnet50", "x3d_m"}
# What an official file has that our backbones do not: the source classifier and training-only aux heads.
CLASSIFIER_KEY = re.compile(r"^(fc|classifier|head|heads|aux1|aux2|AuxLogits)\.|^blocks\.\d+\.proj\.|^_fc\.")

EXPECTED = {  # the list: every one of these must be registered
    "video": {"r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v1_b", "mvit_v2_s", "swin3d_t", "swin3d_s", "swin3d_b",
              "x3d_xs", "x3d_s", "x3d_m", "x3d_l", "slow_r50", "slowfast_r50", "i3d_r50", "c2d_r50", "csn_r101",
              "r2plus1d_r50", "r2plus1d_34"},
    "frame": {"resnet18", "resnet50", "vgg16_bn", "googlenet", "inception_v3", "efficientnet_b0",
              "mobilenet_v3_large", "convnext_tiny", "vit_b_16", "efficientnet_lite0", "efficientnet_lite1",
              "efficientnet_lite2"},
}
# Every tag's source dataset (the tag names of a backbone may be more specific, e.g. ig65m_clip32).
SOURCES = {"imagenet1k", "kinetics400", "places365", "ig65m"}


def test_registry_holds_the_catalogue() -> None:
    for kind, names in EXPECTED.items():
        assert {s.name for s in list_specs(kind)} == names
    assert {s.name for s in list_specs("image")} == EXPECTED["frame"]
    for spec in SPECS.values():
        assert spec.weights, spec.name
        assert {t.source for t in spec.weights.values()} <= SOURCES
        assert spec.clip_len >= spec.min_clip_len and spec.input_size >= spec.min_input_size
        expected_tag = "imagenet1k" if spec.kind == "frame" else "kinetics400"
        assert next(iter(spec.weights)) == expected_tag  # the default tag of pretrained strategies


def _official_state(name: str) -> tuple[dict[str, torch.Tensor], bool]:
    """An official-format state dict of ``name`` (official keys and shapes, random values) and
    whether it is wrapped as ``{"model_state": ...}`` (pytorchvideo .pyth)."""
    import torchvision
    from torchvision.models import video as tvv

    spec = SPECS[name]
    with torch.device("meta"):
        if spec.family == "pytorchvideo":
            from pytorchvideo.models import hub

            model = getattr(hub, name)(pretrained=False)
        elif name == "r2plus1d_34":  # the Caffe2 conversion: see tests/test_sources.py for its layout
            from pipeline.models.zoo.torchvision_video import r2plus1d_34

            model = r2plus1d_34()
            model.fc = nn.Linear(512, 400)
        elif spec.kind == "video":
            model = getattr(tvv, name)(weights=None)
        else:
            extra = {"aux_logits": True, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
            model = getattr(torchvision.models, name)(weights=None, **extra)
    # A distinct value per tensor, stored as a one-element storage expanded to the official shape:
    # misrouted keys are caught, and even swin3d_b's file stays a few kB (the loader reads it as usual).
    state = {k: torch.tensor(i + 1, dtype=v.dtype).expand(v.shape)
             for i, (k, v) in enumerate(model.state_dict().items())}
    return state, spec.family == "pytorchvideo"


def _check_roundtrip(name: str, backbone: nn.Module, torch_home: Path) -> None:
    spec = SPECS[name]
    inner = backbone.net if spec.kind == "frame" else backbone  # FramePooling → the frame network
    packaged = next((t for t in spec.weights.values() if t.packaged is not None), None)
    if packaged is not None:  # the real ImageNet file of an installed package, no cache involved
        apply_weights(backbone, spec, packaged.tag)
        official = load_torch_file(packaged.packaged())
    else:
        tag = next(t for t in spec.weights.values() if t.loader is None)
        official, wrapped = _official_state(name)
        cache = torch_home / "hub" / "checkpoints"
        cache.mkdir(parents=True, exist_ok=True)
        torch.save({"model_state": official} if wrapped else official, cache / tag.filename)
        apply_weights(backbone, spec, tag.tag)
    ours = inner.state_dict()
    dropped = {k for k in official if "net." + k not in ours}
    assert all(CLASSIFIER_KEY.match(k) for k in dropped), f"{name}: dropped non-classifier keys {sorted(dropped)[:5]}"
    assert set(ours) == {"net." + k for k in official if k not in dropped}  # every tensor came from the file
    for k, v in official.items():
        if k not in dropped:
            assert torch.equal(ours["net." + k], v), f"{name}: {k} differs"


def _params(module: nn.Module) -> list[int]:
    return [id(p) for p in module.parameters()]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in SPECS])
def test_backbone(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SPECS[name]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    model, built = build_model(name, num_classes=3, weights="none")
    assert built is spec
    backbone = model.backbone

    # Stages for freezing: declared names, in order; each parameter in exactly one stage.
    stages = backbone.stage_modules()
    assert list(spec.stages) == list(stages)
    owners: dict[int, str] = {}
    for stage, module in stages.items():
        for p in _params(module):
            assert p not in owners, f"{name}: a parameter is in both {owners[p]} and {stage}"
            owners[p] = stage
    assert set(owners) == set(_params(backbone)), f"{name}: parameters outside every stage"

    # A clip of the declared shape (batch 1) → (1, feature_dim) → (1, num_classes).
    size = SMALLER_CROP.get(name, spec.input_size)
    assert not (spec.fixed_size and size != spec.input_size)
    clip = torch.randn(1, 3, spec.clip_len, size, size)
    model.eval()
    with torch.inference_mode():
        features = backbone(clip)
        logits = model.head(features)
    assert features.shape == (1, spec.feature_dim) == (1, backbone.feature_dim)
    assert logits.shape == (1, 3)
    assert torch.isfinite(logits).all()
    if not (spec.fixed_size or spec.fixed_clip_len):  # adaptive heads: other lengths and crops work too
        t, s = max(spec.min_clip_len, 4) + 2, max(spec.min_input_size, 64)
        with torch.inference_mode():
            assert model(torch.randn(1, 3, t, s, s)).shape == (1, 3)

    # Official-format weights of its tag load key for key.
    _check_roundtrip(name, backbone, tmp_path)


def test_slowfast_pathways_come_from_one_clip() -> None:
    """The slow pathway is pytorchvideo's PackPathway subsample (alpha 4) of the clip vtl passes."""
    from types import SimpleNamespace

    from pipeline.models.zoo.pytorchvideo_video import PytorchvideoNet

    clip = torch.arange(32.0).view(1, 1, 32, 1, 1).expand(1, 3, 32, 2, 2)
    slow, fast = PytorchvideoNet.pathways(SimpleNamespace(alpha=4), clip)
    assert torch.equal(fast, clip)
    assert slow[0, 0, :, 0, 0].tolist() == [0, 4, 8, 13, 17, 22, 26, 31]
    slow, fast = PytorchvideoNet.pathways(SimpleNamespace(alpha=4), clip[:, :, :30])  # resampled to 32 frames
    assert fast.shape[2] == 32 and slow.shape[2] == 8
