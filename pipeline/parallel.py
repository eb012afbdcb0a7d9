"""Run a function over many files in a process pool, with a time limit per item.

Used by ``prepare`` (probing) and ``sample`` (decoding). At most ``workers``
items are in flight, so an item's wait is its own run time; an item that
exceeds ``timeout`` seconds gets a :class:`TimedOut` result and the pool is
restarted (the only way to stop a decoder stuck inside C code), the other
in-flight items being resubmitted.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pipeline.progress import bar


class TimedOut:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"TimedOut({self.seconds}s)"


def run_pool(func: Callable[[Any], Any], items: Sequence[Any], *, workers: int, timeout: float | None,
             desc: str, unit: str = "file") -> Iterator[tuple[int, Any]]:
    """Yield ``(index, result)`` as items finish (any order).

    ``workers <= 0`` runs in this process, without a time limit (for debugging).
    ``func`` must be a module-level function: workers are spawned, not forked,
    so decoder threads and torch state of the parent are never inherited.
    """
    progress = bar(total=len(items), desc=desc, unit=unit)
    try:
        if workers <= 0 or len(items) <= 1 and timeout is None:
            for i, item in enumerate(items):
                yield i, func(item)
                progress.update(1)
            return
        yield from _pooled(func, items, workers, timeout, progress)
    finally:
        progress.close()


def _pooled(func, items, workers, timeout, progress) -> Iterator[tuple[int, Any]]:
    ctx = mp.get_context("spawn")
    pending = list(range(len(items)))[::-1]
    running: dict[int, tuple[Any, float]] = {}
    pool = ctx.Pool(workers)
    try:
        while pending or running:
            while pending and len(running) < workers:
                i = pending.pop()
                running[i] = (pool.apply_async(func, (items[i],)), time.monotonic())
            finished = [i for i, (res, _) in running.items() if res.ready()]
            for i in finished:
                res, _ = running.pop(i)
                yield i, res.get()
                progress.update(1)
            if finished:
                continue
            now = time.monotonic()
            late = [i for i, (_, t0) in running.items() if timeout is not None and now - t0 > timeout]
            if late:
                for i in late:
                    running.pop(i)
                    yield i, TimedOut(timeout)
                    progress.update(1)
                pool.terminate()
                pool.join()
                pending.extend(running)  # resubmit the innocent in-flight items
                running.clear()
                pool = ctx.Pool(workers)
                continue
            next(iter(running.values()))[0].wait(0.02)
    finally:
        pool.terminate()
        pool.join()
