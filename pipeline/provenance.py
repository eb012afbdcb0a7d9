"""Where a result came from: the one home of a run's provenance record.

:func:`collect` is what every run writes (``config.yaml`` of a training run, ``metrics.json`` of an
evaluation, a benchmark's and the demo's ``summary.json``): the versions of vtl and of the packages
the numbers depend on, the CUDA/cuDNN versions and GPUs when present, the git commit of vtl when it
runs from a checkout, the host, the full command line, start and end times, and the clip and feature
cache keys used. :func:`one_line` is its short form for reports. Nothing here imports torch unless it
is already imported (a run has imported it; ``--help`` has not).
"""

from __future__ import annotations

import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline import __version__

# The distributions whose versions a result depends on (besides vtl and python).
PACKAGES = ("torch", "torchvision", "pytorchvideo", "av", "decord", "numpy")
KEY = "provenance"  # the key under which config.yaml, metrics.json and summary.json hold it


def now() -> str:
    """UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def collect(*, started: str | None = None, clip_cache: str | None = None,
            feature_cache: str | None = None) -> dict[str, Any]:
    """This process's provenance: environment, command line, ``started`` (default: now) and the cache
    keys; :func:`finish` adds the end time."""
    return {"vtl_version": __version__, "python": platform.python_version(), "packages": _packages(),
            **_accelerator(), "git_commit": _git_commit(), "hostname": socket.gethostname(),
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]), "started": started or now(),
            "finished": None, "clip_cache": clip_cache, "feature_cache": feature_cache}


def finish(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "finished": now()}


def one_line(record: dict[str, Any] | None) -> str:
    """``vtl 0.1.0 (git abc1234) · torch 2.x · cpu · host · 2026-…``: the report's provenance line."""
    if not record:
        return "provenance: not recorded"
    commit = f" (git {record['git_commit'][:7]})" if record.get("git_commit") else ""
    packages = record.get("packages") or {}
    device = ", ".join(record.get("gpus") or []) or "cpu"
    return (f"provenance: vtl {record.get('vtl_version')}{commit} · python {record.get('python')} · "
            f"torch {packages.get('torch')} · {device} · {record.get('hostname')} · {record.get('started')}")


@lru_cache(maxsize=1)
def _packages() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _accelerator() -> dict[str, Any]:
    """CUDA and cuDNN versions and GPU names; None and [] without a GPU (or before torch is loaded)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {"cuda": None, "cudnn": None, "gpus": []}
    return {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}


@lru_cache(maxsize=1)
def _git_commit() -> str | None:
    """The commit of the checkout vtl runs from (``+dirty`` with uncommitted changes); None when vtl is
    installed from a package."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head
