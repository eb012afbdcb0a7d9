"""UCF101 with its official ``ucfTrainTestlist`` splits.

``--splits`` is the ``ucfTrainTestlist`` folder: ``classInd.txt`` (``<index> <name>``),
``trainlist0<k>.txt`` (``<Class>/<file>.avi <index>``) and ``testlist0<k>.txt``
(``<Class>/<file>.avi``) for folds k = 1..3. UCF101 has no val split; the prepare
stage carves one from train.

The official lists disagree with the archive in letter case (``HandstandPushups`` in
the lists, ``v_HandStandPushups_*`` on disk), so paths are matched case-insensitively
against one scan of the root; labels keep the ``classInd.txt`` spelling.

"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

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

SPLITS_DIR = "ucfTrainTestlist"


def read(opts: FormatOptions) -> FormatResult:
    """Rows of fold ``opts.fold``: ``trainlist0<fold>`` → train, ``testlist0<fold>`` → test."""
    root, splits, fold = Path(opts.root), opts.splits, opts.fold
    require_root(root)
    require_fold(fold)
    folder = find_splits_dir(root, Path(splits) if splits else None, SPLITS_DIR, "classInd.txt")
    classes = _read_class_index(folder / "classInd.txt")
    tree = _CaseInsensitiveTree(root)
    result = FormatResult(carve=("val",))  # the official folds define train and test
    for split, list_name in (("train", f"trainlist0{fold}.txt"), ("test", f"testlist0{fold}.txt")):
        for rel, label in _read_split_list(folder / list_name, classes, labelled=split == "train"):
            path = tree.find(rel)
            if path is None:
                result.quarantined.append((str(root / rel), MISSING))
            else:
                result.rows.append(Row(path=path, label=label, split=split))
    return result


def _read_class_index(file: Path) -> dict[int, str]:
    classes: dict[int, str] = {}
    for lineno, fields in read_list_lines(file):
        if len(fields) != 2 or not fields[0].isdigit():
            raise UserError(f"{file}:{lineno}: expected '<index> <class name>', got {' '.join(fields)!r}")
        classes[int(fields[0])] = fields[1]
    if not classes:
        raise UserError(f"{file}: no classes listed")
    return classes


def _read_split_list(file: Path, classes: dict[int, str], labelled: bool) -> Iterator[tuple[str, str]]:
    """Yield ``(relative path, label)``. Test lists carry no index, so their label
    comes from the class folder of the path, matched case-insensitively."""
    by_name = {name.casefold(): name for name in classes.values()}
    expected = "'<path> <label index>'" if labelled else "'<path>'"
    for lineno, fields in read_list_lines(file):
        # Test lines may carry an index too (some re-distributions add it); accept it.
        if len(fields) > 2 or (labelled and len(fields) != 2):
            raise UserError(f"{file}:{lineno}: expected {expected}, got {' '.join(fields)!r}")
        rel = fields[0].replace("\\", "/")
        if len(fields) == 2:
            if not fields[1].isdigit() or int(fields[1]) not in classes:
                raise UserError(f"{file}:{lineno}: label index {fields[1]!r} is not in classInd.txt")
            yield rel, classes[int(fields[1])]
            continue
        class_name = PurePosixPath(rel).parts[0] if "/" in rel else ""
        if class_name.casefold() not in by_name:
            raise UserError(f"{file}:{lineno}: class folder of {rel!r} is not in classInd.txt")
        yield rel, by_name[class_name.casefold()]


class _CaseInsensitiveTree:
    """One walk of ``root``: video files keyed by lower-cased relative path, and by
    lower-cased stem as a fallback for flat or re-encoded (``.mp4``) copies:
    UCF101 file names are unique across classes, so the stem alone is unambiguous."""

    def __init__(self, root: Path) -> None:
        self.by_rel: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        for path in walk_videos(root):
            self.by_rel.setdefault(path.relative_to(root).as_posix().casefold(), path)
            self.by_stem.setdefault(path.stem.casefold(), path)

    def find(self, rel: str) -> Path | None:
        hit = self.by_rel.get(rel.casefold())
        return hit if hit is not None else self.by_stem.get(PurePosixPath(rel).stem.casefold())
