"""DDP under ``torchrun``: process-group set-up, rank checks and gathering results.

``torchrun --nproc_per_node N -m pipeline train …`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous variables; :func:`setup` reads them and picks
``nccl`` on GPUs, ``gloo`` on CPUs. Without them everything here is a no-op, so
the same code runs on one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup() -> DistInfo:
    """Join the process group torchrun described (once per process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return DistInfo(rank, world, local)


def device(info: DistInfo) -> torch.device:
    return torch.device(f"cuda:{info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def gather_arrays(info: DistInfo, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Concatenate each array over all ranks (in rank order); identity on one process."""
    if not info.enabled:
        return arrays
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, arrays)
    return tuple(np.concatenate([g[i] for g in gathered]) for i in range(len(arrays)))


