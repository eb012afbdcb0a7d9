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
import dataclasses
import os
import re
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
GRID = ("--strategies", "linear", "--fractions", "1", "--seeds", "2", "--no-select-lr")  # one rate: fixed run names
BROKEN = "bench-efficientnet_lite0-scratch-f1-s1"  # its last.pt is corrupt: the cell fails
FOLDERS = ("train", "eval", "features", "benchmark")  # what a benchmark writes into a workspace


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory):
    """A sampled 3-class target (12 clips per class: 6 train / 3 val / 3 test) and a sources file;
    torch on one thread here and in the workers (Slurm jobs inherit it; Ray sets it itself): on a
    loaded 2-core machine far faster than oversubscribed threads."""
    import torch

    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
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
    yield {"ws": ws.root, "sources": sources}
    torch.set_num_threads(threads)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = omp


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
    runs = {"local": (), "ray": (), "slurm": ("--slurm-cluster", "local")}
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


@pytest.mark.slow
def test_a_lost_ray_worker_is_retried_and_resumes_from_last_pt(target, ray_cluster) -> None:
    """The worker running a cell is killed (SIGKILL, from here) once the cell has saved its first
    epoch: Ray runs the task again, which takes over its own ownership record and resumes."""
    from pipeline.benchmark.ownership import read_record
    from pipeline.benchmark.ray_executor import RayExecutor
    from pipeline.benchmark.runner import FINISHED, run_tasks
    from pipeline.benchmark.tasks import TRAIN, Task
    from pipeline.engine.config import TrainConfig
    from pipeline.stages.benchmark import run_task
    from pipeline.workspace import Workspace

    ws = Workspace(_fresh(target, "ws-lost", broken=False))
    cfg = TrainConfig(backbone="efficientnet_lite0", strategy="scratch", epochs=6, lr=0.003, batch_size=12,
                      input_size=32, augment="none", name="lost")
    task = Task(TRAIN, "lost", dataclasses.asdict(cfg))
    executor = RayExecutor(run_task, 60.0, None, gpus=1.0, linear_gpus=0.25, cpus=1.0)
    statuses: dict[str, str] = {}
    driver = threading.Thread(target=lambda: statuses.update(run_tasks(ws, [task], executor=executor)))
    driver.start()
    owner = ws.benchmark_dir / "owners" / "train-lost.owner"
    deadline = time.monotonic() + 120
    while (record := read_record(owner)) is None or not ws.run("lost").last.is_file():
        assert time.monotonic() < deadline and driver.is_alive(), "the cell never started"
        time.sleep(0.02)
    assert record["pid"] != os.getpid()
    os.kill(record["pid"], signal.SIGKILL)
    driver.join(timeout=240)
    assert statuses == {"train-lost": FINISHED}
    assert read_record(ws.benchmark_dir / "owners" / "train-lost.ended")["attempt"] == 2
    assert [h["epoch"] for h in ws.run("lost").history()] == [1, 2, 3, 4, 5, 6]  # resumed, not replayed twice
    assert ws.run("lost").is_evaluated


@pytest.mark.slow
def test_two_executors_sharing_a_workspace_train_each_cell_once(target) -> None:
    """Two `vtl benchmark` processes at once on one workspace, two child processes each: every
    cell's log (appended to by both) shows its epochs once, and both report the whole grid."""
    ws = _fresh(target, "ws-shared", broken=False)
    command = [sys.executable, "-m", "pipeline", "benchmark", str(ws), "--sources", str(target["sources"]), *GRID,
               "--max-parallel", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert any("another executor" in err for _, err in outputs)  # they did meet
    rows = _results(ws)
    assert [r["status"] for r in rows] == ["ok"] * 4
    for r in rows:
        epochs = 4 if r["strategy"] == "linear" else 2
        log = (ws / "benchmark" / "logs" / f"{r['run']}.log").read_text()
        trained = re.findall(r"epoch (\d+)/(\d+): loss", log)  # a finished epoch's line
        assert trained == [(str(e), str(epochs)) for e in range(1, epochs + 1)], (r["run"], log)


@pytest.mark.slow
def test_local_children_are_pinned_to_their_devices(target) -> None:
    """Given devices 0 and 1 (no GPU here: the children end up on the CPU all the same), each of
    two children at once gets one of them as its CUDA_VISIBLE_DEVICES, as its log records (the
    real child command, re-evaluating two cells on the val split)."""
    from pipeline.benchmark.runner import FINISHED, LocalExecutor, run_tasks
    from pipeline.benchmark.tasks import TEST, Task
    from pipeline.engine.config import EvaluateConfig
    from pipeline.stages.benchmark import CHILD_COMMAND, run_task
    from pipeline.workspace import Workspace

    ws = Workspace(target["ws"].parent / "ws-local")  # trained by the first test
    if not ws.run("bench-effnet-linear-f1-s0").is_evaluated:
        ws = Workspace(_fresh(target, "ws-pinned", broken=False))
        _invoke("benchmark", ws.root, "--sources", target["sources"], *GRID)
    runs = ("bench-effnet-linear-f1-s0", "bench-efficientnet_lite0-scratch-f1-s0")
    tasks = [Task(TEST, run, dataclasses.asdict(EvaluateConfig(run=run, split="val"))) for run in runs]
    executor = LocalExecutor(run_task, CHILD_COMMAND, 60.0, max_parallel=2, devices=("0", "1"))
    assert run_tasks(ws, tasks, executor=executor) == {f"test-{t.run}": FINISHED for t in tasks}
    seen = []
    for t in tasks:
        log = (ws.benchmark_dir / "logs" / f"{t.run}.test.log").read_text()
        seen += re.findall(rf"benchmark: test {t.run}: pid \d+ on .*, CUDA_VISIBLE_DEVICES=(\S*)", log)
    assert sorted(seen) == ["0", "1"], seen


@pytest.mark.slow
def test_slurm_no_wait_submits_a_driver_then_collect_reports(target) -> None:
    """--no-wait submits the benchmark as one driver job and returns; the driver (on submitit's
    local cluster: a process here) writes results.csv; --collect rebuilds it from the ended cells."""
    ws = target["ws"].parent / "ws-slurm"  # run by the first test
    if not (ws / "benchmark" / "results.csv").is_file():
        ws = _fresh(target, "ws-no-wait")
    before = _results(ws) if (ws / "benchmark" / "results.csv").is_file() else None
    (ws / "benchmark" / "results.csv").unlink(missing_ok=True)
    slurm = ("--executor", "slurm", "--slurm-cluster", "local")
    result = _invoke("benchmark", ws, "--sources", target["sources"], *GRID, *slurm, "--no-wait")
    assert result.stdout.startswith("submitted the benchmark as job ")
    deadline = time.monotonic() + 300
    while not (ws / "benchmark" / "results.csv").is_file():
        assert time.monotonic() < deadline, "the driver job wrote no results.csv"
        time.sleep(0.5)
    rows = _results(ws)
    assert [(r["run"], r["status"]) for r in rows] == [
        ("bench-efficientnet_lite0-scratch-f1-s0", "ok"), (BROKEN, "failed"),
        ("bench-effnet-linear-f1-s0", "ok"), ("bench-effnet-linear-f1-s1", "ok")]
    if before is not None:
        assert [r["top1"] for r in rows] == [r["top1"] for r in before]
    time.sleep(1.0)  # the driver writes the report after results.csv
    (ws / "benchmark" / "results.csv").unlink()
    collected = _invoke("benchmark", ws, "--sources", target["sources"], *GRID, "--collect")
    assert "collecting 4 ended cell(s); 0 not ended yet" in collected.stderr
    assert [(r["run"], r["top1"]) for r in _results(ws)] == [(r["run"], r["top1"]) for r in rows]


def test_missing_extra_and_bad_device_are_one_line_errors(target, monkeypatch, capsys) -> None:
    from pipeline.cli import main
    from pipeline.engine import distributed
    from pipeline.errors import UserError

    for executor, module, extra in (("ray", "ray", "Ray"), ("slurm", "submitit", "submitit")):
        with monkeypatch.context() as m:
            m.setitem(sys.modules, module, None)  # as if not installed: `import` raises ImportError
            with pytest.raises(SystemExit) as e:
                main(["benchmark", str(target["ws"]), "--sources", str(target["sources"]), "--executor", executor])
        assert e.value.code == 2
        assert capsys.readouterr().err == f"error: --executor {executor} needs {extra}: pip install 'vtl[{executor}]'\n"
    assert distributed.device(distributed.DistInfo(requested="cpu")).type == "cpu"
    with pytest.raises(UserError, match="--device must be cpu, cuda or cuda:N, got 'tpu'"):
        distributed.device(distributed.DistInfo(requested="tpu"))
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda:1: no GPU is visible"):
            distributed.device(distributed.DistInfo(requested="cuda:1"))
    with pytest.raises(SystemExit) as e:
        main(["benchmark", str(target["ws"]), "--sources", str(target["sources"]), "--executor", "local",
              "--no-wait"])
    assert e.value.code == 2 and "--no-wait submits a driver job" in capsys.readouterr().err


def test_ownership_of_a_dead_owner_is_taken_over_once_stale_by_one_taker(tmp_path: Path) -> None:
    """A process owning a task is killed: its record stops being refreshed; a live owner's record
    is not taken, a stale one is, by exactly one of several executors trying at once."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.benchmark.ownership import Ownership, read_record
    from pipeline.benchmark.tasks import TRAIN, Task
    from pipeline.workspace import Workspace

    ws, task, stale = Workspace(tmp_path / "ws"), Task(TRAIN, "cell", {}), 1.0
    code = ("import sys, time; from pipeline.benchmark.ownership import Ownership; "
            "from pipeline.benchmark.tasks import Task; from pipeline.workspace import Workspace; "
            f"o = Ownership(Workspace(sys.argv[1]), Task('train', 'cell', {{}}), executor='dead', "
            f"stale_after={stale}); "
            "assert o.acquire(); print('owned', flush=True); time.sleep(60)")
    owner = subprocess.Popen([sys.executable, "-c", code, str(ws.root)], stdout=subprocess.PIPE, text=True)
    assert owner.stdout.readline().strip() == "owned"
    time.sleep(stale * 1.5)  # alive: its heartbeat keeps the record fresh
    assert not Ownership(ws, task, executor="other", stale_after=stale).acquire()
    owner.kill()
    owner.wait()
    time.sleep(stale * 1.5)
    takers = [Ownership(ws, task, executor=f"taker-{i}", stale_after=stale) for i in range(6)]
    with ThreadPoolExecutor(len(takers)) as pool:
        won = list(pool.map(lambda o: o.acquire(), takers))
    assert won.count(True) == 1, won
    winner = takers[won.index(True)]
    assert read_record(winner.path)["executor"] == winner.executor
    winner.release()
    assert not winner.path.exists()
