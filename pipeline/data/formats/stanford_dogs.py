"""Stanford Dogs: ``Images/n02085620-Chihuahua/n02085620_10074.jpg``.

Folders are ``<WordNet synset>-<breed>``; labels are the readable breed names
(``Chihuahua``, ``German_shepherd``). ``--root`` is the folder holding ``Images/``
(or ``Images/`` itself). When ``--splits`` points at the folder with the official
``train_list.mat`` / ``test_list.mat`` (or at one of them), those splits are used;
otherwise the prepare stage makes a stratified split.

Leakage caveat: Stanford Dogs was built from ImageNet, so ImageNet-1k weights have
seen these photos during pretraining; vtl says so when both meet.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline.data.formats.base import IMAGE_EXTENSIONS, FormatOptions, FormatResult, Row
from pipeline.data.formats.folder import list_class_folders
from pipeline.errors import UserError

SYNSET = re.compile(r"^n\d{8}-(.+)$")


def breed_name(folder: str) -> str:
    """``n02085620-Chihuahua`` → ``Chihuahua``; other names are kept as they are."""
    m = SYNSET.match(folder)
    return m.group(1) if m else folder


def _images_dir(root: Path) -> Path:
    if (root / "Images").is_dir():
        return root / "Images"
    if root.is_dir():
        return root
    raise UserError(f"dataset root {root} does not exist or is not a folder")


def _mat_files(splits: Path) -> dict[str, Path]:
    if splits.is_file():
        folder = splits.parent
    elif splits.is_dir():
        folder = splits
    else:
        raise UserError(f"--splits {splits} does not exist")
    found = {s: folder / f"{s}_list.mat" for s in ("train", "test") if (folder / f"{s}_list.mat").is_file()}
    if not found:
        raise UserError(f"--splits {splits}: no train_list.mat or test_list.mat there")
    return found


def _mat_paths(file: Path) -> list[str]:
    """Relative image paths listed in an official ``*_list.mat`` (MATLAB v5)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(file))
    except Exception as e:
        raise UserError(f"{file}: not a readable MATLAB file ({str(e)[:120]})") from None
    if "file_list" not in mat:
        raise UserError(f"{file}: no 'file_list' variable (expected the official Stanford Dogs list)")
    # file_list is an (N, 1) cell array: each cell holds a 1-element string array.
    return [str(np.asarray(cell).ravel()[0]) for cell in np.asarray(mat["file_list"]).ravel()]


def read(opts: FormatOptions) -> FormatResult:
    splits = opts.splits
    images = _images_dir(Path(opts.root))
    listed = list_class_folders(images, IMAGE_EXTENSIONS)
    rows = [Row(r.path, breed_name(r.label)) for r in listed.rows]
    if splits is None:
        return FormatResult(rows=rows, quarantined=listed.quarantined)
    by_rel = {r.path.relative_to(images).as_posix(): r for r in rows}
    result = FormatResult(quarantined=list(listed.quarantined), carve=("val",))
    for split, file in _mat_files(splits).items():
        for rel in _mat_paths(file):
            row = by_rel.get(rel)
            if row is None:
                result.quarantined.append((str(images / rel), "listed in split file but missing on disk"))
            else:
                result.rows.append(Row(row.path, row.label, split))
    return result
