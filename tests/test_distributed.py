"""When vtl joins a process group: under torchrun (even one process), never in a plain run."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch.distributed as dist

from pipeline.engine import distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_plain_run_stays_a_single_process(clean_env: pytest.MonkeyPatch) -> None:
    assert distributed.setup() == distributed.DistInfo()
    # RANK/WORLD_SIZE exported for sharding prepare/sample, without a rendezvous: still plain.
    clean_env.setenv("RANK", "0")
    clean_env.setenv("WORLD_SIZE", "1")
    info = distributed.setup()
    assert not info.enabled and not dist.is_initialized()


def test_one_process_under_torchrun_joins_the_group(clean_env: pytest.MonkeyPatch) -> None:
    # What torchrun --standalone --nproc_per_node 1 sets: the DDP code path must run, so that a
    # one-GPU machine checks nccl, the DDP wrapper and the collectives.
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(_free_port())}.items():
        clean_env.setenv(name, value)
    try:
        info = distributed.setup()
        assert info.enabled and info.joined and info.is_main and info.world_size == 1
        assert dist.is_initialized() and dist.get_backend() == "gloo"
        (a,) = distributed.gather_arrays(info, np.arange(3))
        assert a.tolist() == [0, 1, 2]
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
