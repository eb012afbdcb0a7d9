"""One registry of backbones (timm-style): builder functions registered by name
with the metadata the rest of vtl needs.

A *backbone* here is an ``nn.Module`` that maps a clip ``(B, C, T, H, W)`` to
features ``(B, D)`` and names its stages (input → output) so strategies can
freeze "up to" a stage. Kinds:

* ``video``: a spatio-temporal network (3D/(2+1)D convolutions, transformers).
* ``frame``: a 2D ImageNet network applied to every frame and pooled over
  time (see :mod:`pipeline.models.temporal`); on an image workspace T = 1.

The built-in backbones live in :mod:`pipeline.models.zoo` (one module per
family); importing it registers them all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import UserError

KINDS = ("video", "frame")

# torchvision (and torch.hub) name weight files ``<name>-<first hex digits of the sha256>.<ext>``.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class WeightTag:
    """A named set of pretrained weights for one backbone.

    ``url`` is where ``vtl weights fetch`` downloads it from; the file name of
    the URL is also its name in the torch hub cache. ``packaged`` returns the
    path of weights shipped inside an installed package (no download at all).
    ``loader``, when set, replaces the plain convert-and-load path: it receives
    the backbone and the file's raw state dict (e.g. 2D→3D inflation).
    ``hf_repo``: the weights live in a Hugging Face hub repository instead (timm, transformers);
    they are looked up in the Hugging Face cache as the first of ``hf_files`` found there.
    """

    tag: str
    source: str  # the source dataset, e.g. "imagenet1k", "kinetics400"
    url: str | None = None
    sha256_prefix: str | None = None  # None: taken from a torchvision-style file name, if it has one
    packaged: Callable[[], Path] | None = None
    loader: Callable[[Backbone, dict], None] | None = None
    note: str = ""
    # The input normalisation these weights were trained with, when it is not the backbone's own
    # (2D ImageNet weights inflated into a Kinetics architecture): see BackboneSpec.normalization.
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    hf_repo: str | None = None
    hf_files: tuple[str, ...] = ()

    @property
    def filename(self) -> str | None:
        return self.url.rsplit("/", 1)[-1] if self.url else None

    @property
    def hash_prefix(self) -> str | None:
        """The published sha256 prefix of the file: explicit, or embedded in its name
        (``resnet18-f37072fd.pth`` → ``f37072fd``); None when nothing is published."""
        if self.sha256_prefix:
            return self.sha256_prefix
        m = _HASH_IN_NAME.search(self.filename or "")
        return m.group(1) if m else None


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    kind: str  # "video" or "frame"
    feature_dim: int
    stages: tuple[str, ...]
    input_size: int  # default crop size (pixels, square)
    clip_len: int  # default frames per clip
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    builder: Callable[..., nn.Module]
    weights: dict[str, WeightTag] = field(default_factory=dict)
    # How a weights file's keys map onto the backbone module (state dict → state dict).
    convert_state: Callable[[dict], dict] | None = None
    family: str = "torchvision"
    # Smallest input the architecture accepts; ``fixed_size``: only ``input_size`` works
    # (absolute position embeddings, e.g. ViT, MViT).
    min_clip_len: int = 1
    min_input_size: int = 32
    fixed_size: bool = False
    fixed_clip_len: bool = False
    # Stochastic depth: the builder takes a keyword ``drop_path: float`` (``vtl train --drop-path``).
    drop_path: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, not {self.kind!r}")

    def normalization(self, weights: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) of the input the network expects when it starts from ``weights``: the tag's
        own where it has one, else the backbone's (also for a file, a checkpoint or none)."""
        tag = self.weights.get(weights or "")
        return (tag.mean or self.mean, tag.std or self.std) if tag else (self.mean, self.std)


REGISTRY: dict[str, BackboneSpec] = {}


@dataclass(frozen=True)
class Family:
    """Backbones named ``<prefix>:<name>`` (``timm:<model>.<tag>``, ``hf:<repo id>``), specified on first
    use by ``make_spec(name)``; ``cached()`` lists the names whose files are on this machine."""

    prefix: str
    kind: str
    usage: str  # how to name one, e.g. "timm:<model>.<pretrained tag>"
    make_spec: Callable[[str], BackboneSpec]
    cached: Callable[[], list[str]]


FAMILIES: dict[str, Family] = {}
_BY_PREFIX: dict[str, BackboneSpec] = {}  # the specs made so far


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"backbone {spec.name} registered twice")
    REGISTRY[spec.name] = spec
    return spec


def register_family(family: Family) -> None:
    FAMILIES[family.prefix] = family


def get_spec(name: str) -> BackboneSpec:
    _load_builtin()
    prefix, sep, rest = name.partition(":")
    if sep and prefix in FAMILIES:
        if name not in _BY_PREFIX:
            _BY_PREFIX[name] = FAMILIES[prefix].make_spec(rest)
        return _BY_PREFIX[name]
    if name not in REGISTRY:
        close = get_close_matches(name, REGISTRY, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown backbone {name!r}{hint}; `vtl backbones` lists them "
                        f"({', '.join(f.usage for f in FAMILIES.values())} take models by name)")
    return REGISTRY[name]


def split_name_tag(name_tag: str) -> tuple[str, str]:
    """``NAME[:TAG]`` → (name, tag or ""); a family's name keeps its prefix:
    ``timm:convnext_tiny.fb_in22k:fb_in22k`` → (``timm:convnext_tiny.fb_in22k``, ``fb_in22k``)."""
    _load_builtin()
    first, _, rest = name_tag.partition(":")
    if first in FAMILIES:
        name, _, tag = rest.partition(":")
        return f"{first}:{name}", tag
    return first, rest


def list_specs(kind: str | None = None) -> list[BackboneSpec]:
    """Registered specs; ``kind`` ``image`` is an alias of ``frame`` (frame networks classify images)."""
    _load_builtin()
    if kind == "image":
        kind = "frame"
    return [s for s in REGISTRY.values() if kind is None or s.kind == kind]


def list_families(kind: str | None = None) -> list[Family]:
    _load_builtin()
    if kind == "image":
        kind = "frame"
    return [f for f in FAMILIES.values() if kind is None or f.kind == kind]


def cached_family_specs(kind: str | None = None) -> list[BackboneSpec]:
    """The specs of the family members whose files are in the local cache (``vtl backbones``); one
    that cannot be specified here (its package is missing, a damaged config) is left out."""
    specs = []
    for family in list_families(kind):
        for name in family.cached():
            try:
                specs.append(get_spec(f"{family.prefix}:{name}"))
            except UserError:
                continue
    return specs


def _load_builtin() -> None:
    # Importing the zoo package registers the built-in backbones.
    from pipeline.models import zoo  # noqa: F401


# ----------------------------------------------------------------------------- helpers for builders


def prefix_converter(prefix: str, drop: Iterable[str] = (), pattern: str | None = None) -> Callable[[dict], dict]:
    """A ``convert_state``: prepend ``prefix`` to every key, dropping keys that start with
    one of ``drop`` or match the regex ``pattern`` (the source classifier)."""
    drop = tuple(drop)
    rx = re.compile(pattern) if pattern else None

    def convert(state: dict) -> dict:
        return {prefix + k: v for k, v in state.items()
                if not (drop and k.startswith(drop)) and not (rx and rx.match(k))}

    return convert


class StageGroup(nn.Module):
    """A stage made of existing modules (and loose parameters such as a class token),
    built on the fly by ``stage_modules()``: it holds references, never copies, and is
    not registered in the backbone, so state-dict keys are unaffected."""

    def __init__(self, modules: Iterable[nn.Module] = (), params: Iterable[nn.Parameter] = ()):
        super().__init__()
        self.parts = nn.ModuleList(list(modules))
        self.loose = nn.ParameterList(list(params))


class Backbone(nn.Module):
    """Base class: ``forward(clip (B,C,T,H,W)) -> (B, feature_dim)``; ``stage_modules()``
    returns the ordered stages used for partial freezing.

    Two hooks tell :mod:`pipeline.models.weights` where weights go, so that it never has to
    inspect a backbone's attributes: :meth:`pretrained_module` (what a published weights file
    fits) and :meth:`load_trained_state` (the backbone part of a ``vtl train`` checkpoint).
    """

    feature_dim: int

    def stage_modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def pretrained_module(self) -> nn.Module:
        """The module a published weights file fits once converted (``spec.convert_state``):
        the backbone itself here; a frame network pooled over time returns its frame network."""
        return self

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Load a published state dict (already converted to :meth:`pretrained_module`'s keys).

        Every key must be present with the same shape, both ways: a file from another
        architecture is one clear :class:`UserError`, not a ``load_state_dict`` trace.
        """
        load_checked(self.pretrained_module(), state)

    def load_trained_state(self, state: dict[str, torch.Tensor], *, temporal: str) -> str | None:
        """Load the backbone part of a ``vtl train`` checkpoint trained with ``temporal`` pooling;
        returns a note for the user when part of it was deliberately left out."""
        load_checked(self, state)
        return None


def load_checked(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict(strict=True)`` after :func:`check_state_fits`, so a mismatch is one line."""
    check_state_fits(module, state)
    module.load_state_dict(state, strict=True)


def check_state_fits(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise a one-line :class:`UserError` unless ``state`` matches ``module`` key for key and shape
    for shape; the message says what differs (the caller prefixes which file and backbone)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and hasattr(state[k], "shape")
             and tuple(state[k].shape) != tuple(own[k].shape)]
    not_tensors = [k for k in state if k in own and not isinstance(state[k], torch.Tensor)]
    if not (missing or unexpected or wrong or not_tensors):
        return
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} tensors of another shape (e.g. {k}: file {tuple(state[k].shape)} vs "
                     f"model {tuple(own[k].shape)})")
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:2])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:2])})")
    if not_tensors:
        parts.append(f"{len(not_tensors)} entries that are not tensors (e.g. {not_tensors[0]})")
    raise UserError("; ".join(parts) + " (was it saved from another architecture?)")
