"""``pipeline.parallel.run_pool``: lazy input, per-item time limit, errors (real spawned workers;
stdlib functions as the work so the workers need nothing from the tests)."""

from __future__ import annotations

import math
import time

import pytest

from pipeline.parallel import TimedOut, run_pool


def test_reads_items_only_as_it_submits_them() -> None:
    pulled: list[float] = []

    def items():
        for x in [0.05] * 8:
            pulled.append(x)
            yield x

    results = run_pool(time.sleep, items(), workers=2, timeout=30, desc="t", total=8)
    next(results)
    assert len(pulled) <= 3  # two in flight, perhaps a third submitted: not all eight
    assert len(list(results)) == 7 and len(pulled) == 8


def test_an_item_over_its_time_limit_times_out_and_the_others_finish() -> None:
    delays = [0.01, 0.01, 60, 0.01, 0.01, 0.01]
    start = time.monotonic()
    results = dict(run_pool(time.sleep, delays, workers=2, timeout=1.0, desc="t"))
    assert time.monotonic() - start < 30
    assert sorted(results) == list(range(len(delays)))
    assert isinstance(results[2], TimedOut)
    assert all(results[i] is None for i in (0, 1, 3, 4, 5))  # resubmitted after the restart if in flight


def test_an_error_in_a_worker_is_raised_here() -> None:
    with pytest.raises(ValueError, match="math domain error"):
        list(run_pool(math.sqrt, [4.0, 9.0, -1.0, 16.0], workers=2, timeout=30, desc="t"))


def test_nothing_to_do() -> None:
    assert list(run_pool(math.sqrt, [], workers=2, timeout=30, desc="t")) == []
