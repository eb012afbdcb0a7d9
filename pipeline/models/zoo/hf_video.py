"""Video backbones from transformers by Hugging Face repo id: ``--backbone hf:<repo id>`` for VideoMAE
(Tong et al. 2022), e.g. ``hf:MCG-NJU/videomae-base`` (self-supervised on Kinetics-400) and
``hf:MCG-NJU/videomae-base-finetuned-kinetics``.

The network is ``transformers.VideoMAEModel`` built from the repo's ``config.json`` in the Hugging Face
cache (so the config must be there before the backbone can be named: ``vtl weights fetch``); its
features are the mean of the last hidden states. The repo's weights (``model.safetensors`` or
``pytorch_model.bin``) hold a ``VideoMAEForVideoClassification`` or ``VideoMAEForPreTraining``: the
``videomae.`` part is the backbone; the rest (classifier and its ``fc_norm``, or the pre-training
decoder) is dropped. The one weight tag is ``hub``.

transformers' VideoMAE has no stochastic depth, so these backbones do not take ``drop_path``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.models.hfcache import CONFIG, cached_repos, hf_snapshot, require
from pipeline.models.registry import Backbone, BackboneSpec, Family, WeightTag, load_checked, register_family

PREFIX = "hf"
TAG = "hub"
HF_FILES = ("model.safetensors", "pytorch_model.bin")
PREPROCESSOR = "preprocessor_config.json"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # VideoMAEImageProcessor's defaults
NUM_STAGES = 4  # transformer layers in 4 contiguous groups (base: 12 layers, 3 per stage)
BACKBONE_KEY = "videomae."  # the backbone's keys in the repo's classification / pre-training models


class VideoMAE(Backbone):
    """``transformers.VideoMAEModel``: ``(B, C, T, H, W) -> (B, hidden_size)`` (mean of the tokens)."""

    def __init__(self, config_path: Path, drop_path: float = 0.0) -> None:
        super().__init__()
        if drop_path:
            raise UserError("VideoMAE (transformers) has no drop-path: leave it at 0")
        transformers = require("transformers")
        config = transformers.VideoMAEConfig.from_json_file(str(config_path))
        self.net = transformers.VideoMAEModel(config)
        self.feature_dim = config.hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.net(pixel_values=x.transpose(1, 2)).last_hidden_state  # the model takes (B, T, C, H, W)
        return hidden.mean(dim=1)

    def pretrained_module(self) -> nn.Module:
        return self.net

    def stage_modules(self) -> dict[str, nn.Module]:
        layers = list(self.net.encoder.layer)
        per = -(-len(layers) // NUM_STAGES)
        stages: dict[str, nn.Module] = {"stem": self.net.embeddings}
        stages.update({f"stage{i // per + 1}": nn.ModuleList(layers[i:i + per]) for i in range(0, len(layers), per)})
        if self.net.layernorm is not None:
            stages["head"] = self.net.layernorm
        return stages


def load_videomae(backbone: Backbone, state: dict) -> None:
    """The ``hub`` loader: the ``videomae.`` tensors of the repo's file, nothing else."""
    ours = {k[len(BACKBONE_KEY):]: v for k, v in state.items() if k.startswith(BACKBONE_KEY)}
    load_checked(backbone.pretrained_module(), ours)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {str(e)[:120]}") from None


def make_spec(repo: str) -> BackboneSpec:
    """The spec of ``hf:<repo>`` from the repo's ``config.json`` in the Hugging Face cache."""
    snapshot = hf_snapshot(repo)
    config_path = snapshot / CONFIG
    if not config_path.is_file():
        raise UserError(f"hf:{repo}: the {CONFIG} of the Hugging Face repo {repo} is not on this machine and vtl "
                        f"does not download during a run: run `vtl weights fetch hf:{repo}` where there is "
                        f"internet (expected at {config_path})")
    config = _read_json(config_path)
    if config.get("model_type") != "videomae":
        raise UserError(f"hf:{repo} is a {config.get('model_type')!r} model; hf: backbones are VideoMAE")
    pre = _read_json(snapshot / PREPROCESSOR) if (snapshot / PREPROCESSOR).is_file() else {}
    size, frames = int(config.get("image_size", 224)), int(config.get("num_frames", 16))
    layers = int(config.get("num_hidden_layers", 12))
    n_stages = -(-layers // -(-layers // NUM_STAGES))
    head = () if config.get("use_mean_pooling", True) else ("head",)
    return BackboneSpec(
        name=f"{PREFIX}:{repo}", kind="video", family="transformers", feature_dim=int(config.get("hidden_size", 768)),
        stages=("stem", *(f"stage{i + 1}" for i in range(n_stages)), *head), input_size=size, clip_len=frames,
        mean=tuple(pre.get("image_mean", IMAGENET_MEAN)), std=tuple(pre.get("image_std", IMAGENET_STD)),
        builder=lambda drop_path=0.0: VideoMAE(config_path, drop_path=drop_path),
        weights={TAG: WeightTag(TAG, repo, hf_repo=repo, hf_files=HF_FILES, loader=load_videomae,
                                note=f"the weights of the Hugging Face repo {repo}")},
        # Position embeddings and the tubelet patching are sized for num_frames x image_size.
        min_clip_len=frames, min_input_size=size, fixed_size=True, fixed_clip_len=True,
        description=f"VideoMAE {layers} layers x {config.get('hidden_size')} (transformers), {frames}x{size} px only",
    )


def _cached() -> list[str]:
    """Cached repos whose config says VideoMAE."""
    def is_videomae(repo: str) -> bool:
        config = hf_snapshot(repo) / CONFIG
        return config.is_file() and '"videomae"' in config.read_text().replace(" ", "")

    return [repo for repo in cached_repos() if is_videomae(repo)]


register_family(Family(PREFIX, "video", f"{PREFIX}:<repo id> (VideoMAE)", make_spec, _cached))
