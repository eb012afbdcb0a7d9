"""Progress bars for every loop over files, clips or batches.

A bar on a terminal; on a pipe or a CI log, a plain update at most every
``VTL_PROGRESS_INTERVAL`` seconds (default 30); nothing with ``--quiet``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from tqdm import tqdm

T = TypeVar("T")
_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet



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
    """A status line on stderr (stdout is kept for results scripts read)."""
    if not _QUIET and not _not_rank0():
        print(message, file=sys.stderr, flush=True)


def _not_rank0() -> bool:
    return os.environ.get("RANK", "0") not in ("", "0")



def warn(message: str) -> None:
    """A warning on stderr: shown even with ``--quiet`` (only rank 0 prints)."""
    if not _not_rank0():
        print(f"warning: {message}", file=sys.stderr, flush=True)
