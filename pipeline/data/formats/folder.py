"""``root/<class>/<file>``: one folder per class, no official split."""

from __future__ import annotations

from pathlib import Path

from pipeline.data.formats.base import VIDEO_EXTENSIONS, FormatResult, Row
from pipeline.data.formats.common import LINK_SKIPPED, inode, walk_files
from pipeline.errors import UserError


def list_class_folders(root: Path, extensions: frozenset[str]) -> FormatResult:
    """Rows for every file with a known extension under ``root/<class>/``.

    Sub-folders of a class folder are walked too (some datasets nest by
    group); symlinked directories are followed once. A link that loops back
    up, or into another class folder (its files would get this class's label),
    is skipped and quarantined.
    """
    if not root.is_dir():
        raise UserError(f"dataset root {root} does not exist or is not a folder")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"dataset root {root} has no class folders (expected root/<class>/<file>)")
    result = FormatResult()
    seen = {inode(c) for c in classes}
    skipped: list[Path] = []
    for class_dir in classes:
        files = walk_files(class_dir, extensions, seen=seen, skipped=skipped)
        result.rows.extend(Row(path=path, label=class_dir.name) for path in files)
    result.quarantined.extend((str(p), LINK_SKIPPED) for p in skipped)
    return result


def read(root: Path, splits: Path | None = None, fold: int = 1) -> FormatResult:
    """Read a folder-per-class video dataset; ``splits`` and ``fold`` are unused."""
    return list_class_folders(root, VIDEO_EXTENSIONS)
