"""Run a function over many files in a process pool, with a time limit per item.

Used by ``prepare`` (probing) and ``sample`` (decoding). At most ``workers``
items are in flight, so an item's wait is its own run time; an item that
exceeds ``timeout`` seconds gets a :class:`TimedOut` result and the pool is
restarted (the only way to stop a decoder stuck inside C code), the other
in-flight items being resubmitted.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pipeline.progress import bar

# Default process count of the pools: a few, leaving a core to the parent on small machines.
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


class TimedOut:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"TimedOut({self.seconds}s)"


def run_pool(func: Callable[[Any], Any], items: Iterable[Any], *, workers: int, timeout: float | None,
             desc: str, unit: str = "file", total: int | None = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, result)`` as items finish (any order).

    ``items`` may be a lazy iterable (then give its length as ``total``): it is
    read only as items are submitted, so a long list never has to be in memory.
    ``workers <= 0`` runs in this process, without a time limit (for debugging).
    ``func`` must be a module-level function: workers are spawned, not forked,
    so decoder threads and torch state of the parent are never inherited.
    """
    total = len(items) if total is None else total  # type: ignore[arg-type]
    if total == 0:
        return  # nothing to do: do not spawn a pool
    progress = bar(total=total, desc=desc, unit=unit)
    try:
        if workers <= 0 or total <= 1 and timeout is None:
            for i, item in enumerate(items):
                yield i, func(item)
                progress.update(1)
            return
        yield from _pooled(func, items, workers, timeout, progress)
    finally:
        progress.close()


def _pooled(func, items, workers, timeout, progress) -> Iterator[tuple[int, Any]]:
    ctx = mp.get_context("spawn")
    source = enumerate(items)
    retry: list[tuple[int, Any]] = []  # in flight when the pool was restarted
    running: dict[int, tuple[Any, float, Any]] = {}
    # The pool's result thread reports each finished item here, so the next one is submitted
    # at once: polling would leave a worker idle for up to a poll interval after every item,
    # a large share of the time when an item takes tens of milliseconds.
    finished: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
    generation = 0  # items of a terminated pool may still report; ignore them
    pool = ctx.Pool(workers)
    try:
        while True:
            while len(running) < workers and (job := retry.pop() if retry else next(source, None)):
                i, item = job
                report = functools.partial(_report, finished, generation, i)
                running[i] = (pool.apply_async(func, (item,), callback=report, error_callback=report),
                              time.monotonic(), item)
            if not running:
                break
            try:
                gen, i = finished.get(timeout=_time_left(running, timeout))
            except queue.Empty:
                gen, i = -1, -1
            if gen == generation and i in running:
                res, _, _ = running.pop(i)
                yield i, res.get()
                progress.update(1)
                continue
            now = time.monotonic()
            late = [i for i, (_, t0, _) in running.items() if timeout is not None and now - t0 > timeout]
            if late:
                for i in late:
                    running.pop(i)
                    yield i, TimedOut(timeout)
                    progress.update(1)
                pool.terminate()
                pool.join()
                retry.extend((i, item) for i, (_, _, item) in running.items())  # the innocent ones
                running.clear()
                generation += 1
                pool = ctx.Pool(workers)
    finally:
        pool.terminate()
        pool.join()


def _report(finished: queue.SimpleQueue, generation: int, i: int, _result: Any) -> None:
    finished.put((generation, i))


def _time_left(running: dict[int, tuple[Any, float, Any]], timeout: float | None) -> float | None:
    """Seconds until the oldest running item passes its time limit (None: no limit)."""
    if timeout is None or not running:
        return None
    oldest = min(t0 for _, t0, _ in running.values())
    return max(0.0, oldest + timeout - time.monotonic()) + 0.01
