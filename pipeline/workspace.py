"""The workspace folder: the one place that knows its path names, and the
atomic-write helpers every stage uses.

Layout (``runs/<name>/``)::

    workspace.json      vtl version, layout version, media kind, dataset format
    manifest.csv        one row per usable file: path,label,split,num_frames,fps,width,height,...
    classes.txt         one class name per line; line number = label index
    quarantine.csv      path,reason of every file that could not be used
    clips/<key>/        sampled uint8 clips, one .npy per video, + params.json
    features/<key>/     cached backbone features for frozen strategies
    train/<run>/        config.yaml, last.pt, best.pt, metrics.jsonl
    eval/<run>/         metrics.json, per_class.csv, predictions.csv, confusion.png
    benchmark/          results.csv, report.md, plots

Sharded runs (``--shard I/N``) write ``manifest.shard-I-of-N.csv``,
``quarantine.shard-I-of-N.csv`` (prepare) and ``clips/<key>/quarantine.shard-I-of-N.csv``
(sample) until ``--merge`` folds them into the files above.

Everything is written to a hidden temp name in the same folder and renamed into
place, so a killed stage never leaves a partial file under its final name.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from pipeline import WORKSPACE_FORMAT, __version__
from pipeline.errors import UserError
from pipeline.progress import echo
from pipeline.sharding import Shard

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


class Workspace:
    """Paths of one workspace. Creating the object touches nothing on disk."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    # -- files written by prepare ------------------------------------------------
    @property
    def info_path(self) -> Path:
        return self.root / "workspace.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"

    @property
    def classes_file(self) -> Path:
        return self.root / "classes.txt"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine.csv"

    @property
    def probe_cache(self) -> Path:
        return self.root / ".probe_cache.jsonl"

    # -- folders of later stages --------------------------------------------------
    def clips_dir(self, key: str) -> Path:
        return self.root / "clips" / key

    def features_dir(self, key: str) -> Path:
        return self.root / "features" / key

    def train_dir(self, run: str) -> Path:
        return self.root / "train" / run

    def eval_dir(self, run: str) -> Path:
        return self.root / "eval" / run

    @property
    def benchmark_dir(self) -> Path:
        return self.root / "benchmark"

    # -- reading --------------------------------------------------------------------
    def require_prepared(self) -> None:
        if not self.manifest.is_file() or not self.classes_file.is_file():
            raise UserError(f"{self.root} is not a prepared workspace (run `vtl prepare {self.root} ...` first)")
        info = self.info()
        if info.get("layout") != WORKSPACE_FORMAT:
            raise UserError(
                f"{self.root} was written by vtl {info.get('vtl_version', '?')} with workspace layout "
                f"{info.get('layout', '?')}; this vtl {__version__} reads layout {WORKSPACE_FORMAT}: "
                "re-run `vtl prepare` into a new workspace"
            )

    def info(self) -> dict[str, Any]:
        if not self.info_path.is_file():
            return {}
        try:
            return json.loads(self.info_path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{self.info_path} is not valid JSON ({e})") from None

    def write_info(self, **fields: Any) -> None:
        info = {"vtl_version": __version__, "layout": WORKSPACE_FORMAT, **fields}
        write_json(self.info_path, info)

    def update_info(self, **fields: Any) -> None:
        write_json(self.info_path, {**self.info(), **fields})

    @property
    def media(self) -> str:
        """``video`` or ``image``."""
        return str(self.info().get("media", "video"))

    def classes(self) -> list[str]:
        self.require_prepared()
        return [c for c in self.classes_file.read_text(encoding="utf-8").splitlines() if c]

    def manifest_rows(self, split: str | None = None) -> list[dict[str, str]]:
        return [r for r in self.iter_manifest() if split is None or r["split"] == split]

    def iter_manifest(self) -> Iterator[dict[str, str]]:
        """The manifest's rows one at a time, for stages that must not hold a huge list."""
        self.require_prepared()
        yield from iter_csv(self.manifest, required=("id", "path", "label", "split"))

    # -- shard results (``vtl prepare/sample --shard I/N``) ------------------------------
    def shard_manifest(self, shard: Shard) -> Path:
        return self.root / f"manifest.{shard.tag}.csv"

    def shard_quarantine(self, shard: Shard) -> Path:
        """Written last by a prepare shard: its presence marks the shard as finished."""
        return self.root / f"quarantine.{shard.tag}.csv"

    def shard_probe_cache(self, shard: Shard) -> Path:
        return self.root / f".probe_cache.{shard.tag}.jsonl"

    def prepare_shard_files(self) -> list[Path]:
        """Every prepare shard file in the workspace (all shards, all counts)."""
        return sorted(p for pattern in ("manifest.shard-*-of-*.csv", "quarantine.shard-*-of-*.csv",
                                        ".probe_cache.shard-*-of-*.jsonl") for p in self.root.glob(pattern))

    def sample_shard_failures(self, key: str, shard: Shard) -> Path:
        """A sample shard's failed videos (path,reason), written last: it marks the shard as finished."""
        return self.clips_dir(key) / f"quarantine.{shard.tag}.csv"

    def sample_shard_files(self, key: str) -> list[Path]:
        return sorted(self.clips_dir(key).glob("quarantine.shard-*-of-*.csv"))

    # -- locking ----------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, stage: str, shard: Shard | None = None) -> Iterator[None]:
        """Hold a lock on the workspace while a stage writes to it.

        A second process on the same workspace fails at once with the holder's
        PID rather than interleaving writes. Re-entrant within one process, so a
        stage may call another (``vtl run``, ``benchmark`` → ``train``).

        A sharded run (``--shard I/N``) holds the workspace lock *shared*, so the
        shards of one stage can run side by side (each writes only its own
        files), plus an exclusive lock of its own shard, so the same shard
        cannot run twice. An unsharded stage or a merge still excludes them all.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        main = (self.root / ".lock").resolve()
        if shard is None:
            with _flock(main, fcntl.LOCK_EX, f"`vtl {stage}` (pid {os.getpid()})", self._busy):
                yield
            return
        own = (self.root / f".lock.{stage}.{shard.tag}").resolve()
        with _flock(main, fcntl.LOCK_SH, None, self._busy), \
                _flock(own, fcntl.LOCK_EX, f"`vtl {stage} --shard {shard}` (pid {os.getpid()})", self._busy):
            yield

    def _busy(self, path: Path) -> UserError:
        """The error for a lock file held by another process, naming the holder from the text
        holders write into their lock files (sharded runs write only into their own)."""
        holder = "another process"
        for p in [path, *sorted(self.root.glob(".lock.*"))]:
            with contextlib.suppress(OSError):
                if text := p.read_text().strip():
                    holder = text
                    break
        return UserError(f"workspace {self.root} is busy: {holder} is writing to it")


@contextlib.contextmanager
def _flock(path: Path, mode: int, holder: str | None, busy: Callable[[Path], UserError]) -> Iterator[None]:
    """flock ``path`` (re-entrant per process); ``holder`` is written into it while held."""
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    f = open(path, "a+")  # noqa: SIM115 - held for the stage's lifetime
    try:
        _acquire(f, mode, path, busy)
        if holder is not None:
            _set_text(f, holder)
        _HELD[path] = 1
        try:
            yield
        finally:
            del _HELD[path]
            if holder is not None:
                _set_text(f, "")  # a stale name would be blamed for the next conflict
    finally:
        f.close()


def _acquire(f: IO, mode: int, path: Path, busy: Callable[[Path], UserError]) -> None:
    """flock ``f`` now, or within the ``set_lock_wait`` seconds (``vtl --wait``), else the busy error."""
    deadline = time.monotonic() + _LOCK_WAIT[0]
    told = False
    while True:
        try:
            fcntl.flock(f, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                error = busy(path)
                if _LOCK_WAIT[0] > 0:
                    error = UserError(f"{error} (waited {_LOCK_WAIT[0]:g} s)")
                raise error from None
        if not told:
            echo(f"waiting up to {_LOCK_WAIT[0]:g} s: {busy(path)}")
            told = True
        time.sleep(0.2)


def set_lock_wait(seconds: float) -> None:
    """How long a stage waits for a busy workspace before giving up (0: fail at once)."""
    _LOCK_WAIT[0] = max(0.0, float(seconds))


_LOCK_WAIT = [0.0]


def _set_text(f: IO, text: str) -> None:
    f.seek(0)
    f.truncate()
    f.write(text)
    f.flush()


# Lock files this process holds, with their nesting depth.
_HELD: dict[Path, int] = {}
