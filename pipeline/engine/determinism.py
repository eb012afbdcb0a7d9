"""``--deterministic``: the same run twice gives the same weights and numbers, on a GPU too.

On a CPU two identical runs already agree (single process, fixed seeds). On a GPU cuDNN picks
convolution algorithms by timing (``cudnn.benchmark``) and several CUDA kernels accumulate in a
non-deterministic order; this mode turns both off: ``torch.use_deterministic_algorithms`` (an op
without a deterministic CUDA implementation, e.g. the backward of 3D adaptive pooling, warns once
instead of failing the run), ``cudnn.deterministic``, no ``cudnn.benchmark``, and
``CUBLAS_WORKSPACE_CONFIG`` for deterministic cuBLAS. Cost: on a GPU training is typically 10-30%
slower (slower convolution algorithms, no autotuning); on a CPU about nothing. DataLoader worker
processes are always seeded from the loader's seed (:func:`seed_worker`), deterministic mode or not.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs to be deterministic (CUDA >= 10.2)


@contextmanager
def deterministic_mode(on: bool) -> Iterator[None]:
    """Deterministic kernels while inside when ``on`` (then the previous settings again)."""
    if not on:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
                os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = previous[4] or CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2], previous[3]
        if previous[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` of every DataLoader: numpy and ``random`` in a worker process seeded from the
    seed torch gives that worker (itself drawn from the loader's seeded generator)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
