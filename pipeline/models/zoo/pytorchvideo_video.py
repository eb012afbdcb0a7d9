"""Video backbones of ``pytorchvideo.models`` with the Kinetics-400 checkpoints of
pytorchvideo's model zoo (``https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/*.pyth``).

The networks are built by ``pytorchvideo.models.hub``'s own builder functions
(``pretrained=False``), so the architecture arguments are exactly those the
checkpoints were trained with. ``pytorchvideo.transforms`` is never imported: it
does not import on current torchvision.

Every head's fixed-size average pool is made adaptive so any clip length / crop
works, and the head's projection to the 400 Kinetics classes is removed; a
``.pyth`` file holds ``{"model_state": state_dict}`` whose keys get ``net.``.

SlowFast takes both pathways from the one clip vtl passes, ``(B, C, T, H, W)``:
the fast pathway is the clip, the slow one its temporal subsample by ``alpha``
(pytorchvideo's ``PackPathway``), done inside ``forward``.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.registry import Backbone, BackboneSpec, WeightTag, prefix_converter, register

ZOO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"
PYTORCHVIDEO_MEAN = (0.45, 0.45, 0.45)
PYTORCHVIDEO_STD = (0.225, 0.225, 0.225)


class PytorchvideoNet(Backbone):
    """A ``pytorchvideo.models.net.Net`` (stem, stages, head) without its class projection."""

    def __init__(self, hub_name: str, alpha: int | None = None) -> None:
        super().__init__()
        from pytorchvideo.models import hub

        self.net = getattr(hub, hub_name)(pretrained=False)
        self.alpha = alpha
        blocks = self.net.blocks
        head = blocks[-1]
        self.feature_dim = head.proj.in_features
        head.proj = nn.Identity()  # drop the 400-way Kinetics classifier (its keys are dropped from files)
        if alpha is not None:  # SlowFast: blocks[-2] pools each pathway and concatenates them
            blocks[-2].pool = nn.ModuleList([nn.AdaptiveAvgPool3d(1) for _ in blocks[-2].pool])
        elif hasattr(head.pool, "pool"):  # X3D: a ProjectedPool (conv, pool, conv)
            head.pool.pool = nn.AdaptiveAvgPool3d(1)
        else:
            head.pool = nn.AdaptiveAvgPool3d(1)

    def pathways(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[slow, fast] from one clip: fast = the clip (resampled to a multiple of alpha frames
        if needed, so the fast→slow lateral connections line up), slow = every alpha-th frame."""
        assert self.alpha is not None
        t = x.shape[2]
        t_fast = max(self.alpha, round(t / self.alpha) * self.alpha)
        if t_fast != t:
            x = x.index_select(2, torch.linspace(0, t - 1, t_fast, device=x.device).round().long())
        slow = x.index_select(2, torch.linspace(0, t_fast - 1, t_fast // self.alpha, device=x.device).long())
        return [slow, x]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = self.net.blocks
        if self.alpha is not None:
            x = self.pathways(x)
        for block in blocks[:-1]:
            x = block(x)
        head = blocks[-1]
        if head.pool is not None:
            x = head.pool(x)
        return x.flatten(1)

    def stage_modules(self) -> dict[str, nn.Module]:
        """stem, stage1..4 (a parameter-free block such as C2D's temporal max-pool joins the
        stage before it), and ``head`` where the head has weights (X3D's projected pool)."""
        from pytorchvideo.models.net import MultiPathWayWithFuse
        from pytorchvideo.models.resnet import ResStage

        blocks = list(self.net.blocks)
        groups: list[list[nn.Module]] = [[blocks[0]]]
        for block in blocks[1:-1]:
            if isinstance(block, (ResStage, MultiPathWayWithFuse)):
                groups.append([block])
            else:
                groups[-1].append(block)
        stages = {("stem" if i == 0 else f"stage{i}"): (g[0] if len(g) == 1 else nn.ModuleList(g))
                  for i, g in enumerate(groups)}
        head = blocks[-1]
        if head.pool is not None and any(True for _ in head.pool.parameters()):
            stages["head"] = head.pool
        return stages


# name (= pytorchvideo.models.hub builder): (checkpoint file, clip_len, crop, feature_dim, min_clip_len, description)
_MODELS = {
    "x3d_xs": ("X3D_XS.pyth", 4, 160, 2048, 1, "X3D-XS (Feichtenhofer 2020), 3.8M params"),
    "x3d_s": ("X3D_S.pyth", 13, 160, 2048, 1, "X3D-S, 3.8M params"),
    "x3d_m": ("X3D_M.pyth", 16, 224, 2048, 1, "X3D-M, 3.8M params"),
    "x3d_l": ("X3D_L.pyth", 16, 312, 2048, 1, "X3D-L, 6.2M params"),
    "slow_r50": ("SLOW_8x8_R50.pyth", 8, 224, 2048, 1, "Slow-only R50 8x8 (Feichtenhofer et al. 2019), 32M params"),
    "slowfast_r50": ("SLOWFAST_8x8_R50.pyth", 32, 224, 2304, 4,
                     "SlowFast R50 8x8 (alpha 4: the slow pathway sees every 4th frame), 34M params"),
    "i3d_r50": ("I3D_8x8_R50.pyth", 8, 224, 2048, 2, "I3D R50 8x8 (Carreira & Zisserman 2017), 28M params"),
    "c2d_r50": ("C2D_8x8_R50.pyth", 8, 224, 2048, 2, "C2D R50 8x8: 2D convs + temporal pooling, 24M params"),
    "csn_r101": ("CSN_32x2_R101.pyth", 32, 224, 2048, 1, "ir-CSN-101 32x2 (Tran et al. 2019), 22M params"),
    "r2plus1d_r50": ("R2PLUS1D_16x4_R50.pyth", 16, 224, 2048, 1, "R(2+1)D-50 16x4, 28M params"),
}


def _stage_names(name: str) -> tuple[str, ...]:
    base = ("stem", "stage1", "stage2", "stage3", "stage4")
    return (*base, "head") if name.startswith("x3d") else base


for _name, (_file, _clip, _crop, _dim, _min_t, _desc) in _MODELS.items():
    register(BackboneSpec(
        name=_name, kind="video", family="pytorchvideo", feature_dim=_dim, stages=_stage_names(_name),
        input_size=_crop, clip_len=_clip, mean=PYTORCHVIDEO_MEAN, std=PYTORCHVIDEO_STD,
        builder=lambda n=_name: PytorchvideoNet(n, alpha=4 if n == "slowfast_r50" else None),
        weights={"kinetics400": WeightTag("kinetics400", "kinetics400", url=f"{ZOO}/{_file}")},
        # .pyth files hold {"model_state": ...} (unwrapped by the resolver); drop the 400-way projection.
        convert_state=prefix_converter("net.", pattern=r"^blocks\.\d+\.proj\."),
        min_clip_len=_min_t, min_input_size=32, description=_desc,
    ))
