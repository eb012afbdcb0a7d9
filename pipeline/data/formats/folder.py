"""Folder layouts, detected from the root's top-level folders:

* ``root/<class>/<file>``: one folder per class, no split (prepare carves val and test);
* ``root/<split>/<class>/<file>``: split folders named ``train``/``training``,
  ``val``/``valid``/``validation``, ``test``/``testing`` (any letter case). A split without
  a folder is carved from train by prepare.

A root that mixes the two is an error (a class called ``test`` next to ``cat`` and ``dog``
is far more likely a misplaced split). In the video layout an entry may be a frame folder
instead of a file (see :func:`~pipeline.data.formats.common.walk_entries`).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.formats.base import SPLIT_ALIASES, SPLITS, VIDEO_EXTENSIONS, FormatOptions, FormatResult, Row
from pipeline.data.formats.common import LINK_SKIPPED, inode, require_root, walk_entries, walk_files
from pipeline.errors import UserError


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _names(folders: list[Path], shown: int = 3) -> str:
    names = ", ".join(p.name for p in folders[:shown])
    return names + (f" and {len(folders) - shown} more" if len(folders) > shown else "")


def read_layout(root: Path, extensions: frozenset[str], *, frame_folders: bool) -> FormatResult:
    """Rows of a class-folder or split-folder tree (see the module doc)."""
    require_root(root)
    top = _subfolders(root)
    split_of = {d: SPLIT_ALIASES.get(d.name.lower()) for d in top}
    split_dirs = [d for d in top if split_of[d]]
    if not split_dirs:
        if not top:
            raise UserError(f"dataset root {root} has no class folders (expected root/<class>/<file> "
                            "or root/<split>/<class>/<file>)")
        result = _read_classes(top, extensions, frame_folders, split="")
        result.layout = f"class folders ({root}/<class>/<file>): val and test carved from each class"
        return result
    class_dirs = [d for d in top if not split_of[d]]
    if class_dirs:
        raise UserError(f"dataset root {root} mixes split folders ({_names(split_dirs)}) and class folders "
                        f"({_names(class_dirs)}): use either {root}/<split>/<class>/<file> or "
                        f"{root}/<class>/<file>, not both")
    by_split: dict[str, Path] = {}
    for d in split_dirs:
        split = split_of[d]
        if split in by_split:
            raise UserError(f"dataset root {root} has two {split} folders ({by_split[split].name}, {d.name}): "
                            "keep one")
        by_split[split] = d
    if "train" not in by_split:
        raise UserError(f"dataset root {root} has split folders ({_names(split_dirs)}) but no train folder")
    if not _subfolders(by_split["train"]):
        raise UserError(f"{by_split['train']} has no class folders (expected {root}/<split>/<class>/<file>)")
    result = FormatResult()
    seen: set[tuple[int, int]] = set()
    present = []
    for split in SPLITS:
        if split in by_split:
            classes = _subfolders(by_split[split])
            if classes:
                present.append(split)
                part = _read_classes(classes, extensions, frame_folders, split=split, seen=seen)
                result.rows += part.rows
                result.quarantined += part.quarantined
    _check_train_has_every_class(result.rows, by_split)
    result.carve = tuple(s for s in ("val", "test") if s not in present)
    carved = f"; {' and '.join(result.carve)} carved from train" if result.carve else ""
    result.layout = (f"split folders ({root}/<split>/<class>/<file>): "
                     f"{', '.join(by_split[s].name for s in present)}{carved}")
    return result


def _read_classes(classes: list[Path], extensions: frozenset[str], frame_folders: bool, *, split: str,
                  seen: set[tuple[int, int]] | None = None) -> FormatResult:
    """Rows for the files (and frame folders) under each class folder, labelled by its name.

    Sub-folders of a class folder are walked too (some datasets nest by group); symlinked
    directories are followed once. A link that loops back up, or into another class folder
    (its files would get this class's label), is skipped and quarantined.
    """
    result = FormatResult()
    seen = set() if seen is None else seen
    seen.update(inode(c) for c in classes)
    skipped: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    for class_dir in classes:
        if frame_folders:
            entries = walk_entries(class_dir, extensions, seen=seen, skipped=skipped, unreadable=unreadable)
        else:
            entries = walk_files(class_dir, extensions, seen=seen, skipped=skipped)
        result.rows.extend(Row(path=path, label=class_dir.name, split=split) for path in entries)
    result.quarantined.extend((str(p), LINK_SKIPPED) for p in skipped)
    result.quarantined.extend((str(p), reason) for p, reason in unreadable)
    return result


def _check_train_has_every_class(rows: list[Row], by_split: dict[str, Path]) -> None:
    trained = {r.label for r in rows if r.split == "train"}
    for r in rows:
        if r.label not in trained:
            raise UserError(f"class {r.label!r} is in the {by_split[r.split].name} folder but has no files in "
                            f"{by_split['train']}: every class needs training examples")


def list_class_folders(root: Path, extensions: frozenset[str]) -> FormatResult:
    """Rows for every file with a known extension under ``root/<class>/`` (no split folders)."""
    require_root(root)
    classes = _subfolders(root)
    if not classes:
        raise UserError(f"dataset root {root} has no class folders (expected root/<class>/<file>)")
    return _read_classes(classes, extensions, False, split="")


def read(opts: FormatOptions) -> FormatResult:
    """A folder-per-class video dataset, with or without split folders; entries may be frame folders."""
    return read_layout(Path(opts.root), VIDEO_EXTENSIONS, frame_folders=True)
