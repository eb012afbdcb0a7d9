"""Helpers shared by the dataset-format readers: list files, split folders, walking a tree
(with or without frame folders)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.data.formats.base import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from pipeline.data.formats.frames import is_frame_name
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


LINK_SKIPPED = "symlink loop or repeated folder link: skipped"


def inode(path: Path | str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def walk_files(root: Path, extensions: frozenset[str] = VIDEO_EXTENSIONS, *,
               seen: set[tuple[int, int]] | None = None, skipped: list[Path] | None = None) -> Iterator[Path]:
    """Every file under ``root`` with one of ``extensions``, in a stable order.

    Symlinked folders are followed (datasets are often assembled from links) but
    each real folder is walked once: a link to ``root``, to one of its ancestors
    (a loop) or to a folder in ``seen`` (walked already, or reserved by the
    caller, e.g. the other class folders) is not entered, and is appended to
    ``skipped``. ``root`` itself is always walked.
    """
    for dirpath, dirnames, filenames in _walk_once(root, seen, skipped):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                yield Path(dirpath) / name


def walk_entries(root: Path, extensions: frozenset[str] = VIDEO_EXTENSIONS, *,
                 seen: set[tuple[int, int]] | None = None, skipped: list[Path] | None = None,
                 unreadable: list[tuple[Path, str]] | None = None) -> Iterator[Path]:
    """Like :func:`walk_files`, but a folder below ``root`` may itself be an entry: a frame folder.

    How a folder is told apart (docs/data.md, "Frame folders"), checked in this order:

    1. it holds video files: a group folder, walked (images beside the videos are ignored);
    2. it holds numbered images (``img_00001.jpg``, ``00001.png``): a frame folder, yielded
       and not entered (sub-folders of a frame folder, e.g. extracted flow, are not videos);
    3. it holds sub-folders: a group folder, walked;
    4. it is empty, or holds only images without a number: a frame folder that went wrong
       (an extraction that wrote nothing), yielded so that probing quarantines it with its reason;
    5. anything else (only text files, say) is ignored, as before.

    A folder that cannot be listed is appended to ``unreadable`` with the reason.
    """
    def failed(err: OSError) -> None:
        if unreadable is not None:
            unreadable.append((Path(err.filename), f"cannot list folder: {err.strerror or err}"))

    for dirpath, dirnames, filenames in _walk_once(root, seen, skipped, onerror=failed):
        visible = [n for n in filenames if not n.startswith(".")]
        videos = sorted(n for n in visible if os.path.splitext(n)[1].lower() in extensions)
        if dirpath != str(root) and not videos and _is_frame_folder(visible, dirnames):
            dirnames[:] = []
            yield Path(dirpath)
            continue
        dirnames.sort()
        for name in videos:
            yield Path(dirpath) / name


def walk_media(root: Path) -> Iterator[Path]:
    """What ``vtl predict`` classifies under ``root``: every video, every image, and every frame folder
    (a folder with numbered images and no video, ``root`` itself included), in a stable order.
    Other files are ignored; a frame folder is not entered."""
    for dirpath, dirnames, filenames in _walk_once(root, None, None):
        visible = sorted(n for n in filenames if not n.startswith("."))
        videos = [n for n in visible if os.path.splitext(n)[1].lower() in VIDEO_EXTENSIONS]
        if not videos and any(is_frame_name(n) for n in visible):
            dirnames[:] = []
            yield Path(dirpath)
            continue
        dirnames.sort()
        for name in visible:
            if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS:
                yield Path(dirpath) / name


def _walk_once(root: Path, seen: set[tuple[int, int]] | None, skipped: list[Path] | None,
               onerror: Callable[[OSError], None] | None = None) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` following links, but entering each real folder once: a link to ``root``, to one of
    its ancestors (a loop) or to a folder in ``seen`` is not entered and is appended to ``skipped``."""
    seen = set() if seen is None else seen
    top = root.resolve()
    seen.update(inode(p) for p in (top, *top.parents))  # a link back up would walk forever
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        if dirpath != str(root):
            key = inode(dirpath)
            if key in seen:
                dirnames[:] = []
                if skipped is not None:
                    skipped.append(Path(dirpath))
                continue
            seen.add(key)
        yield dirpath, dirnames, filenames


def _is_frame_folder(files: list[str], dirnames: list[str]) -> bool:
    """Rules 2 and 4 of :func:`walk_entries` (the folder holds no video)."""
    if any(is_frame_name(n) for n in files):
        return True
    if any(not d.startswith(".") for d in dirnames):
        return False
    return all(os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS for n in files)


def require_fold(fold: int) -> None:
    if fold not in FOLDS:
        raise UserError(f"--fold must be 1, 2 or 3 (got {fold})")


def walk_videos(root: Path) -> Iterator[Path]:
    return walk_files(root, VIDEO_EXTENSIONS)
