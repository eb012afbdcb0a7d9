"""Clip cache and feature cache.

Clip cache (``clips/<sampling key>/``): one ``<video id>.npy`` per video holding
a uint8 array ``(views, T, H, W, 3)``. Each file is written to a temp name and
renamed, so a file under its final name is always complete: "resume" is simply
"sample what has no file yet". Reads are memory-mapped.

Feature cache (``features/<backbone>@<weights>@<temporal>@<sampling key>@<size>/``, named by
:func:`feature_key`): per split,
``<split>.npy`` (float32, all views of all videos stacked), ``<split>.offsets.npy``
(view ranges per video) and ``<split>.ids.json``; written atomically per split.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from pipeline import __version__
from pipeline.errors import UserError
from pipeline.files import atomic_write, path_safe, write_json


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        np.save(f, array)


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


class ClipCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def init(self, params: dict, *, remove_temp: bool = True) -> None:
        """Record the sampling parameters; refuse to mix two samplings in one folder.

        Called under the exclusive workspace lock, temp files left here were abandoned by a
        killed run (or a full disk): remove them, they may be large. Shards of one sampling
        share the folder (``remove_temp=False``): another shard's temp files are live.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".*.tmp") if remove_temp else ():
            stale.unlink(missing_ok=True)
        existing = self.params()
        if existing and existing.get("sampling") != params:
            raise UserError(f"clip cache {self.root} holds another sampling; use --force to resample")
        if not existing:
            write_json(self.root / "params.json", {"vtl_version": __version__, "sampling": params})

    def params(self) -> dict:
        p = self.root / "params.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def path(self, video_id: str) -> Path:
        return self.root / f"{video_id}.npy"

    def has(self, video_id: str) -> bool:
        return self.path(video_id).is_file()

    def write(self, video_id: str, clips: np.ndarray) -> None:
        if clips.dtype != np.uint8 or clips.ndim != 5:
            raise ValueError(f"clips must be uint8 (V, T, H, W, C), got {clips.dtype} {clips.shape}")
        save_npy_atomic(self.path(video_id), clips)

    def read(self, video_id: str) -> np.ndarray:
        """Memory-mapped ``(views, T, H, W, 3)`` uint8."""
        return np.load(self.path(video_id), mmap_mode="r")

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("*.npy"))


class FeatureCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def has(self, split: str) -> bool:
        return (self.root / f"{split}.ids.json").is_file()

    def write(self, split: str, ids: list[str], features: np.ndarray, offsets: np.ndarray) -> None:
        # The ids file is renamed in last: it marks the split as complete.
        save_npy_atomic(self.root / f"{split}.npy", features.astype(np.float32))
        save_npy_atomic(self.root / f"{split}.offsets.npy", offsets.astype(np.int64))
        write_json(self.root / f"{split}.ids.json", ids)

    def read(self, split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        ids = json.loads((self.root / f"{split}.ids.json").read_text())
        feats = np.load(self.root / f"{split}.npy")
        offsets = np.load(self.root / f"{split}.offsets.npy")
        return ids, feats, offsets

    def covers(self, split: str, ids: list[str]) -> bool:
        """True when ``split`` is cached for exactly these videos, in this order."""
        return self.has(split) and json.loads((self.root / f"{split}.ids.json").read_text()) == ids

    def forget(self, split: str) -> None:
        """Mark ``split`` as not cached (its ids file marks it complete)."""
        (self.root / f"{split}.ids.json").unlink(missing_ok=True)


def feature_key(backbone: str, weights: str, temporal: str, sampling: str, size: int) -> str:
    """The feature cache's name: what the frozen features depend on."""
    w = weights
    if Path(weights).is_file():  # a user's checkpoint: key by content, not by path
        w = "file-" + hashlib.blake2b(Path(weights).read_bytes(), digest_size=6).hexdigest()
    return f"{path_safe(backbone)}@{w}@{temporal}@{sampling}@{size}"
