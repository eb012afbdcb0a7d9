"""Dataset-format readers: one module per format, each exposing
``read(opts: FormatOptions) -> FormatResult``.

``FORMATS`` maps the ``--format`` name to its reader and media kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.data.formats import csvlist, folder, hmdb51, images, kinetics, ssv2, stanford_dogs, ucf101
from pipeline.data.formats.base import FormatOptions, FormatResult, Row

__all__ = ["FORMATS", "FormatOptions", "FormatResult", "Row", "FormatSpec"]


@dataclass(frozen=True)
class FormatSpec:
    name: str
    media: str  # "video" or "image"
    read: Callable[[FormatOptions], FormatResult]


FORMATS: dict[str, FormatSpec] = {
    "folder": FormatSpec("folder", "video", folder.read),
    "csv": FormatSpec("csv", "video", csvlist.read),
    "ucf101": FormatSpec("ucf101", "video", ucf101.read),
    "hmdb51": FormatSpec("hmdb51", "video", hmdb51.read),
    "kinetics": FormatSpec("kinetics", "video", kinetics.read),
    "ssv2": FormatSpec("ssv2", "video", ssv2.read),
    "images": FormatSpec("images", "image", images.read),
    "stanford_dogs": FormatSpec("stanford_dogs", "image", stanford_dogs.read),
}
