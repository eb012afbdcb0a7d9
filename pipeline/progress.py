"""Progress bars for every loop over files, clips or batches, status lines, and the log files of
stage runs.

A bar on a terminal; on a pipe or a CI log, a plain update at most every
``VTL_PROGRESS_INTERVAL`` seconds (default 30); nothing with ``--quiet``. Status lines and
warnings also go, time-stamped, to every log file opened with :func:`log_to` (a stage run's
``train.log``, ``evaluate.log``, ``benchmark.log``): what the terminal showed, without the bars,
whatever ``--quiet``. :func:`detail` lines are shown with ``--verbose`` only, and always logged.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

if TYPE_CHECKING:
    from tqdm import tqdm

T = TypeVar("T")
_QUIET = False
_VERBOSE = False
_LOGS: list[TextIO] = []


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet


def set_verbose(verbose: bool) -> None:
    global _VERBOSE
    _VERBOSE = verbose


@contextmanager
def log_to(path: Path) -> Iterator[None]:
    """While inside, append every status line and warning to ``path`` too (nested: to each open log)."""
    if _not_rank0():
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as log:
        _LOGS.append(log)
        try:
            yield
        except Exception as e:  # what ended the stage, in its log too (the terminal gets it from the CLI)
            _log(f"error: {' '.join(str(e).split()) or type(e).__name__}")
            raise
        finally:
            _LOGS.remove(log)


def _log(line: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    for log in _LOGS:
        log.write(f"{stamp} {line}\n")
        log.flush()


def bar(iterable: Iterable[T] | None = None, *, desc: str, total: int | None = None, unit: str = "it",
        **kwargs) -> tqdm:
    # Imported here, not at the top: tqdm.auto costs ~0.15 s, paid by every spawned decode
    # worker (which imports this module through pipeline.parallel but never shows a bar).
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    interval = 0.1 if tty else float(os.environ.get("VTL_PROGRESS_INTERVAL", "30"))
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=_QUIET or _not_rank0(),
                file=sys.stderr, mininterval=interval, dynamic_ncols=tty, ascii=not tty, leave=tty, **kwargs)


def echo(message: str) -> None:
    """A status line on stderr (stdout is kept for results scripts read), and in the open logs."""
    if _not_rank0():
        return
    _log(message)
    if not _QUIET:
        print(message, file=sys.stderr, flush=True)


def detail(message: str) -> None:
    """A line for the logs, and for the terminal with ``--verbose``."""
    if _not_rank0():
        return
    _log(message)
    if _VERBOSE and not _QUIET:
        print(message, file=sys.stderr, flush=True)


def _not_rank0() -> bool:
    return os.environ.get("RANK", "0") not in ("", "0")


def warn(message: str) -> None:
    """A warning on stderr: shown even with ``--quiet`` (only rank 0 prints)."""
    if not _not_rank0():
        _log(f"warning: {message}")
        print(f"warning: {message}", file=sys.stderr, flush=True)
