"""Who runs a task: ownership files, so that two executors (or two machines) on one workspace
never train the same cell, where ``flock`` cannot be trusted (network file systems).

A task's owner holds ``benchmark/owners/<key>.owner``, created with ``O_CREAT | O_EXCL`` (atomic,
also on NFS v3+) and holding the owner's executor id, host, pid and a token. A heartbeat thread
touches the file every ``stale_after / 4`` seconds; a file whose mtime is older than
``stale_after`` seconds (``vtl benchmark --owner-timeout``) belongs to a dead owner and may be
taken over. Clocks of the hosts must agree to well within that timeout (NTP).

The executor that wrote a record may take it back at once: an executor runs each task once at a
time, so a second attempt of its own (a Ray retry after a lost worker, a requeued Slurm job) means
the first one is gone. Taking over is guarded by ``<key>.takeover`` (also ``O_EXCL``), so that of
two executors that find one stale record only one replaces it.

When a task ends, its owner writes ``<key>.ended`` (when, how, at which attempt) before letting go: an executor
that planned the task before that moment finds it ended by another, and does not run it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.benchmark.tasks import Task
from pipeline.files import write_json
from pipeline.progress import warn
from pipeline.workspace import Workspace


def owners_dir(ws: Workspace) -> Path:
    return ws.benchmark_dir / "owners"


def task_key(task: Task) -> str:
    """The file name of a task's records: its kind, its source (a pretraining), its run."""
    return "-".join(p for p in (task.kind, task.extra.get("source"), task.run) if p)


class Ownership:
    """Ownership of one task by one executor; :meth:`acquire`, then :meth:`release`."""

    def __init__(self, ws: Workspace, task: Task, *, executor: str, stale_after: float):
        self.path = owners_dir(ws) / f"{task_key(task)}.owner"
        self.executor = executor
        self.stale_after = stale_after
        self.attempt = 1
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> bool:
        """Own the task; False when a live owner (another executor's, fresh) has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # each turn either creates the file or removes a dead owner's
            if self._create():
                self._beat = threading.Thread(target=self._heartbeat, daemon=True, name=f"owner {self.path.name}")
                self._beat.start()
                return True
            old = read_record(self.path)
            mine = old is not None and old.get("executor") == self.executor
            if not (mine or self.is_stale()):
                return False
            removed = self._take_over()
            if removed is None:
                return False
            if removed.get("executor") == self.executor:
                self.attempt = int(removed.get("attempt", 1)) + 1
        return False

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self._still_mine():
            self.path.unlink(missing_ok=True)

    def is_stale(self, path: Path | None = None) -> bool:
        return _age(path or self.path) > self.stale_after

    def _create(self) -> bool:
        record = {"executor": self.executor, "token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                  "attempt": self.attempt, "started": time.time()}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:  # a reader that meets it still empty treats it as a live owner's
            json.dump(record, f)
        return True

    def _take_over(self) -> dict[str, Any] | None:
        """Remove a dead (or our own earlier) owner's record, unless somebody else is doing so or
        has just done so; the record removed ({} when it was gone), None when not taken over."""
        guard = self.path.with_suffix(".takeover")
        if guard.exists() and self.is_stale(guard):
            guard.unlink(missing_ok=True)  # a taker that died while taking over
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return None
        try:  # checked again under the guard: another taker may have replaced it by a live record
            if not self.path.exists():
                return {}
            record = read_record(self.path)
            if not ((record or {}).get("executor") == self.executor or self.is_stale()):
                return None
            self.path.unlink(missing_ok=True)
            return record or {}
        finally:
            guard.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        interval = max(0.05, self.stale_after / 4)
        while not self._stop.wait(interval):
            if not self._still_mine():
                warn(f"benchmark: lost ownership of {self.path.name} (taken over after {self.stale_after:g} s "
                     "without a heartbeat: was this process stopped?)")
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def _still_mine(self) -> bool:
        record = read_record(self.path)
        return record is not None and record.get("token") == self.token


def read_record(path: Path) -> dict[str, Any] | None:
    """An owner record; None when absent, or not written yet."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def owned_by_other(ws: Workspace, task: Task, stale_after: float) -> bool:
    """Another executor's live owner holds ``task`` (as seen now)."""
    path = owners_dir(ws) / f"{task_key(task)}.owner"
    return path.exists() and _age(path) <= stale_after


# ----------------------------------------------------------------------------- ended tasks


def mark_ended(ws: Workspace, task: Task, status: str, attempt: int) -> None:
    write_json(owners_dir(ws) / f"{task_key(task)}.ended", {"status": status, "at": time.time(), "attempt": attempt})


def ended_since(ws: Workspace, task: Task, since: float) -> str | None:
    """How ``task`` ended (finished, failed) if it ended after ``since``; else None."""
    record = read_record(owners_dir(ws) / f"{task_key(task)}.ended")
    if record is None or float(record.get("at", 0)) < since:
        return None
    return str(record["status"])
