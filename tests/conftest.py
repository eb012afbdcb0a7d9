"""Shared fixtures. Tests that need ``../shared/data`` use the ``shared_data``
fixture and are skipped cleanly when it is absent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VTL_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs one worker per core) each worker computes on one
    thread, and so do the processes it starts: two workers of two threads would fight for two cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "videos" / "INDEX.csv").is_file():
        pytest.skip(f"real media not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _loud_status_lines():
    """``vtl --quiet`` run in-process (CliRunner) silences ``progress.echo`` for the whole process:
    undo it, so a test reading status lines does not depend on which test ran before it."""
    from pipeline.progress import set_quiet

    set_quiet(False)
    yield
    set_quiet(False)


# ----------------------------------------------------------------------------- tiny synthetic data, CLI helpers

TINY_CLASSES = 3
TINY_CLIPS_PER_CLASS = 6
TINY_SIZE = 32
TINY_FRAMES = 12


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/<class>/<n>.mp4``: 3 classes x 6 synthetic clips of 12 frames at 32x32 (read-only by
    convention: copy it into ``tmp_path`` before altering it)."""
    from pipeline.data.synthetic import TARGET_CLASSES, make_target_dataset

    root = tmp_path_factory.mktemp("tiny") / "data"
    make_target_dataset(root, TINY_CLIPS_PER_CLASS, size=TINY_SIZE, frames=TINY_FRAMES,
                        classes=TARGET_CLASSES[:TINY_CLASSES])
    return root


def run_vtl(*args: object, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m pipeline ARGS`` in a real subprocess (true stderr and exit code), text captured."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def invoke_vtl(*args: object) -> Result:
    """The ``vtl`` group in this process (no interpreter start-up); fails the test on a non-zero exit."""
    from pipeline.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, f"vtl {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}"
    return result


def vtl_main(*args: object) -> int:
    """``pipeline.cli.main`` in this process, as the console script runs it; returns the exit code.
    Pair it with ``capfd`` to read stdout/stderr (including what C libraries write to fd 2)."""
    from pipeline.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    return 0
