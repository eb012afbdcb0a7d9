"""Reproducible, traceable runs: the same command gives the same numbers (synthetic data, training,
a benchmark from scratch), every result records where it came from (provenance), each stage run
keeps a log, and ``--tracker mlflow`` finds its runs in a local file store."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, invoke_vtl

PROVENANCE_KEYS = {"vtl_version", "python", "packages", "cuda", "cudnn", "gpus", "git_commit", "hostname",
                   "command", "started", "finished", "clip_cache", "feature_cache"}
PACKAGES = {"torch", "torchvision", "pytorchvideo", "av", "decord", "numpy"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """torch on one thread: far faster than two on a loaded 2-core machine (see tests/test_benchmark.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.mp4"))}


def _assert_provenance(record: dict, *, clip_cache: bool = True) -> None:
    assert set(record) == PROVENANCE_KEYS
    assert set(record["packages"]) == PACKAGES
    assert torch.__version__.startswith(record["packages"]["torch"])
    assert record["finished"] >= record["started"]
    assert record["git_commit"] is None or len(record["git_commit"].split("+")[0]) == 40
    assert record["command"]
    if clip_cache:
        assert record["clip_cache"]


# ----------------------------------------------------------------------------- synthetic data


GENERATE = """
import sys
from pathlib import Path
from pipeline.data.synthetic import TARGET_CLASSES, make_source_dataset, make_target_dataset
make_target_dataset(Path(sys.argv[1]) / "target", 2, size=32, frames=8, classes=TARGET_CLASSES[:3])
make_source_dataset(Path(sys.argv[1]) / "source", 1, size=32, frames=8)
"""


def test_synthetic_videos_are_byte_identical_across_processes(tmp_path: Path) -> None:
    """The generator is seeded and encodes single-threaded with fixed options: two processes write
    the same bytes."""
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", GENERATE, str(tmp_path / name)], check=True, cwd=REPO, timeout=120)
    a, b = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert len(a) == 3 * 2 + 6 and a == b


def test_the_encoder_writes_the_same_bytes_every_time_in_one_process(tmp_path: Path) -> None:
    """The same frames encoded again and again in one process give one file. (x264's macroblock-tree
    rate control, on by default, made about one encode in ten differ at 64 px, even on one thread.)"""
    import numpy as np

    from pipeline.data.synthetic import TARGET_CLASSES, make_clip, write_video

    rng = np.random.default_rng(0)
    for n, cls in enumerate(TARGET_CLASSES[:4]):
        clip = make_clip(cls.motion, cls.shape, "target", rng, size=64, frames=16, hue=cls.hue)
        digests = set()
        for i in range(20):
            write_video(tmp_path / f"{n}_{i}.mp4", clip)
            digests.add(hashlib.sha256((tmp_path / f"{n}_{i}.mp4").read_bytes()).hexdigest())
        assert len(digests) == 1, (cls.name, len(digests))


# ----------------------------------------------------------------------------- train, evaluate


def _workspace(path: Path, data: Path) -> Path:
    invoke_vtl("-q", "prepare", path, "--format", "folder", "--root", data, "--workers", "0")
    invoke_vtl("-q", "sample", path, "--frames", "2", "--short-side", "32", "--workers", "0")
    return path


@pytest.fixture(scope="module")
def trained(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny workspace with the same deterministic scratch run trained twice (runs a and b), and
    run a evaluated."""
    ws = _workspace(tmp_path_factory.mktemp("repro") / "ws", tiny_dataset)
    for name in ("a", "b"):
        invoke_vtl("train", ws, "--backbone", "resnet18", "--strategy", "scratch", "--input-size", "32",
                   "--epochs", "2", "--batch-size", "4", "--deterministic", "--name", name)
    invoke_vtl("-q", "evaluate", ws, "--run", "a", "--deterministic")
    return ws


def test_train_twice_with_deterministic_gives_identical_weights_and_metrics(trained: Path) -> None:
    a, b = (torch.load(trained / "train" / n / "best.pt", weights_only=True) for n in ("a", "b"))
    assert a["model"].keys() == b["model"].keys()
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    history = [[json.loads(line) for line in (trained / "train" / n / "metrics.jsonl").read_text().splitlines()]
               for n in ("a", "b")]
    timing = {"train_seconds", "clips_per_s"}
    assert len(history[0]) == 2
    assert [{k: v for k, v in h.items() if k not in timing} for h in history[0]] == \
        [{k: v for k, v in h.items() if k not in timing} for h in history[1]]


def test_config_and_metrics_record_their_provenance(trained: Path) -> None:
    config = yaml.safe_load((trained / "train" / "a" / "config.yaml").read_text())
    _assert_provenance(config["provenance"])
    assert config["provenance"]["clip_cache"] == config["sampling"]
    metrics = json.loads((trained / "eval" / "a" / "metrics.json").read_text())
    _assert_provenance(metrics["provenance"])
    assert metrics["provenance"]["clip_cache"] == config["sampling"]
    # The run's settings, as a resumed run and the benchmark compare them, leave the provenance out.
    from pipeline.workspace import Workspace

    run = Workspace(trained).run("a")
    assert "provenance" not in run.config() and run.provenance()["hostname"]


def test_train_log_holds_the_epoch_lines_and_tensorboard_scalars_are_written(trained: Path) -> None:
    log = (trained / "train" / "a" / "train.log").read_text()
    assert "epoch 1/2: loss" in log and "epoch 2/2: loss" in log
    assert "provenance: vtl" in log  # a detail line: in the log, on the terminal with --verbose only
    assert "%|" not in log  # no progress bars
    assert "evaluate: a on test" in (trained / "eval" / "a" / "evaluate.log").read_text()
    assert list((trained / "train" / "a" / "tensorboard").glob("events.out.tfevents.*"))


def test_report_shows_a_provenance_line(trained: Path) -> None:
    invoke_vtl("-q", "report", trained)
    assert "- `a`: provenance: vtl " in (trained / "report.md").read_text()


def test_quiet_and_verbose(trained: Path, tmp_path: Path) -> None:
    import shutil

    ws = Path(shutil.copytree(trained, tmp_path / "ws"))
    verbose = invoke_vtl("-v", "evaluate", ws, "--run", "b")
    assert "provenance: vtl" in verbose.stderr
    quiet = invoke_vtl("-q", "evaluate", ws, "--run", "b")
    assert quiet.stderr == ""
    assert (ws / "eval" / "b" / "evaluate.log").read_text().count("evaluate: b on test") == 2  # logged anyway


def test_no_tensorboard(tiny_dataset: Path, tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", tiny_dataset)
    invoke_vtl("-q", "train", ws, "--backbone", "resnet18", "--strategy", "scratch", "--input-size", "32",
               "--epochs", "1", "--batch-size", "4", "--no-tensorboard")
    assert not (ws / "train" / "resnet18-scratch" / "tensorboard").exists()


# ----------------------------------------------------------------------------- MLflow


def test_mlflow_tracker_logs_params_metrics_provenance_and_checkpoint(tiny_dataset: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    ws = _workspace(tmp_path / "ws", tiny_dataset)
    invoke_vtl("-q", "train", ws, "--backbone", "resnet18", "--strategy", "scratch", "--input-size", "32",
               "--epochs", "2", "--batch-size", "4", "--tracker", "mlflow", "--no-tensorboard")
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ws").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "resnet18-scratch" and run.info.status == "FINISHED"
    assert run.data.params["backbone"] == "resnet18" and run.data.params["epochs"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"best.pt", "provenance.json"} <= artifacts
    assert run.data.tags["vtl.git_commit"]


# ----------------------------------------------------------------------------- benchmark


SOURCES = """
train:
  input_size: 32
  augment: none
  scratch: {epochs: 2, lr: 0.003, batch_size: 12}
  linear: {epochs: 3, lr: 0.01}
sources:
  - {name: imagenet, backbone: efficientnet_lite0, weights: imagenet1k}
"""


def _top1(ws: Path) -> list[tuple[str, str]]:
    with open(ws / "benchmark" / "results.csv", newline="") as f:
        return [(r["run"], r["top1"]) for r in csv.DictReader(f)]


def test_benchmark_rerun_from_scratch_gives_identical_top1_and_nested_mlflow_runs(tiny_dataset: Path,
                                                                                    tmp_path: Path) -> None:
    """The smallest grid (one packaged source as a linear probe and its scratch baseline, one
    fraction, one seed) twice, each into a new workspace: the same top-1 per cell. The first one
    also tracks into MLflow: a parent run and one nested run per cell."""
    from mlflow.tracking import MlflowClient

    sources = tmp_path / "sources.yaml"
    sources.write_text(SOURCES)
    args = ("--sources", sources, "--strategies", "linear", "--fractions", "1.0", "--seeds", "1", "--no-select-lr",
            "--deterministic")
    first = _workspace(tmp_path / "first", tiny_dataset)
    invoke_vtl("-q", "benchmark", first, *args, "--tracker", "mlflow")
    second = _workspace(tmp_path / "second", tiny_dataset)
    invoke_vtl("-q", "benchmark", second, *args)
    assert len(_top1(first)) == 2 and _top1(first) == _top1(second)

    summary = json.loads((first / "benchmark" / "summary.json").read_text())
    _assert_provenance(summary["provenance"], clip_cache=False)
    assert "provenance: vtl" in (first / "benchmark" / "report.md").read_text()
    assert "benchmark: 1 source(s)" in (first / "benchmark" / "benchmark.log").read_text()
    cell = yaml.safe_load((first / "train" / _top1(first)[0][0] / "config.yaml").read_text())
    _assert_provenance(cell["provenance"])

    client = MlflowClient((first / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("first").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_name for r in parents] == ["benchmark"]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert set(children) == {run for run, _ in _top1(first)}
    for run, top1 in _top1(first):
        assert children[run].data.metrics["test_video_top1"] == pytest.approx(float(top1), abs=1e-6)
    assert "summary.json" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}


def test_tracker_mlflow_without_mlflow_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capfd: pytest.CaptureFixture) -> None:
    from conftest import vtl_main

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: importing it raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    ws = tmp_path / "ws"
    code = vtl_main("train", ws, "--backbone", "resnet18", "--strategy", "scratch", "--tracker", "mlflow")
    assert code == 2
    err = capfd.readouterr().err
    assert "error: --tracker mlflow needs MLflow: pip install 'vtl[mlflow]'" in err.splitlines()


# The demo twice into two folders (same videos, same numbers): tests/test_demo.py.
