"""Shared types of the dataset-format readers.

A reader turns a dataset on disk into rows of (path, label, split). It never
decodes media: probing happens later, in the prepare stage, for every format
alike. Files a reader can already tell are unusable (named in a split list but
missing on disk, say) go to ``quarantined`` with a reason, so the stage goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv"}
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})


@dataclass(frozen=True)
class Row:
    """One sample of a dataset. ``split`` is ``train``/``val``/``test`` or ``""``
    when the format has no official split (the prepare stage then assigns one)."""

    path: Path
    label: str
    split: str = ""


@dataclass
class FormatResult:
    rows: list[Row] = field(default_factory=list)
    # (path, reason) of entries that cannot be used, e.g. listed but missing.
    quarantined: list[tuple[str, str]] = field(default_factory=list)
