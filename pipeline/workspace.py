"""The workspace folder: the one place that knows its path names, and its lock.

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

Every file is written through :mod:`pipeline.files` (temp name, then rename), so a
killed stage never leaves a partial file under its final name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from pipeline import WORKSPACE_FORMAT, __version__
from pipeline.data.cache import ClipCache, FeatureCache
from pipeline.engine.run_folder import RunFolder
from pipeline.errors import UserError
from pipeline.files import iter_csv, write_json
from pipeline.progress import echo
from pipeline.sharding import Shard

# Runs that `vtl benchmark` trains are named with this prefix; they have a report of their own.
BENCHMARK_RUN_PREFIX = "bench-"


class Workspace:
    """Paths of one workspace. Creating the object touches nothing on disk."""

    def __init__(self, root: Path | str, runs_root: Path | str | None = None):
        self.root = Path(root)
        # Where training writes (train/, eval/, features/, the lock): the workspace itself, or, for a
        # source dataset that `vtl benchmark` pretrains on, a folder of the target's benchmark, so
        # that the source's workspace is only read.
        self.runs_root = self.root if runs_root is None else Path(runs_root)

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

    def clip_cache(self, key: str | None = None) -> ClipCache:
        """The clip cache of sampling ``key`` (default: the latest `vtl sample`); it must exist."""
        key = key or self.latest_sampling()
        cache = ClipCache(self.clips_dir(key))
        if not cache.params():
            raise UserError(f"no clip cache {key!r} in {self.root}; run `vtl sample` first")
        return cache

    def latest_sampling(self) -> str:
        """The key of the clip cache the last `vtl sample` wrote."""
        samplings = self.info().get("samplings", [])
        if not samplings:
            raise UserError(f"{self.root} has no sampled clips yet: run `vtl sample {self.root}` first")
        return samplings[-1]

    def add_sampling(self, key: str) -> None:
        """Record ``key`` as the latest sampling."""
        samplings = [k for k in self.info().get("samplings", []) if k != key] + [key]
        self.update_info(samplings=samplings)

    def features(self, key: str) -> FeatureCache:
        return FeatureCache(self.runs_root / "features" / key)

    def run(self, name: str) -> RunFolder:
        return RunFolder(self.runs_root / "train" / name, self.runs_root / "eval" / name)

    def evaluated_runs(self) -> list[RunFolder]:
        """Every run with evaluation metrics, by name."""
        names = sorted(p.name for p in (self.runs_root / "eval").glob("*") if p.is_dir())
        return [run for run in map(self.run, names) if run.is_evaluated]

    def trained_runs(self) -> list[RunFolder]:
        """Every run with a ``best.pt``, oldest first."""
        runs = [self.run(p.name) for p in (self.runs_root / "train").glob("*") if p.is_dir()]
        return sorted((r for r in runs if r.is_trained), key=lambda r: r.best.stat().st_mtime)

    def latest_run(self) -> RunFolder:
        runs = self.trained_runs()
        if not runs:
            raise UserError(f"no trained run in {self.root}: run `vtl train {self.root} ...` first")
        return runs[-1]

    @property
    def benchmark_dir(self) -> Path:
        return self.root / "benchmark"

    @property
    def benchmark_log(self) -> Path:
        return self.benchmark_dir / "benchmark.log"

    @property
    def mlruns_dir(self) -> Path:
        """The default MLflow file store of ``--tracker mlflow`` (without ``MLFLOW_TRACKING_URI``)."""
        return self.root / "mlruns"

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
    def lock(self, stage: str, shard: Shard | None = None, *, shared: bool = False) -> Iterator[None]:
        """Hold a lock on the workspace while a stage writes to it.

        A second process on the same workspace fails at once with the holder's
        PID rather than interleaving writes. Re-entrant within one process, so a
        stage may call another (``vtl run``, ``benchmark`` → ``train``).

        A sharded run (``--shard I/N``) holds the workspace lock *shared*, so the
        shards of one stage can run side by side (each writes only its own
        files), plus an exclusive lock of its own shard, so the same shard
        cannot run twice. An unsharded stage or a merge still excludes them all.

        ``shared``: the workspace lock shared and nothing else, for ``vtl benchmark`` and its
        workers, which coordinate their cells with ownership files instead
        (:mod:`pipeline.benchmark.ownership`): several executors may share a workspace, while a
        plain ``vtl train`` (exclusive) still waits for them all.
        """
        self.runs_root.mkdir(parents=True, exist_ok=True)
        main = (self.runs_root / ".lock").resolve()
        if shared:
            # Plus a file of this process's own, so that a stage kept waiting can name the holders.
            own = (self.runs_root / f".lock.{stage}.pid{os.getpid()}").resolve()
            try:
                with _flock(main, fcntl.LOCK_SH, None, self._busy), \
                        _flock(own, fcntl.LOCK_EX, f"`vtl {stage}` (pid {os.getpid()})", self._busy):
                    yield
            finally:
                if own not in _HELD:
                    own.unlink(missing_ok=True)
            return
        if shard is None:
            with _flock(main, fcntl.LOCK_EX, f"`vtl {stage}` (pid {os.getpid()})", self._busy):
                yield
            return
        own = (self.runs_root / f".lock.{stage}.{shard.tag}").resolve()
        with _flock(main, fcntl.LOCK_SH, None, self._busy), \
                _flock(own, fcntl.LOCK_EX, f"`vtl {stage} --shard {shard}` (pid {os.getpid()})", self._busy):
            yield

    def _busy(self, path: Path) -> UserError:
        """The error for a lock file held by another process, naming the holder from the text
        holders write into their lock files (sharded runs write only into their own)."""
        holder = "another process"
        for p in [path, *sorted(self.runs_root.glob(".lock.*"))]:
            with contextlib.suppress(OSError):
                if (text := p.read_text().strip()) and (p == path or _held_by_another(p)):
                    holder = text
                    break
        return UserError(f"workspace {self.runs_root} is busy: {holder} is writing to it")


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


def _held_by_another(path: Path) -> bool:
    """Whether another process holds ``path`` (a holder killed by SIGKILL leaves its text behind)."""
    if path.resolve() in _HELD:
        return False
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


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
