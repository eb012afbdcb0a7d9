"""The training engine: exact resume after SIGKILL, torchrun (DDP on gloo), early stopping."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.data.sampling import SamplingConfig
from pipeline.data.synthetic import make_target_dataset
from pipeline.stages.prepare import PrepareConfig, run_prepare
from pipeline.stages.sample import SampleConfig, run_sample
from pipeline.workspace import Workspace

pytestmark = pytest.mark.slow

TRAIN = ["--backbone", "x3d_xs", "--strategy", "scratch", "--epochs", "4", "--input-size", "32",
         "--batch-size", "4", "--lr", "0.003", "--seed", "3"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("engine")
    data = make_target_dataset(root / "data", 8, size=32, frames=8, seed=5)
    ws = Workspace(root / "ws")
    run_prepare(ws, PrepareConfig(format="folder", root=data, val_fraction=0.25, test_fraction=0.25, workers=1))
    run_sample(ws, SamplingConfig(frames=4, short_side=32, clips_per_video=2), SampleConfig(workers=1))
    return ws.root


def vtl(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--quiet", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return out


def epochs_done(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_resume_after_sigkill_ends_like_an_uninterrupted_run(workspace: Path) -> None:
    finish(vtl("train", str(workspace), *TRAIN, "--name", "straight"))

    killed = workspace / "train" / "killed"
    proc = vtl("train", str(workspace), *TRAIN, "--name", "killed")
    deadline = time.monotonic() + 300
    while epochs_done(killed) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # well into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= epochs_done(killed) < 4, "the kill must land mid-run"
    for name in ("last.pt", "best.pt", "metrics.jsonl", "config.yaml"):  # complete files or none
        path = killed / name
        if path.suffix == ".pt":
            torch.load(path, weights_only=True)
        else:
            assert path.read_text().endswith("\n")

    finish(vtl("train", str(workspace), *TRAIN, "--name", "killed"))
    # last.pt holds the final weights and every epoch's history; best.pt may date from before the kill.
    for name in ("last.pt", "best.pt"):
        a = torch.load(workspace / "train" / "straight" / name, weights_only=True)
        b = torch.load(killed / name, weights_only=True)
        epochs = 4 if name == "last.pt" else a["epoch"]
        assert b["epoch"] == a["epoch"] and len(b["history"]) == len(a["history"]) == epochs
        assert abs(b["best_val_top1"] - a["best_val_top1"]) <= 1e-6
        for x, y in zip(a["history"], b["history"], strict=True):
            assert abs(x["val_top1"] - y["val_top1"]) <= 1e-6
            assert abs(x["train_loss"] - y["train_loss"]) <= 1e-4
        for key, tensor in a["model"].items():
            torch.testing.assert_close(b["model"][key], tensor, atol=1e-5, rtol=1e-4)
    assert not list(killed.glob(".*.tmp"))


def test_a_finished_run_is_not_retrained(workspace: Path) -> None:
    run = workspace / "train" / "straight"
    if not (run / "best.pt").is_file():
        finish(vtl("train", str(workspace), *TRAIN, "--name", "straight"))
    mtime = (run / "last.pt").stat().st_mtime_ns
    finish(vtl("train", str(workspace), *TRAIN, "--name", "straight"))
    assert (run / "last.pt").stat().st_mtime_ns == mtime


def test_early_stopping_stops_after_patience_epochs_without_gain(workspace: Path) -> None:
    finish(vtl("train", str(workspace), "--backbone", "efficientnet_lite0", "--strategy", "linear",
               "--input-size", "32", "--epochs", "40", "--lr", "1e-6", "--patience", "2", "--name", "patient"))
    history = [json.loads(line) for line in
               (workspace / "train" / "patient" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) < 40
    scores = [h["val_top1"] for h in history]
    assert len(scores) - 1 - scores.index(max(scores)) == 2


def _torchrun(*args: str) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "pipeline", "--quiet"]
    proc = subprocess.run([*torchrun, *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_torchrun_two_processes_match_one_process(workspace: Path, tmp_path: Path) -> None:
    # Two ranks of batch B average their gradients into exactly the step one process takes on the
    # batch of 2B made of both ranks' clips: the balanced sampler deals one seeded order out by rank
    # (rank r takes every 2nd clip from r), dropout is 0 and the head trains on cached features, so
    # the model is deterministic and the weights must agree to float rounding, epoch after epoch.
    # Missing gradient averaging (each rank stepping on its own half) or summing instead of averaging
    # would part them at the first step.
    common = ["--backbone", "efficientnet_lite0", "--strategy", "linear", "--input-size", "32", "--epochs", "8",
              "--lr", "0.05", "--sampler", "balanced", "--seed", "1"]
    finish(vtl("train", str(workspace), *common, "--batch-size", "64", "--name", "one"))
    finish(vtl("evaluate", str(workspace), "--run", "one"))
    # A copy of the workspace without any cached features: the two ranks extract them themselves.
    fresh = tmp_path / "ws"
    shutil.copytree(workspace, fresh, ignore=shutil.ignore_patterns("train", "eval", "features"))
    _torchrun("train", str(fresh), *common, "--batch-size", "32", "--name", "two")
    _torchrun("evaluate", str(fresh), "--name", "two")  # torchrun takes "--run" for its own --run-path

    (one_key,) = (workspace / "features").iterdir()
    (two_key,) = (fresh / "features").iterdir()  # extracted by two ranks and written once, in dataset order
    assert two_key.name == one_key.name
    splits = sorted(path.name.split(".")[0] for path in one_key.glob("*.ids.json"))
    assert "train" in splits and splits == sorted(path.name.split(".")[0] for path in two_key.glob("*.ids.json"))
    for split in splits:
        ids_1, feats_1, offsets_1 = Workspace(workspace).features(one_key.name).read(split)
        ids_2, feats_2, offsets_2 = Workspace(fresh).features(two_key.name).read(split)
        assert ids_2 == ids_1 and (offsets_2 == offsets_1).all()
        torch.testing.assert_close(torch.from_numpy(feats_2), torch.from_numpy(feats_1), atol=1e-5, rtol=0)

    a = torch.load(workspace / "train" / "one" / "last.pt", weights_only=True)
    b = torch.load(fresh / "train" / "two" / "last.pt", weights_only=True)
    for key, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][key], tensor, atol=1e-5, rtol=1e-4)
    assert [round(h["train_loss"], 4) for h in b["history"]] == [round(h["train_loss"], 4) for h in a["history"]]
    one = json.loads((workspace / "eval" / "one" / "metrics.json").read_text())
    two = json.loads((fresh / "eval" / "two" / "metrics.json").read_text())
    assert two["num_samples"] == one["num_samples"]  # every test clip scored exactly once across ranks
    assert two["top1"] == one["top1"]
