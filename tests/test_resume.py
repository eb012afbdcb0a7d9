"""Resuming ``vtl train``: a run folder belongs to one set of settings. Re-running it with other settings is
refused (one line, naming what changed, nothing touched); speed-only switches (--workers, --device,
--channels-last, --amp, --compile) are not part of a run's identity; --restart trains again from the start."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import invoke_vtl, vtl_main

from pipeline.workspace import Workspace

pytestmark = pytest.mark.slow

RUN = ["--backbone", "efficientnet_lite0", "--strategy", "linear", "--input-size", "32", "--epochs", "2",
       "--lr", "0.01", "--name", "r"]


@pytest.fixture(scope="module")
def ws(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("resume") / "ws"
    invoke_vtl("-q", "prepare", ws, "--format", "folder", "--root", tiny_dataset, "--workers", "1")
    invoke_vtl("-q", "sample", ws, "--frames", "2", "--short-side", "32", "--workers", "1")
    invoke_vtl("-q", "train", ws, *RUN)
    return ws


def _files(run: Path) -> dict[str, int]:
    """The run's files and their times, but train.log: every invocation appends what it printed."""
    return {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file() and p.name != "train.log"}


def _with(option: str, value: str) -> list[str]:
    args = list(RUN)
    args[args.index(option) + 1] = value
    return args


@pytest.mark.parametrize(("option", "value"), [("--lr", "0.1"), ("--epochs", "3")])
def test_other_settings_are_refused_and_nothing_is_touched(ws: Path, option: str, value: str,
                                                           capfd: pytest.CaptureFixture) -> None:
    run = ws / "train" / "r"
    before = _files(run)
    capfd.readouterr()
    assert vtl_main("-q", "train", ws, *_with(option, value)) == 2
    err = capfd.readouterr().err
    name = option.lstrip("-")
    assert err.startswith(f"error: {run} holds a run with other settings ({name} ")
    assert "--restart" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _files(run) == before


def test_speed_switches_are_not_part_of_a_run(ws: Path) -> None:
    run = ws / "train" / "r"
    before = _files(run)
    result = invoke_vtl("train", ws, *RUN, "--workers", "0", "--device", "cpu", "--channels-last")
    assert "already finished" in result.stderr
    assert _files(run) == before  # loaded, matched and not retrained


def test_restart_trains_the_new_settings_from_the_start(ws: Path) -> None:
    run = Workspace(ws).run("r")
    first = run.history()
    invoke_vtl("-q", "train", ws, *_with("--lr", "0.1"), "--restart")
    assert yaml.safe_load((run.train_dir / "config.yaml").read_text())["lr"] == 0.1
    history = run.history()
    assert [h["epoch"] for h in history] == [1, 2]  # from epoch 1, not appended to the old run
    assert history[0]["lr"] != first[0]["lr"]
    # and the new run is now the one that resumes
    result = invoke_vtl("train", ws, *_with("--lr", "0.1"))
    assert "already finished" in result.stderr
