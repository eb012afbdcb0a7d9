"""HMDB51 with its official ``testTrainMulti_7030_splits``.

``--splits`` is the ``testTrainMulti_7030_splits`` folder: one
``<class>_test_split<k>.txt`` per class and fold k = 1..3, with lines
``<video name> <code>`` where 1 = train, 2 = test and 0 = not used in this fold
(skipped). HMDB51 has no val split; the prepare stage carves one from train.

Videos live at ``root/<class>/<video name>``. Class names come from the split file
names; class folders and video names are matched case-insensitively, and a video
with the listed stem but another video extension (a re-encoded copy) is accepted.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.data.formats.base import FormatOptions, FormatResult, Row
from pipeline.data.formats.common import (
    MISSING,
    find_splits_dir,
    read_list_lines,
    require_fold,
    require_root,
    walk_videos,
)
from pipeline.errors import UserError

SPLITS_DIR = "testTrainMulti_7030_splits"
CODES = {"0": "", "1": "train", "2": "test"}  # "" = not used in this fold
NO_CLASS = "class folder missing"


def read(opts: FormatOptions) -> FormatResult:
    """Rows of fold ``opts.fold`` from every ``<class>_test_split<fold>.txt``."""
    root, splits, fold = Path(opts.root), opts.splits, opts.fold
    require_root(root)
    require_fold(fold)
    split_files = _split_files(root, Path(splits) if splits else None, fold)
    class_dirs = {p.name.casefold(): p for p in root.iterdir() if p.is_dir()}
    result = FormatResult(carve=("val",))  # the official folds define train and test
    for label, file in split_files:
        class_dir = class_dirs.get(label.casefold())
        if class_dir is None:
            result.quarantined += [(str(root / label / name), NO_CLASS) for name, _ in _read_split_file(file)]
            continue
        videos = _index_class_folder(class_dir)
        for name, split in _read_split_file(file):
            path = videos.get(name.casefold()) or videos.get(Path(name).stem.casefold())
            if path is None:
                result.quarantined.append((str(class_dir / name), MISSING))
            else:
                result.rows.append(Row(path=path, label=label, split=split))
    return result


def _split_files(root: Path, splits: Path | None, fold: int) -> list[tuple[str, Path]]:
    """``(class name, split file)`` for the fold, sorted by class name."""
    folder = find_splits_dir(root, splits, SPLITS_DIR, "*_test_split*.txt")
    pattern = re.compile(rf"(.+)_test_split{fold}\.txt", re.IGNORECASE)
    found = sorted((m.group(1), p) for p in folder.iterdir() if (m := pattern.fullmatch(p.name)))
    if not found:
        raise UserError(f"{folder} has no <class>_test_split{fold}.txt files")
    return found


def _index_class_folder(class_dir: Path) -> dict[str, Path]:
    """Videos of one class keyed by lower-cased file name and by lower-cased stem."""
    videos: dict[str, Path] = {}
    for path in walk_videos(class_dir):
        videos.setdefault(path.name.casefold(), path)
        videos.setdefault(path.stem.casefold(), path)
    return videos


def _read_split_file(file: Path) -> list[tuple[str, str]]:
    """``(video name, split)`` of the used lines; code 0 lines are dropped."""
    used: list[tuple[str, str]] = []
    for lineno, fields in read_list_lines(file):
        if len(fields) != 2 or fields[1] not in CODES:
            raise UserError(f"{file}:{lineno}: expected '<video name> <0|1|2>', got {' '.join(fields)!r}")
        if CODES[fields[1]]:
            used.append((fields[0], CODES[fields[1]]))
    return used
