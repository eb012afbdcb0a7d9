"""``root/<class>/<image>``: one folder per class of images, no official split."""

from __future__ import annotations

from pathlib import Path

from pipeline.data.formats.base import IMAGE_EXTENSIONS, FormatResult
from pipeline.data.formats.folder import list_class_folders


def read(root: Path, splits: Path | None = None, fold: int = 1) -> FormatResult:
    """Read an image-folder dataset; ``splits`` and ``fold`` are unused."""
    return list_class_folders(root, IMAGE_EXTENSIONS)
