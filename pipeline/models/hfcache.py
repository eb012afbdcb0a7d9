"""The Hugging Face hub cache, read without huggingface_hub (so that resolving a file never imports
it, and the environment is read at each call, not once at import):

``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``, then
``models--ORG--NAME/{refs/main, snapshots/<commit>/FILE, blobs/}`` per repository.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from pipeline.errors import UserError

CONFIG = "config.json"  # a model repository's configuration (transformers; timm's pretrained_cfg)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at each call as huggingface_hub does
    at import: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def hf_repo_dir(repo_id: str) -> Path:
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def hf_snapshot(repo_id: str) -> Path:
    """The snapshot folder ``refs/main`` points to (``snapshots/main`` when there is no ref yet)."""
    repo = hf_repo_dir(repo_id)
    ref = repo / "refs" / "main"
    return repo / "snapshots" / (ref.read_text().strip() if ref.is_file() else "main")


def hf_file(repo_id: str, filenames: tuple[str, ...]) -> Path | None:
    """The first of ``filenames`` in the cached snapshot of ``repo_id``, or None."""
    snapshot = hf_snapshot(repo_id)
    return next((snapshot / f for f in filenames if (snapshot / f).is_file()), None)


def cached_repos(org: str | None = None) -> list[str]:
    """The repo ids in the cache (``ORG/NAME``), only ``org``'s when given, sorted."""
    root = hf_cache_dir()
    if not root.is_dir():
        return []
    repos = [d.name[len("models--"):].replace("--", "/", 1) for d in root.glob("models--*--*") if d.is_dir()]
    return sorted(r for r in repos if org is None or r.startswith(org + "/"))


def require(module: str, extra: str = "hub") -> ModuleType:
    """Import an optional package, or one error line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{module} is not installed: pip install 'vtl[{extra}]'") from None
