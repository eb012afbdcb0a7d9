"""``root/<class>/<image>`` or ``root/<split>/<class>/<image>``: folders of images (see ``folder``)."""

from __future__ import annotations

from pathlib import Path

from pipeline.data.formats.base import IMAGE_EXTENSIONS, FormatOptions, FormatResult
from pipeline.data.formats.folder import read_layout


def read(opts: FormatOptions) -> FormatResult:
    """An image-folder dataset, with or without split folders (no frame folders: images are samples)."""
    return read_layout(Path(opts.root), IMAGE_EXTENSIONS, frame_folders=False)
