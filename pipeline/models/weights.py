"""Resolve a weight tag to a local file and load it safely.

A ``--weights`` value is, in this order of lookup:

1. ``none``: random initialisation;
2. a tag of the backbone (``imagenet1k``, ``kinetics400``…), found as
   a. the file shipped inside an installed package, or
   b. the torch hub cache: ``$TORCH_HOME/hub/checkpoints/<file name of the URL>``
      (where ``torch.hub`` and ``vtl weights fetch`` put downloads);
3. a path to a file: raw weights for this backbone, or a checkpoint written by
   ``vtl train`` (how users transfer from their own *source* datasets).

Nothing is downloaded implicitly: a missing tag is one ``error:`` line giving the
URL and the exact cache path to copy the file to. Every file is read with
``torch.load(weights_only=True)``, so a pickle payload in a checkpoint is refused,
never executed.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import UserError
from pipeline.models.registry import Backbone, BackboneSpec, WeightTag, get_spec

CHECKPOINT_KIND = "vtl-checkpoint"


def hub_cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def cache_path(tag: WeightTag) -> Path | None:
    return hub_cache_dir() / tag.filename if tag.filename else None


def local_path(tag: WeightTag) -> Path | None:
    """Where this tag's file is on this machine, or None."""
    if tag.packaged is not None:
        try:
            p = tag.packaged()
        except ImportError:
            p = None
        if p is not None and p.is_file():
            return p
    cached = cache_path(tag)
    return cached if cached is not None and cached.is_file() else None


def missing_message(spec: BackboneSpec, tag: WeightTag) -> str:
    where = cache_path(tag)
    if tag.url is None:
        return f"weights {spec.name}:{tag.tag} ship in a package that is not installed"
    return (f"weights {spec.name}:{tag.tag} are not on this machine and vtl does not download during a run: "
            f"run `vtl weights fetch {spec.name}:{tag.tag}` where there is internet, or download {tag.url} "
            f"and copy it to {where}")


def resolve(spec: BackboneSpec, weights: str) -> Path | None:
    """The file for ``weights`` (a tag or a path); None for ``none``."""
    if weights == "none":
        return None
    if weights in spec.weights:
        tag = spec.weights[weights]
        path = local_path(tag)
        if path is None:
            raise UserError(missing_message(spec, tag))
        return path
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    tags = ", ".join(["none", *spec.weights]) or "none"
    raise UserError(f"--weights {weights!r} is neither a tag of {spec.name} ({tags}) nor an existing file")


def load_file(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Weights only load failed" in str(e) or "Unsupported global" in str(e):
            raise UserError(f"refusing to load {path}: it holds pickled objects beyond tensors "
                            "(weights_only loading; the payload was not executed)") from None
        raise UserError(f"cannot read weights file {path}: {text[:200]}") from None


def is_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("kind") == CHECKPOINT_KIND


def apply_weights(backbone: Backbone, spec: BackboneSpec, weights: str) -> None:
    """Load ``weights`` into ``backbone`` in place (no-op for ``none``)."""
    path = resolve(spec, weights)
    if path is None:
        return
    obj = load_file(path)
    if is_checkpoint(obj):
        state = backbone_state_from_checkpoint(obj, spec, path)
    else:
        if not isinstance(obj, dict):
            raise UserError(f"{path} is not a state dict")
        state = spec.convert_state(obj) if spec.convert_state else obj
    try:
        backbone.load_weights(state)
    except RuntimeError as e:  # size mismatches from load_state_dict
        raise UserError(f"{path} does not fit backbone {spec.name}: {str(e).splitlines()[-1][:200]}") from None


def backbone_state_from_checkpoint(ckpt: dict, spec: BackboneSpec, path: Path) -> dict:
    """The backbone part of a ``vtl train`` checkpoint, checked against ``spec``."""
    if ckpt.get("backbone") != spec.name:
        raise UserError(f"{path} was trained with backbone {ckpt.get('backbone')!r}, not {spec.name!r}")
    prefix = "backbone."
    return {k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(name_tag: str) -> Path:
    """Download a tag into the torch hub cache (needs internet), checking its hash."""
    spec, tag = parse_name_tag(name_tag)
    if tag.url is None:
        path = local_path(tag)
        if path is None:
            raise UserError(missing_message(spec, tag))
        return path
    dest = cache_path(tag)
    assert dest is not None
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(tag.url, str(dest), hash_prefix=tag.sha256_prefix, progress=True)
    except Exception as e:
        raise UserError(f"could not download {tag.url} ({str(e)[:120]}); offline, copy the file to {dest}") from None
    return dest


def import_file(src: Path, backbone: str, tag_name: str) -> Path:
    """Copy a downloaded weights file to where the resolver looks for ``backbone:tag``."""
    spec = get_spec(backbone)
    if tag_name not in spec.weights:
        raise UserError(f"{backbone} has no weight tag {tag_name!r} (tags: {', '.join(spec.weights) or 'none'})")
    tag = spec.weights[tag_name]
    dest = cache_path(tag)
    if dest is None:
        raise UserError(f"{backbone}:{tag_name} ships in a package; there is nothing to import")
    obj = load_file(src)  # refuse anything that is not a plain weights file before copying
    if not isinstance(obj, dict):
        raise UserError(f"{src} is not a state dict")
    if tag.sha256_prefix and not sha256(src).startswith(tag.sha256_prefix):
        raise UserError(f"{src} does not match the published hash of {backbone}:{tag_name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dest)
    return dest


def parse_name_tag(name_tag: str) -> tuple[BackboneSpec, WeightTag]:
    name, _, tag_name = name_tag.partition(":")
    spec = get_spec(name)
    if not tag_name:
        if not spec.weights:
            raise UserError(f"{name} has no pretrained weights")
        tag_name = next(iter(spec.weights))
    if tag_name not in spec.weights:
        raise UserError(f"{name} has no weight tag {tag_name!r} (tags: {', '.join(spec.weights) or 'none'})")
    return spec, spec.weights[tag_name]
