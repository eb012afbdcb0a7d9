"""``vtl benchmark --executor local|ray|slurm``: one grid, three ways to run it, the same results.

A tiny grid (a linear probe of efficientnet_lite0's embedded ImageNet weights and the scratch
baseline, fraction 1, seeds 0 and 1: 4 cells of a few seconds each on 2-frame 32 px clips) runs
under each executor on a fresh copy of one sampled target, with one cell made to fail (a corrupt
``last.pt``): the other cells finish and give the same rows under every executor. Ray runs on a
local instance of 2 CPUs, Slurm through submitit's local cluster (jobs are processes here).
Then: a Ray worker killed mid-cell is retried and resumes; two executors sharing a workspace
train each cell once; the local runner pins each child to its device.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SOURCES = """
train:
  input_size: 32
  augment: none
  batch_size: 12
  head_epochs: 0
  scratch: {epochs: 2, lr: 0.003}
  linear: {epochs: 4, lr: 0.01}
sources:
  - {name: effnet, backbone: efficientnet_lite0, weights: imagenet1k}
"""
GRID = ("--strategies", "linear", "--fractions", "1", "--seeds", "2")
BROKEN = "bench-efficientnet_lite0-scratch-f1-s1"  # its last.pt is corrupt: the cell fails
FOLDERS = ("train", "eval", "features", "benchmark")  # what a benchmark writes into a workspace


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A sampled 3-class target (12 clips per class: 6 train / 3 val / 3 test) and a sources file."""
    from pipeline.data.sampling import SamplingConfig
    from pipeline.data.synthetic import TARGET_CLASSES, make_target_dataset
    from pipeline.stages.prepare import PrepareConfig, run_prepare
    from pipeline.stages.sample import SampleConfig, run_sample
    from pipeline.workspace import Workspace

    root = tmp_path_factory.mktemp("executors")
    make_target_dataset(root / "data", 12, size=32, frames=4, classes=TARGET_CLASSES[:3], shape_consistency=1.0)
    ws = Workspace(root / "target")
    run_prepare(ws, PrepareConfig(format="folder", root=root / "data", val_fraction=0.25, test_fraction=0.25,
                                  workers=0))
    run_sample(ws, SamplingConfig(frames=2, short_side=32), SampleConfig(workers=0))
    sources = root / "sources.yaml"
    sources.write_text(SOURCES)
    return {"ws": ws.root, "sources": sources}


def _fresh(target: dict[str, Path], name: str, *, broken: bool = True) -> Path:
    """A copy of the sampled target with nothing trained; ``broken``: one cell's last.pt corrupt."""
    ws = target["ws"].parent / name
    shutil.copytree(target["ws"], ws, ignore=shutil.ignore_patterns(*FOLDERS, ".lock*"))
    if broken:
        (ws / "train" / BROKEN).mkdir(parents=True)
        (ws / "train" / BROKEN / "last.pt").write_bytes(b"not a checkpoint")
    return ws


def _results(ws: Path) -> list[dict[str, str]]:
    with open(ws / "benchmark" / "results.csv", newline="") as f:
        return sorted(csv.DictReader(f), key=lambda r: r["run"])


def _invoke(*args: object):
    from click.testing import CliRunner

    from pipeline.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance of 2 CPUs for the module, shut down after it."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_three_executors_agree_and_survive_a_failing_cell(target, ray_cluster) -> None:
    runs = {"local": ("--max-parallel", "2"), "ray": (), "slurm": ("--slurm-cluster", "local")}
    results = {}
    for executor, extra in runs.items():
        ws = _fresh(target, f"ws-{executor}")
        _invoke("benchmark", ws, "--sources", target["sources"], *GRID, "--executor", executor, *extra)
        results[executor] = _results(ws)
    local = results["local"]
    assert [(r["run"], r["status"]) for r in local] == [
        ("bench-efficientnet_lite0-scratch-f1-s0", "ok"), (BROKEN, "failed"),
        ("bench-effnet-linear-f1-s0", "ok"), ("bench-effnet-linear-f1-s1", "ok")]
    assert local[1]["error"]
    for executor in ("ray", "slurm"):
        rows = results[executor]
        assert [(r["run"], r["status"]) for r in rows] == [(r["run"], r["status"]) for r in local], executor
        for mine, theirs in zip(rows, local, strict=True):
            if mine["status"] == "ok":
                assert float(mine["top1"]) == pytest.approx(float(theirs["top1"]), abs=1e-6), (executor, mine)
                assert float(mine["mean_class_accuracy"]) == pytest.approx(float(theirs["mean_class_accuracy"]),
                                                                           abs=1e-6)
    # Feature extraction ran as a task of its own (ray, slurm) before the cells.
    assert (target["ws"].parent / "ws-ray" / "benchmark" / "owners" / "extract-extract-effnet.ended").is_file()
