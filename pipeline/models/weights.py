"""Resolve a weight tag to a local file and load it safely.

A ``--weights`` value is, in this order of lookup:

1. ``none``: random initialisation;
2. a tag of the backbone (``imagenet1k``, ``kinetics400``…), found as
   a. the file shipped inside an installed package, or
   b. the torch hub cache: ``$TORCH_HOME/hub/checkpoints/<file name of the URL>``
      (where ``torch.hub`` and ``vtl weights fetch`` put downloads), or
   c. for a Hugging Face repository (``timm:``, ``hf:`` backbones), the Hugging Face cache:
      ``$HF_HOME/hub/models--ORG--NAME/snapshots/<refs/main>/<file>`` (where ``huggingface_hub``
      and ``vtl weights fetch`` put downloads);
3. a path to a file: raw weights for this backbone (official format or a plain
   state dict), or a checkpoint written by ``vtl train`` (how users transfer from
   their own *source* datasets: only its backbone part is used, so the source's
   class count does not matter).

Nothing is downloaded implicitly: a missing tag is one ``error:`` line giving the
URL and the exact cache path to copy the file to. Every file is read with
``torch.load(weights_only=True)``, so a pickle payload in a checkpoint is refused,
never executed. A file that does not fit the backbone (another architecture) is
one ``error:`` line too.

Official formats: torchvision files are plain state dicts of the full classifier
(``fc.weight`` …); pytorchvideo ``.pyth`` files hold ``{"model_state": ...}``.
Each spec's ``convert_state`` maps them onto the wrapper's keys (``net.`` prefix,
classifier dropped); a tag's ``loader`` can replace that step (2D→3D inflation).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import UserError
from pipeline.models.checkpoint import Checkpoint, is_checkpoint, load_torch_file
from pipeline.models.factory import build_backbone
from pipeline.models.hfcache import CONFIG, hf_cache_dir, hf_file, hf_snapshot, require
from pipeline.models.registry import (
    Backbone,
    BackboneSpec,
    WeightTag,
    check_state_fits,
    get_spec,
    split_name_tag,
)
from pipeline.progress import echo

# Containers other training code wraps a state dict in (pytorchvideo/SlowFast: model_state).
_STATE_KEYS = ("model_state", "state_dict", "model", "module")


def hub_cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def cache_path(tag: WeightTag) -> Path | None:
    if tag.hf_repo:
        return hf_snapshot(tag.hf_repo) / tag.hf_files[0]
    return hub_cache_dir() / tag.filename if tag.filename else None


def local_path(tag: WeightTag) -> Path | None:
    """Where this tag's file is on this machine (packaged file first, then the hub caches), or None."""
    if tag.hf_repo:
        return hf_file(tag.hf_repo, tag.hf_files)
    if tag.packaged is not None:
        try:
            p = tag.packaged()
        except Exception:  # the package is missing or broken: fall through to the cache
            p = None
        if p is not None and Path(p).is_file():
            return Path(p)
    cached = cache_path(tag)
    return cached if cached is not None and cached.is_file() else None


def missing_message(spec: BackboneSpec, tag: WeightTag) -> str:
    where = cache_path(tag)
    if tag.hf_repo:
        return (f"weights {spec.name}:{tag.tag} are not on this machine and vtl does not download during a run: "
                f"run `vtl weights fetch {spec.name}:{tag.tag}` where there is internet, or download "
                f"{' or '.join(tag.hf_files)} of the Hugging Face repo {tag.hf_repo} and "
                f"`vtl weights import FILE --backbone {spec.name} --tag {tag.tag}` (expected at {where})")
    if tag.url is None:
        return (f"weights {spec.name}:{tag.tag} ship in a package that is not installed here "
                f"({tag.note or 'reinstall vtl'})")
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
    tags = ", ".join(["none", *spec.weights])
    raise UserError(f"--weights {weights!r} is neither a tag of {spec.name} ({tags}) nor an existing file")


def read_file(path: Path) -> Any:
    """A weights file's contents: a ``.safetensors`` file (Hugging Face), else ``torch.load`` with
    ``weights_only=True``."""
    if path.suffix != ".safetensors":
        return load_torch_file(path)
    st = require("safetensors.torch")
    try:
        return st.load_file(str(path))
    except Exception as e:
        raise UserError(f"cannot read weights file {path}: {str(e).splitlines()[0][:200]}") from None


def unwrap_state(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a weights file: as is, or under ``model_state`` (pytorchvideo),
    ``state_dict``, ``model``; a DDP ``module.`` prefix is removed."""
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a state dict (it holds a {type(obj).__name__})")
    for _ in range(2):  # e.g. {"state_dict": {"model": ...}} at most
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _STATE_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise UserError(f"{path} holds no tensors: not a weights file")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _tag_for(spec: BackboneSpec, weights: str, path: Path) -> WeightTag | None:
    """The tag ``weights`` names, or the tag whose official file name ``path`` has."""
    if weights in spec.weights:
        return spec.weights[weights]
    return next((t for t in spec.weights.values() if t.filename and t.filename == path.name), None)


def apply_weights(backbone: Backbone, spec: BackboneSpec, weights: str) -> None:
    """Load ``weights`` into ``backbone`` in place (no-op for ``none``)."""
    path = resolve(spec, weights)
    if path is None:
        return
    obj = read_file(path)
    if is_checkpoint(obj):
        load_checkpoint_backbone(backbone, Checkpoint.from_contents(obj, path), spec, path)
        return
    state = unwrap_state(obj, path)
    tag = _tag_for(spec, weights, path)
    try:
        if tag is not None and tag.loader is not None:
            tag.loader(backbone, state)
        else:
            backbone.load_weights(spec.convert_state(state) if spec.convert_state else state)
    except UserError as e:
        raise UserError(f"{path} does not fit backbone {spec.name}: {e}") from None
    except RuntimeError as e:  # a load_state_dict problem the checks above did not foresee
        raise UserError(f"{path} does not fit backbone {spec.name}: {str(e).splitlines()[-1][:200]}") from None


def load_checkpoint_backbone(backbone: Backbone, ckpt: Checkpoint, spec: BackboneSpec, path: Path) -> None:
    """Start from the backbone of a ``vtl train`` checkpoint (the source run's head is not used, so
    the source's class count does not matter)."""
    if ckpt.backbone != spec.name:
        raise UserError(f"{path} was trained with backbone {ckpt.backbone!r}, not {spec.name!r}: "
                        f"use --backbone {ckpt.backbone} to start from it")
    try:
        note = backbone.load_trained_state(ckpt.backbone_state(), temporal=ckpt.temporal)
    except UserError as e:
        raise UserError(f"{path} does not fit backbone {spec.name}: {e}") from None
    if note:
        echo(f"weights: {path.name}: {note}")


# ----------------------------------------------------------------------------- fetch / import


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_hash(path: Path, tag: WeightTag, what: str) -> None:
    """Check ``path`` against the tag's published sha256 prefix (a no-op where none is published)."""
    prefix = tag.hash_prefix
    if prefix and not sha256(path).startswith(prefix):
        raise UserError(f"{path} does not match the published sha256 of {what} (expected prefix {prefix}): "
                        "a different or damaged file")


def fetch(name_tag: str) -> Path:
    """Download a tag into the torch hub cache (needs internet), checking its hash."""
    _fetch_hf_config(name_tag)
    spec, tag = parse_name_tag(name_tag)
    what = f"{spec.name}:{tag.tag}"
    if tag.hf_repo:
        return _fetch_hf(spec, tag)
    if tag.url is None:
        path = local_path(tag)
        if path is None:
            raise UserError(missing_message(spec, tag))
        return path
    dest = cache_path(tag)
    assert dest is not None
    if dest.is_file():
        verify_hash(dest, tag, what)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Verifies tag.hash_prefix itself, and only moves the file into place when it matches.
        torch.hub.download_url_to_file(tag.url, str(dest), hash_prefix=tag.hash_prefix, progress=True)
    except RuntimeError as e:
        if "invalid hash" in str(e):
            raise UserError(f"the download of {tag.url} does not match its published sha256 prefix "
                            f"{tag.hash_prefix}; nothing was saved") from None
        raise UserError(f"could not download {tag.url} ({str(e)[:120]}); offline, download it elsewhere and "
                        f"copy it to {dest} (or `vtl weights import FILE --backbone {spec.name} --tag {tag.tag}`)"
                        ) from None
    except Exception as e:  # URLError, timeouts, …
        raise UserError(f"could not download {tag.url} ({str(e)[:120]}); offline, download it elsewhere and "
                        f"copy it to {dest} (or `vtl weights import FILE --backbone {spec.name} --tag {tag.tag}`)"
                        ) from None
    return dest


def _fetch_hf_config(name_tag: str) -> None:
    """``hf:<repo>`` backbones are specified by the repository's config.json: fetch it first."""
    prefix, _, repo = split_name_tag(name_tag)[0].partition(":")
    if prefix == "hf" and not (hf_snapshot(repo) / CONFIG).is_file():
        _hf_download(repo, CONFIG, f"copy it to {hf_snapshot(repo) / CONFIG}")


def _fetch_hf(spec: BackboneSpec, tag: WeightTag) -> Path:
    """Download the first of the tag's files the repository has into the Hugging Face cache."""
    assert tag.hf_repo is not None
    found = local_path(tag)
    if found is not None:
        return found
    hub = require("huggingface_hub")
    for i, filename in enumerate(tag.hf_files):
        try:
            return _hf_download(tag.hf_repo, filename,
                                f"`vtl weights import FILE --backbone {spec.name} --tag {tag.tag}` "
                                f"(cache: {hf_snapshot(tag.hf_repo)})")
        except hub.errors.EntryNotFoundError:
            if i == len(tag.hf_files) - 1:
                raise UserError(f"the Hugging Face repo {tag.hf_repo} has none of {', '.join(tag.hf_files)}"
                                ) from None
    raise AssertionError("unreachable")


def _hf_download(repo: str, filename: str, offline_hint: str) -> Path:
    hub = require("huggingface_hub")
    try:
        return Path(hub.hf_hub_download(repo, filename, cache_dir=hf_cache_dir()))
    except Exception as e:  # offline, unknown repo, gated…
        if isinstance(e, hub.errors.EntryNotFoundError) and not isinstance(e, hub.errors.LocalEntryNotFoundError):
            raise  # the repo has no such file: the caller tries the next name
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise UserError(f"could not download {filename} of the Hugging Face repo {repo} ({reason}); offline, "
                        f"download it elsewhere and {offline_hint}") from None


def import_file(src: Path, backbone: str, tag_name: str) -> Path:
    """Copy a downloaded weights file to where the resolver looks for ``backbone:tag``,
    after checking it: readable with ``weights_only``, its published hash, and (for plain
    tags) that its tensors fit the backbone."""
    spec, tag = parse_name_tag(f"{backbone}:{tag_name}")
    dest = _import_destination(tag, src)
    if dest is None:
        raise UserError(f"{backbone}:{tag_name} ships in a package; there is nothing to import")
    state = unwrap_state(read_file(src), src)  # refuse anything that is not a plain weights file
    verify_hash(src, tag, f"{backbone}:{tag_name}")
    if tag.loader is None:
        _check_fits_on_meta(spec, state, src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dest)
    return dest


def _import_destination(tag: WeightTag, src: Path) -> Path | None:
    """Where an imported file goes: the hub cache, or for a Hugging Face repo its cached snapshot
    under the repo's file name of the same kind (``model.safetensors``, ``pytorch_model.bin``…)."""
    if not tag.hf_repo:
        return cache_path(tag)
    name = next((f for f in tag.hf_files if Path(f).suffix == src.suffix), None)
    if name is None:
        raise UserError(f"{src} is not one of the files of {tag.hf_repo} ({', '.join(tag.hf_files)})")
    return hf_snapshot(tag.hf_repo) / name


def _check_fits_on_meta(spec: BackboneSpec, state: dict, src: Path) -> None:
    """Compare keys and shapes with the backbone built on the meta device (no memory, no init cost)."""
    try:
        with torch.device("meta"):
            bb = build_backbone(spec)
    except Exception:  # a builder that cannot run on meta: skip the check, loading will do it
        return
    converted = spec.convert_state(state) if spec.convert_state else state
    try:
        check_state_fits(bb.pretrained_module(), converted)
    except UserError as e:
        raise UserError(f"{src} does not fit backbone {spec.name}: {e}") from None


def parse_name_tag(name_tag: str) -> tuple[BackboneSpec, WeightTag]:
    name, tag_name = split_name_tag(name_tag)
    spec = get_spec(name)
    if not tag_name:
        if not spec.weights:
            raise UserError(f"{name} has no pretrained weights")
        tag_name = next(iter(spec.weights))
    if tag_name not in spec.weights:
        raise UserError(f"{name} has no weight tag {tag_name!r} (tags: {', '.join(spec.weights) or 'none'})")
    return spec, spec.weights[tag_name]
