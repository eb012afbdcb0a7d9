"""Files with the same content in the train and test splits (a leak that inflates test scores).

Datasets assembled by hand often hold the same clip twice (re-downloads, copies under
two names, symlinks). Hashing every file would read the whole dataset, so only files
whose size matches a file of another split are hashed.
"""

from __future__ import annotations

import hashlib
import stat
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

CHUNK = 1 << 20


def content_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _size(path: str) -> int | None:
    """The file's size; ``None`` for what is not compared: unreadable files and frame folders
    (comparing those would mean hashing every frame)."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return None if stat.S_ISDIR(st.st_mode) else st.st_size


def _digest(path: str) -> str | None:
    try:
        return content_hash(Path(path))
    except OSError:
        return None  # unreadable since probing: sample will quarantine it


def cross_split_duplicates(rows: Iterable[Mapping[str, str]], a: str = "train", b: str = "test") -> list[str]:
    """Paths of the ``b`` rows whose file has the same bytes as some ``a`` row's file, sorted."""
    by_size: dict[int, list[Mapping[str, str]]] = defaultdict(list)
    for r in rows:
        if r["split"] in (a, b) and (size := _size(r["path"])) is not None:
            by_size[size].append(r)
    leaked: list[str] = []
    for group in by_size.values():
        if {r["split"] for r in group} != {a, b}:
            continue  # sizes differ across the splits: nothing to hash
        digests = [_digest(r["path"]) for r in group]
        in_a = {d for r, d in zip(group, digests, strict=True) if r["split"] == a and d}
        leaked += [r["path"] for r, d in zip(group, digests, strict=True) if r["split"] == b and d in in_a]
    return sorted(leaked)


def leak_warning(leaked: list[str], shown: int = 3) -> str:
    names = ", ".join(leaked[:shown]) + (f" (and {len(leaked) - shown} more)" if len(leaked) > shown else "")
    return (f"{len(leaked)} file{'s' if len(leaked) != 1 else ''} appear in both train and test (same content): "
            f"{names}; test scores will be inflated")
