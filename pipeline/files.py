"""Files that appear whole or not at all: the atomic-write helpers every layer uses, and CSV reading
that turns a damaged file into one clear error.

Everything is written to a hidden temp name in the same folder and renamed into
place, so a killed process never leaves a partial file under its final name; a
full disk becomes a :class:`UserError` naming the file.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from pipeline.errors import UserError

# A full disk, a full quota, or a file-size limit (RLIMIT_FSIZE): the user must free space.
DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def disk_full_message(path: Path | str | None, err: OSError) -> str:
    return (f"cannot write {path or 'a file'}: {err.strerror or err} (disk full?); free some space and re-run, "
            "finished work is kept")


def disk_full(err: BaseException, partial: Path | None = None) -> OSError | None:
    """The no-room-left error behind ``err`` (raised while writing ``partial``), or None."""
    if isinstance(err, OSError) and err.errno in DISK_FULL:
        return err
    if not isinstance(err, (OSError, RuntimeError)) or partial is None:
        return None
    # numpy's tofile ("N requested and M written") and torch.save ("unexpected pos") lose the
    # errno of a short write: ask the file system whether the file can still grow.
    try:
        st = os.statvfs(partial.parent)
        if st.f_bavail * st.f_frsize < 1 << 20:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        with open(partial, "ab", buffering=0) as f:
            f.write(b"\0")
    except OSError as e:
        return e if e.errno in DISK_FULL else None
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replaced_on_success(path: Path) -> Iterator[Path]:
    """Yield a hidden temp path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The one mechanism behind every file vtl writes: a file under its final name
    is always complete, whatever kills the process. A full disk becomes a
    :class:`UserError` naming the file (and the temp file is removed).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from other users
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        full = disk_full(e, Path(tmp))
        if full is not None:
            raise UserError(disk_full_message(path, full)) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temp file beside ``path``; rename it onto ``path`` only on success."""
    with replaced_on_success(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_text(path: Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]] | Sequence[dict]) -> None:
    with atomic_write(path, newline="") as f:
        if rows and isinstance(rows[0], dict):
            writer = csv.DictWriter(f, fieldnames=list(header), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)  # type: ignore[arg-type]
        else:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)  # type: ignore[arg-type]


def iter_csv(path: Path, required: Sequence[str] = ()) -> Iterator[dict[str, str]]:
    """Rows of a CSV file with a header, one at a time; a damaged file (or one lacking a
    ``required`` column) is a :class:`UserError` naming it, never a crash further on."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise UserError(f"{path}: missing column {missing[0]!r} (damaged? re-run the stage that wrote it)")
            for lineno, row in enumerate(reader, start=2):
                # a short row gets None for its missing fields: damaged too
                if any(row.get(c) is None for c in required):
                    raise UserError(f"{path}:{lineno}: row has too few fields (damaged? re-run the stage that "
                                    "wrote it)")
                yield row
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a UTF-8 CSV file ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise UserError(f"{path}: not a valid CSV file ({e})") from None


def read_csv(path: Path, required: Sequence[str] = ()) -> list[dict[str, str]]:
    """Every row of :func:`iter_csv`."""
    return list(iter_csv(path, required))


def path_safe(name: str) -> str:
    """A backbone name as part of a file or folder name: ``hf:MCG-NJU/videomae-base`` →
    ``hf_MCG-NJU_videomae-base`` (built-in names are unchanged)."""
    return re.sub(r"[:/\\]", "_", name)
