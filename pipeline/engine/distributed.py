"""DDP under ``torchrun``: process-group set-up, rank checks and gathering results.

``torchrun --nproc_per_node N -m pipeline train …`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous variables; :func:`setup` reads them and picks
``nccl`` on GPUs, ``gloo`` on CPUs. Under torchrun the process group is joined even
with one process (as torchvision's references do), so ``--nproc_per_node 1`` runs
the DDP code path of N processes: the way to check ``nccl`` and DDP on one GPU.
Without those variables (a plain ``vtl train``) everything here is a no-op, so the
same code runs on one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pipeline.errors import UserError
from pipeline.progress import echo


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    joined: bool = False  # in a process group (always, under torchrun)
    requested: str | None = None  # --device: cpu, cuda or cuda:N (None: cuda:LOCAL_RANK if any, else cpu)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """DDP, distributed sampling and collectives are on."""
        return self.joined or self.world_size > 1


def setup(requested: str | None = None) -> DistInfo:
    """Join the process group torchrun described (once per process); ``requested`` is the
    ``--device`` of the stage (see :func:`device`).

    torchrun always sets ``MASTER_ADDR``: requiring it with ``RANK`` keeps a shell that merely
    exports ``RANK=0 WORLD_SIZE=1`` (e.g. for sharding ``prepare``) a plain single process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launched = "RANK" in os.environ and "MASTER_ADDR" in os.environ
    if world <= 1 and not launched:
        info = DistInfo(requested=requested)
        device(info)  # a bad --device fails before any work
        return info
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    info = DistInfo(rank, world, local, joined=True, requested=requested)
    if not dist.is_initialized():
        backend = "nccl" if device(info).type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(device(info))
        dist.init_process_group(backend)
        echo(f"distributed: {world} process(es), backend {dist.get_backend()}")
    return info


def device(info: DistInfo) -> torch.device:
    """The device of this process: ``--device`` when given (``cuda`` under torchrun: the local
    rank's GPU), else the local rank's GPU when there is one, else the CPU."""
    kind = (info.requested or ("cuda" if torch.cuda.is_available() else "cpu")).strip().lower()
    if kind == "cpu":
        return torch.device("cpu")
    if kind != "cuda" and not kind.startswith("cuda:"):
        raise UserError(f"--device must be cpu, cuda or cuda:N, got {info.requested!r}")
    index = info.local_rank if kind == "cuda" else _index(kind)
    if not torch.cuda.is_available():
        raise UserError(f"--device {kind}: no GPU is visible to this process (CUDA_VISIBLE_DEVICES="
                        f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); use --device cpu")
    if index >= torch.cuda.device_count():
        raise UserError(f"--device {kind}: this process sees {torch.cuda.device_count()} GPU(s)")
    return torch.device(f"cuda:{index}")


def _index(kind: str) -> int:
    try:
        return int(kind.removeprefix("cuda:"))
    except ValueError:
        raise UserError(f"--device must be cpu, cuda or cuda:N, got {kind!r}") from None


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


