"""Shared types of the dataset-format readers.

A reader takes the user's :class:`FormatOptions` and turns a dataset on disk into
rows of (path, label, split). It never decodes media: probing happens later, in
the prepare stage, for every format alike. Files a reader can already tell are
unusable (named in a split list but missing on disk, say) go to ``quarantined``
with a reason, so the stage goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")
# What users call their split folders and split columns (compared lower-cased).
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv"}
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
# Files that list inputs (`vtl predict`): a CSV with a path column, or one path per line.
LIST_EXTENSIONS = frozenset({".csv", ".tsv", ".txt", ".lst", ".list"})


@dataclass(frozen=True)
class Row:
    """One sample of a dataset. ``split`` is ``train``/``val``/``test`` or ``""``
    when the format has no official split (the prepare stage then assigns one)."""

    path: Path
    label: str
    split: str = ""


@dataclass(frozen=True)
class FormatOptions:
    """What a reader is told: one object, so a format that needs one more input
    adds a field here instead of changing every reader's signature."""

    root: Path
    splits: Path | None = None  # official split/annotation files (ucf101, hmdb51, kinetics, ssv2, dogs)
    fold: int = 1  # official fold (ucf101, hmdb51)
    annotations: tuple[str, ...] = ()  # csv: "[SPLIT=]FILE" annotation files
    classes: Path | None = None  # csv: class names, for integer labels


@dataclass
class FormatResult:
    rows: list[Row] = field(default_factory=list)
    # (path, reason) of entries that cannot be used, e.g. listed but missing.
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    # The splits the prepare stage carves (stratified) out of the train rows and the rows
    # without a split. A split the dataset defines is never carved, even when every one of its
    # files turns out unusable: an official test set must not be refilled from train.
    carve: tuple[str, ...] = ("val", "test")
    # How the reader understood the root, shown to the user ("" = nothing worth saying).
    layout: str = ""
