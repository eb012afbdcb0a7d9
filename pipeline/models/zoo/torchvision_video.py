"""Video backbones of ``torchvision.models.video`` with their Kinetics-400 weights.

URLs, crop size, mean/std and clip length come from torchvision's own weight
enums (``R3D_18_Weights.KINETICS400_V1`` …). Each wrapper keeps the torchvision
model as ``net`` without its classifier, so an official state dict maps onto it
by adding ``net.`` and dropping the classifier keys.

The three video ResNets also take ``imagenet1k``: the 2D ResNet-18 ImageNet file,
inflated into 3D (I3D-style, :mod:`pipeline.models.inflate`).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import ResNet18_Weights
from torchvision.models import video as tvv

from pipeline.models.registry import Backbone, BackboneSpec, WeightTag, prefix_converter, register
from pipeline.models.zoo.common import stochastic_depth, torchvision_meta

RESNET18_IMAGENET_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"

# ----------------------------------------------------------------------------- r3d_18, mc3_18, r2plus1d_18


class TorchvisionVideoResNet(Backbone):
    """torchvision's r3d_18 / mc3_18 / r2plus1d_18 without the classifier."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        self.net = r2plus1d_34() if arch == "r2plus1d_34" else getattr(tvv, arch)(weights=None)
        self.feature_dim = self.net.fc.in_features
        self.net.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def stage_modules(self) -> dict[str, nn.Module]:
        n = self.net
        return {"stem": n.stem, "layer1": n.layer1, "layer2": n.layer2, "layer3": n.layer3, "layer4": n.layer4}


def r2plus1d_34() -> tvv.VideoResNet:
    """R(2+1)D-34 (Tran et al. 2018) on torchvision's VideoResNet blocks, as the VMZ (Caffe2) models
    were converted to PyTorch by moabitcoin/ig65m-pytorch: the first block of layers 2-4 has the
    Caffe2 mid-planes in its second (2+1)D conv (torchvision derives them from the block's input width;
    facebookresearch/VMZ#89, pytorch/vision#1265), and batch norms use Caffe2's eps 1e-3."""
    from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem

    net = tvv.VideoResNet(block=BasicBlock, conv_makers=[Conv2Plus1D] * 4, layers=[3, 4, 6, 3], stem=R2Plus1dStem)
    for layer, planes in ((net.layer2, 128), (net.layer3, 256), (net.layer4, 512)):
        layer[0].conv2[0] = Conv2Plus1D(planes, planes, planes * 9 // 4)  # 288, 576, 1152
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.eps = 1e-3
    return net


def inflate_imagenet_resnet18(backbone: Backbone, state: dict) -> None:
    """The ``imagenet1k`` loader of the video ResNets: inflate 2D ResNet-18 weights into 3D."""
    from pipeline.models.inflate import inflate_resnet2d_into_video
    from pipeline.progress import echo

    net = backbone.net  # type: ignore[attr-defined]
    left = inflate_resnet2d_into_video(state, net)
    total = len(net.state_dict())
    echo(f"weights: inflated 2D ImageNet resnet18 into {type(backbone).__name__}: {total - len(left)} of "
         f"{total} tensors; not inflated (random init, {len(left)}): {_compact(left)}")


def _compact(keys: list[str]) -> str:
    """``layer1.0.conv1.0.weight, layer1.0.conv1.0.bias`` → ``layer1.0.conv1.0.{weight,bias}``."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        module, _, leaf = k.rpartition(".")
        groups.setdefault(module, []).append(leaf)
    return ", ".join(f"{m}.{{{','.join(v)}}}" if len(v) > 1 else f"{m}.{v[0]}" for m, v in groups.items()) or "-"


_VIDEO_RESNETS = {
    "r3d_18": (tvv.R3D_18_Weights, "R3D-18: 3D ResNet (Tran et al. 2018), 33M params"),
    "mc3_18": (tvv.MC3_18_Weights, "MC3-18: mixed 3D/2D convolutions (Tran et al. 2018), 11.7M params"),
    "r2plus1d_18": (tvv.R2Plus1D_18_Weights, "R(2+1)D-18: factorised spatio-temporal convs, 31.5M params"),
}

_IMAGENET = torchvision_meta(ResNet18_Weights.IMAGENET1K_V1)  # the 2D file that imagenet1k inflates

for _arch, (_enum, _desc) in _VIDEO_RESNETS.items():
    _meta = torchvision_meta(_enum.KINETICS400_V1)
    register(BackboneSpec(
        name=_arch, kind="video", feature_dim=512, stages=("stem", "layer1", "layer2", "layer3", "layer4"),
        input_size=_meta.input_size, clip_len=_meta.clip_len or 16, mean=_meta.mean, std=_meta.std,
        builder=lambda a=_arch: TorchvisionVideoResNet(a),
        weights={
            "kinetics400": WeightTag("kinetics400", "kinetics400", url=_meta.url),
            "imagenet1k": WeightTag("imagenet1k", "imagenet1k", url=_IMAGENET.url,
                                    loader=inflate_imagenet_resnet18, mean=_IMAGENET.mean, std=_IMAGENET.std,
                                    note="2D ResNet-18 inflated to 3D (I3D); same file as resnet18:imagenet1k"),
        },
        convert_state=prefix_converter("net.", drop=("fc.",)),
        min_input_size=16, description=_desc,
    ))

# ----------------------------------------------------------------------------- r2plus1d_34 (IG65M)

# moabitcoin/ig65m-pytorch's release v1.0.0: plain state dicts with torchvision's VideoResNet keys
# (and a 487-way IG65M or 400-way Kinetics ``fc``), the sha256 prefix in the file name. Kinetics-400
# first: the default tag of video backbones.
IG65M = "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0"
_R2PLUS1D_34_TAGS = (
    WeightTag("kinetics400", "kinetics400", url=f"{IG65M}/r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth",
              note="IG-65M, then fine-tuned on Kinetics-400, 8-frame clips"),
    WeightTag("kinetics400_clip32", "kinetics400",
              url=f"{IG65M}/r2plus1d_34_clip32_ft_kinetics_from_ig65m-ade133f1.pth",
              note="IG-65M, then fine-tuned on Kinetics-400, 32-frame clips"),
    WeightTag("ig65m", "ig65m", url=f"{IG65M}/r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth",
              note="IG-65M weakly supervised (65M Instagram videos), 8-frame clips"),
    WeightTag("ig65m_clip32", "ig65m", url=f"{IG65M}/r2plus1d_34_clip32_ig65m_from_scratch-449a7af9.pth",
              note="IG-65M, 32-frame clips"),
)
_meta = torchvision_meta(tvv.R2Plus1D_18_Weights.KINETICS400_V1)
register(BackboneSpec(
    name="r2plus1d_34", kind="video", feature_dim=512, stages=("stem", "layer1", "layer2", "layer3", "layer4"),
    input_size=112, clip_len=8, mean=_meta.mean, std=_meta.std,
    builder=lambda: TorchvisionVideoResNet("r2plus1d_34"),
    weights={t.tag: t for t in _R2PLUS1D_34_TAGS},
    convert_state=prefix_converter("net.", drop=("fc.",)), family="vmz",
    min_input_size=16,
    description="R(2+1)D-34 (VMZ), IG-65M pretraining (Ghadiyaram et al. 2019), 63.6M params; 8x112 px",
))

# ----------------------------------------------------------------------------- s3d


class TorchvisionS3D(Backbone):
    """S3D (separable 3D Inception). Its fixed (2, 7, 7) average pool is made adaptive."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tvv.s3d(weights=None)
        self.net.avgpool = nn.AdaptiveAvgPool3d(1)
        self.net.classifier = nn.Identity()
        self.feature_dim = 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torchvision: features → avgpool → (dropout, 1x1x1 conv) → mean; the conv is linear, so
        # the global average of the features carries the same information.
        return self.net.avgpool(self.net.features(x)).flatten(1)

    def stage_modules(self) -> dict[str, nn.Module]:
        f = self.net.features
        return {"stem": nn.ModuleList(f[0:5]), "mixed3": nn.ModuleList(f[5:7]), "mixed4": nn.ModuleList(f[7:13]),
                "mixed5": nn.ModuleList(f[13:16])}


_meta = torchvision_meta(tvv.S3D_Weights.KINETICS400_V1)
register(BackboneSpec(
    name="s3d", kind="video", feature_dim=1024, stages=("stem", "mixed3", "mixed4", "mixed5"),
    input_size=_meta.input_size, clip_len=_meta.clip_len or 64, mean=_meta.mean, std=_meta.std,
    builder=TorchvisionS3D,
    weights={"kinetics400": WeightTag("kinetics400", "kinetics400", url=_meta.url)},
    convert_state=prefix_converter("net.", drop=("classifier.",)),
    min_clip_len=8, description="S3D: separable 3D Inception (Xie et al. 2018), 8.3M params",
))

# ----------------------------------------------------------------------------- mvit



class TorchvisionMViT(Backbone):
    """MViT v1/v2 (multiscale vision transformer): class-token features after the last norm."""

    def __init__(self, arch: str, drop_path: float | None = None) -> None:
        super().__init__()
        self.net = getattr(tvv, arch)(weights=None, **stochastic_depth(drop_path))
        self.feature_dim = self.net.head[-1].in_features
        self.net.head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def stage_modules(self) -> dict[str, nn.Module]:
        # A stage starts at each block that pools its queries (a ``pool_skip`` branch).
        n = self.net
        groups: list[list[nn.Module]] = []
        for block in n.blocks:
            if not groups or getattr(block, "pool_skip", None) is not None:
                groups.append([])
            groups[-1].append(block)
        stages: dict[str, nn.Module] = {"stem": nn.ModuleList([n.conv_proj, n.pos_encoding])}
        stages.update({f"stage{i + 1}": nn.ModuleList(g) for i, g in enumerate(groups)})
        stages["head"] = n.norm
        return stages


for _arch, _enum, _desc in (
    ("mvit_v1_b", tvv.MViT_V1_B_Weights, "MViT-v1 B (Fan et al. 2021), 36.6M params; 16x224 only"),
    ("mvit_v2_s", tvv.MViT_V2_S_Weights, "MViT-v2 S (Li et al. 2022), 34.5M params; 16x224 only"),
):
    _meta = torchvision_meta(_enum.KINETICS400_V1)
    register(BackboneSpec(
        name=_arch, kind="video", feature_dim=768, stages=("stem", "stage1", "stage2", "stage3", "stage4", "head"),
        input_size=_meta.input_size, clip_len=_meta.clip_len or 16, mean=_meta.mean, std=_meta.std,
        builder=lambda a=_arch, **kw: TorchvisionMViT(a, **kw), drop_path=True,
        weights={"kinetics400": WeightTag("kinetics400", "kinetics400", url=_meta.url)},
        convert_state=prefix_converter("net.", drop=("head.",)),
        # Position embeddings / relative positions are sized for 16 frames at 224 px.
        min_clip_len=_meta.min_clip_len, min_input_size=_meta.input_size, fixed_size=True, fixed_clip_len=True,
        description=_desc,
    ))

# ----------------------------------------------------------------------------- swin3d


class TorchvisionSwin3D(Backbone):
    """Video Swin Transformer (Liu et al. 2022): any clip length / crop size (it pads to windows)."""

    def __init__(self, arch: str, drop_path: float | None = None) -> None:
        super().__init__()
        self.net = getattr(tvv, arch)(weights=None, **stochastic_depth(drop_path))
        self.feature_dim = self.net.head.in_features
        self.net.head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def stage_modules(self) -> dict[str, nn.Module]:
        f = self.net.features  # stage, merge, stage, merge, stage, merge, stage
        return {"stem": self.net.patch_embed, "stage1": f[0], "stage2": nn.ModuleList(f[1:3]),
                "stage3": nn.ModuleList(f[3:5]), "stage4": nn.ModuleList(f[5:7]), "head": self.net.norm}


for _arch, _enum, _dim, _desc in (
    ("swin3d_t", tvv.Swin3D_T_Weights, 768, "Video Swin-T, 28.2M params"),
    ("swin3d_s", tvv.Swin3D_S_Weights, 768, "Video Swin-S, 49.8M params"),
    ("swin3d_b", tvv.Swin3D_B_Weights, 1024, "Video Swin-B (ImageNet-1k init, Kinetics-400), 88M params"),
):
    _meta = torchvision_meta(_enum.KINETICS400_V1)
    register(BackboneSpec(
        name=_arch, kind="video", feature_dim=_dim, stages=("stem", "stage1", "stage2", "stage3", "stage4", "head"),
        input_size=_meta.input_size, clip_len=_meta.clip_len or 32, mean=_meta.mean, std=_meta.std,
        builder=lambda a=_arch, **kw: TorchvisionSwin3D(a, **kw), drop_path=True,
        weights={"kinetics400": WeightTag("kinetics400", "kinetics400", url=_meta.url)},
        convert_state=prefix_converter("net.", drop=("head.",)),
        min_input_size=32, description=_desc,
    ))
