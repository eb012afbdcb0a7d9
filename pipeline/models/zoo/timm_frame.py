"""Frame backbones from timm by name: ``--backbone timm:<model>.<pretrained tag>``, e.g.
``timm:vit_small_patch14_dinov2.lvd142m`` (DINOv2), ``timm:vit_base_patch16_clip_224.openai`` (CLIP),
``timm:convnext_tiny.fb_in22k``.

Everything vtl needs comes from timm itself: the network (``timm.create_model(..., num_classes=0)``),
its mean/std and input size (the pretrained config), its stages for freezing (the model's
``feature_info``) and the Hugging Face repo of its weights (``pretrained_cfg.hf_hub_id``). The weights
are read from the Hugging Face cache, never downloaded during a run; the one weight tag of such a
backbone is the timm pretrained tag (``lvd142m``…). A repo's file holds the full timm model
(``model.safetensors``, or the ``hf_hub_filename`` of its config, e.g. ``open_clip_pytorch_model.bin``);
timm's own ``checkpoint_filter_fn`` of the model family converts it, and the classifier is dropped.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.models.hfcache import cached_repos, require
from pipeline.models.registry import (
    Backbone,
    BackboneSpec,
    Family,
    StageGroup,
    WeightTag,
    load_checked,
    register_family,
)

PREFIX = "timm"
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for in a repo, in its order
NUM_STAGES = 4  # feature levels are grouped into at most this many stages (a ViT's 12 blocks: 4 x 3)


class TimmFrameNet(Backbone):
    """A timm model without classifier: ``(N, C, H, W) -> (N, D)`` pooled features."""

    def __init__(self, model_name: str, drop_path: float = 0.0) -> None:
        super().__init__()
        timm = require("timm")
        kwargs = {"drop_path_rate": drop_path} if drop_path else {}
        self.net = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        self.feature_dim = int(getattr(self.net, "head_hidden_size", None) or self.net.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def pretrained_module(self) -> nn.Module:
        return self.net

    def stage_modules(self) -> dict[str, nn.Module]:
        return {name: _stage_group(self.net, params) for name, params in stage_params(self.net).items()}


def stage_params(net: nn.Module) -> dict[str, list[str]]:
    """Parameter names per stage: ``stem`` (before the first feature level), ``stage1..4`` (the
    feature levels of ``net.feature_info`` in at most 4 contiguous groups; parameters between two
    levels join the next) and ``head`` (after the last level, e.g. a ViT's final norm)."""
    levels = [f["module"] for f in net.feature_info]
    names = [n for n, _ in net.named_parameters()]
    level_of: dict[str, int] = {}
    pending: list[str] = []
    for n in names:
        i = next((i for i, m in enumerate(levels) if n.startswith(m + ".")), None)
        if i is None:
            pending.append(n)
            continue
        before_first = not level_of
        for p in pending:  # between levels (or before the first one): the stem or this level
            level_of[p] = -1 if before_first else i
        pending = []
        level_of[n] = i
    used = sorted({i for i in level_of.values() if i >= 0})
    per = -(-len(used) // NUM_STAGES) if used else 1
    stage_of_level = {lvl: f"stage{k // per + 1}" for k, lvl in enumerate(used)}
    stages: dict[str, list[str]] = {}
    for n in names:
        stage = "head" if n in pending else "stem" if level_of[n] < 0 else stage_of_level[level_of[n]]
        stages.setdefault(stage, []).append(n)
    order = ["stem", *sorted({s for s in stages if s.startswith("stage")}), "head"]
    return {s: stages[s] for s in order if s in stages}


def _stage_group(net: nn.Module, params: list[str]) -> StageGroup:
    """The modules owning ``params`` (outermost only, so buffers such as BatchNorm statistics come
    along) and the loose parameters of the root (a class token, position embeddings)."""
    owners = sorted({p.rpartition(".")[0] for p in params if "." in p})
    outermost = [o for o in owners if not any(o.startswith(other + ".") for other in owners)]
    loose = [net.get_parameter(p) for p in params if "." not in p]
    return StageGroup([net.get_submodule(o) for o in outermost], loose)


def _loader(classifier: tuple[str, ...]) -> Callable[[Backbone, dict], None]:
    def load(backbone: Backbone, state: dict) -> None:
        net = backbone.pretrained_module()
        module = inspect.getmodule(type(net))
        convert = getattr(module, "checkpoint_filter_fn", None)
        if convert is not None:
            state = convert(state, net)
        state = {k: v for k, v in state.items() if not k.startswith(tuple(c + "." for c in classifier))}
        load_checked(net, state)

    return load


def make_spec(model_name: str) -> BackboneSpec:
    """The spec of ``timm:<model_name>``, read from timm's pretrained config and the model built on
    the meta device (no memory, no weights)."""
    timm = require("timm")
    if "." not in model_name:
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{model_name}.*")]
        hint = f" (e.g. timm:{model_name}.{tags[0]})" if tags else ""
        raise UserError(f"timm:{model_name}: name the pretrained weights too, timm:<model>.<tag>{hint}")
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not cfg.hf_hub_id:
        raise UserError(f"timm has no pretrained model {model_name!r} on the Hugging Face hub; "
                        "`python -c \"import timm; print(timm.list_pretrained('NAME*'))\"` lists them")
    with torch.device("meta"):
        probe = TimmFrameNet(model_name)
    tag = model_name.partition(".")[2]
    classifier = (cfg.classifier,) if isinstance(cfg.classifier, str) else tuple(cfg.classifier or ())
    files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_FILES
    size = int(cfg.input_size[-1])
    fixed = getattr(probe.net, "pos_embed", None) is not None  # absolute position embeddings (ViT)
    return BackboneSpec(
        name=f"{PREFIX}:{model_name}", kind="frame", family="timm", feature_dim=probe.feature_dim,
        stages=tuple(stage_params(probe.net)), input_size=size, clip_len=8,
        mean=tuple(cfg.mean), std=tuple(cfg.std),
        builder=lambda drop_path=0.0: TimmFrameNet(model_name, drop_path=drop_path),
        weights={tag: WeightTag(tag, tag, hf_repo=cfg.hf_hub_id, hf_files=files, loader=_loader(classifier),
                                note=f"timm pretrained tag ({cfg.license or 'see the model card'})")},
        min_input_size=size if fixed else 32, fixed_size=fixed, drop_path=True,
        description=f"timm {model_name} ({sum(p.numel() for p in probe.parameters()) / 1e6:.1f}M params)",
    )


def _cached() -> list[str]:
    return [repo.partition("/")[2] for repo in cached_repos("timm")]


register_family(Family(PREFIX, "frame", f"{PREFIX}:<model>.<pretrained tag>", make_spec, _cached))
