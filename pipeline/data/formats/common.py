"""Helpers shared by the dataset-format readers: list files, split folders, walking a tree."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.data.formats.base import VIDEO_EXTENSIONS
from pipeline.errors import UserError

FOLDS = (1, 2, 3)
MISSING = "listed in split file but missing on disk"


def read_list_lines(file: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, whitespace-separated fields)`` of a text list file.

    Tolerates a BOM, CRLF and blank lines; undecodable bytes are a :class:`UserError`.
    """
    if not file.is_file():
        raise UserError(f"split file {file} does not exist")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{file}: not a UTF-8 text file ({err.reason} at byte {err.start})") from err
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields:
            yield lineno, fields


def find_splits_dir(root: Path, splits: Path | None, name: str, marker: str) -> Path:
    """The split folder: ``splits`` if given, else ``root/<name>`` or ``root/../<name>``.

    ``marker`` is a glob that a split folder matches (``classInd.txt``). A folder that
    holds ``<name>/`` is accepted too, since the archive unpacks to ``<name>/`` and
    users often point at its parent.
    """
    candidates = [splits, splits / name] if splits is not None else [root / name, root.parent / name]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob(marker)):
            return folder
    if splits is not None:
        raise UserError(f"--splits {splits} has no {marker} (expected the {name} folder)")
    raise UserError(f"no {name} folder found in or beside {root}; pass --splits <{name} folder>")


def require_root(root: Path) -> None:
    if not root.is_dir():
        raise UserError(f"dataset root {root} does not exist or is not a folder")


def walk_files(root: Path, extensions: frozenset[str] = VIDEO_EXTENSIONS) -> Iterator[Path]:
    """Every file under ``root`` with one of ``extensions``, in a stable order.

    Symlinked folders are followed (datasets are often assembled from links) but
    each real folder is walked once, so a link loop cannot hang the reader.
    """
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                yield Path(dirpath) / name


def require_fold(fold: int) -> None:
    if fold not in FOLDS:
        raise UserError(f"--fold must be 1, 2 or 3 (got {fold})")


def walk_videos(root: Path) -> Iterator[Path]:
    return walk_files(root, VIDEO_EXTENSIONS)
