"""Dataset-format readers: one module per format, each exposing
``read(root, splits=None, fold=1) -> FormatResult``.

``FORMATS`` maps the ``--format`` name to its reader and media kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.formats import folder
from pipeline.data.formats.base import FormatResult, Row

__all__ = ["FORMATS", "FormatResult", "Row", "FormatSpec"]


@dataclass(frozen=True)
class FormatSpec:
    name: str
    media: str  # "video" or "image"
    read: Callable[[Path, Path | None, int], FormatResult]


FORMATS: dict[str, FormatSpec] = {
    "folder": FormatSpec("folder", "video", folder.read),
}
