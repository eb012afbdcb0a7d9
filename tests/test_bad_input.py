"""Bad input through the CLI: one ``error: …`` line on stderr, exit code 2, no traceback; files that
cannot be used beside good ones are quarantined and the stage goes on.

prepare/sample run as real processes (they start in about a second). Commands that import torch
(train, evaluate, predict, run) go through ``pipeline.cli.main`` in this process, the same code the
console script runs, with one real-process check each where it matters, to keep the suite fast."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import invoke_vtl, run_vtl, vtl_main


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, exactly one ``error:`` line (the last line on stderr) holding every fragment, no traceback."""
    context = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 2, context
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, context
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, context
    # decord/FFmpeg may log to the same stream from C before it; the error line comes last
    assert proc.stderr.rstrip().splitlines()[-1] == errors[0], context
    for fragment in fragments:
        assert fragment in errors[0], context
    return errors[0]


def read_quarantine(ws: Path) -> dict[str, str]:
    with open(ws / "quarantine.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["path", "reason"]
        return {Path(r["path"]).name: r["reason"] for r in reader}


@pytest.fixture
def vtl(capfd: pytest.CaptureFixture[str]):
    """Run ``vtl ARGS`` in this process; returns a CompletedProcess with the captured fds."""

    def call(*args: object) -> subprocess.CompletedProcess:
        capfd.readouterr()
        code = vtl_main(*args)
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess([str(a) for a in args], code, out, err)

    return call


@pytest.fixture(scope="module")
def sampled_ws(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared and sampled workspace (in this process, to keep the module fast)."""
    ws = tmp_path_factory.mktemp("bad_input") / "ws"
    invoke_vtl("-q", "prepare", ws, "--root", tiny_dataset, "--workers", "0")
    invoke_vtl("-q", "sample", ws, "--frames", "4", "--short-side", "32", "--workers", "0")
    return ws


# ----------------------------------------------------------------------------- prepare: dataset problems


def test_missing_root(tmp_path: Path) -> None:
    proc = run_vtl("prepare", tmp_path / "ws", "--root", tmp_path / "nope")
    assert_user_error(proc, "dataset root", "does not exist")
    assert not (tmp_path / "ws" / "manifest.csv").exists()


def test_root_without_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    (root / "loose.mp4").write_bytes(b"")  # a file directly under root is no class folder
    assert_user_error(run_vtl("prepare", tmp_path / "ws", "--root", root), "no class folders")


def test_class_folders_without_videos(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "notes.txt").write_text("no video here\n")
    assert_user_error(run_vtl("prepare", tmp_path / "ws", "--root", root), "no video files found")


@pytest.mark.parametrize("content", [b"", b"this is text, not an MP4\n"], ids=["zero-byte", "text"])
def test_class_with_no_usable_video(tiny_dataset: Path, tmp_path: Path, content: bytes) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    (root / "broken").mkdir()
    (root / "broken" / "clip.mp4").write_bytes(content)
    ws = tmp_path / "ws"
    proc = run_vtl("prepare", ws, "--root", root, "--workers", "1")
    assert_user_error(proc, "class 'broken' has no usable video", "quarantine.csv")
    assert not (ws / "manifest.csv").exists()  # no half-prepared workspace
    assert "clip.mp4" in read_quarantine(ws)  # but the reason is on disk


def test_all_files_unusable(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        (root / cls / "x.mp4").write_bytes(b"")
    assert_user_error(run_vtl("prepare", tmp_path / "ws", "--root", root, "--workers", "1"),
                      "no usable video", "all 2 files quarantined")


def test_bad_files_beside_good_ones_are_quarantined(tiny_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    classes = sorted(p.name for p in root.iterdir())
    (root / classes[0] / "empty.mp4").write_bytes(b"")
    (root / classes[1] / "text.mp4").write_text("hello, I am not a video\n")
    (root / classes[1] / "readme.txt").write_text("not a video extension: ignored, not quarantined\n")
    ws = tmp_path / "ws"

    proc = run_vtl("-q", "prepare", ws, "--root", root, "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "18 files in 3 classes" in proc.stdout and "2 quarantined" in proc.stdout

    quarantine = read_quarantine(ws)
    assert set(quarantine) == {"empty.mp4", "text.mp4"}
    assert quarantine["empty.mp4"] == "empty file (0 bytes)"
    assert quarantine["text.mp4"].startswith("cannot decode: ")
    with open(ws / "manifest.csv", newline="") as f:
        names = {Path(r["path"]).name for r in csv.DictReader(f)}
    assert len(names) == 18 and not names & {"empty.mp4", "text.mp4", "readme.txt"}


def test_file_deleted_after_prepare_is_quarantined_by_sample(tiny_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    ws = tmp_path / "ws"
    invoke_vtl("-q", "prepare", ws, "--root", root, "--workers", "0")
    gone = sorted(root.rglob("*.mp4"))[0]
    gone.unlink()
    proc = run_vtl("-q", "sample", ws, "--frames", "4", "--short-side", "32", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert "sampled 17 videos" in proc.stdout and "1 failed" in proc.stdout
    assert read_quarantine(ws)[gone.name].startswith("sample: ")


# ----------------------------------------------------------------------------- invalid option values


@pytest.mark.parametrize(("args", "fragments"), [
    (("--val-fraction", "1.5"), ("--val-fraction must be in [0, 1)",)),
    (("--test-fraction", "-0.1"), ("--test-fraction must be in [0, 1)",)),
    (("--val-fraction", "0.5", "--test-fraction", "0.5"), ("must leave some data for training",)),
    (("--format", "bogus"), ("Invalid value for '--format'", "'bogus' is not one of", "'stanford_dogs'")),
    (("--workers", "many"), ("Invalid value for '--workers'", "vtl prepare --help")),
])
def test_prepare_option_values(tiny_dataset: Path, tmp_path: Path, args: tuple[str, ...],
                               fragments: tuple[str, ...]) -> None:
    assert_user_error(run_vtl("prepare", tmp_path / "ws", "--root", tiny_dataset, *args), *fragments)
    assert not (tmp_path / "ws" / "manifest.csv").exists()


@pytest.mark.parametrize(("args", "fragments"), [
    (("--frames", "0"), ("--frames must be positive",)),
    (("--frames", "abc"), ("Invalid value for '--frames'",)),
    (("--short-side", "0"), ("--short-side must be positive",)),
    (("--clips-per-video", "-1"), ("--clips-per-video must be positive",)),
    (("--sampling", "bogus"), ("Invalid value for '--sampling'", "'bogus' is not one of 'uniform'")),
])
def test_sample_option_values(sampled_ws: Path, args: tuple[str, ...], fragments: tuple[str, ...]) -> None:
    assert_user_error(run_vtl("sample", sampled_ws, *args), *fragments)


def test_sample_needs_a_prepared_workspace(tmp_path: Path) -> None:
    assert_user_error(run_vtl("sample", tmp_path / "nothing"), "is not a prepared workspace", "vtl prepare")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "manifest.csv").write_text("id,path,label,split\n")  # no classes.txt
    assert_user_error(run_vtl("sample", tmp_path / "half"), "is not a prepared workspace")


def test_unreadable_workspace_info(tiny_dataset: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    invoke_vtl("-q", "prepare", ws, "--root", tiny_dataset, "--workers", "0")
    (ws / "workspace.json").write_text("{not json")
    assert_user_error(run_vtl("sample", ws), "workspace.json is not valid JSON")


# ----------------------------------------------------------------------------- train / evaluate / predict


@pytest.mark.parametrize(("args", "fragments"), [
    (("--backbone", "nope", "--strategy", "linear"), ("unknown backbone 'nope'", "vtl backbones")),
    (("--backbone", "r3d18", "--strategy", "linear"), ("unknown backbone 'r3d18'", "did you mean r3d_18")),
    (("--backbone", "r3d_18", "--strategy", "bogus"), ("Invalid value for '--strategy'", "'bogus' is not one of")),
    (("--backbone", "r3d_18", "--strategy", "partial"), ("--strategy partial needs --freeze-to",)),
    (("--backbone", "r3d_18", "--strategy", "scratch", "--weights", "kinetics400"), ("drop --weights",)),
    (("--backbone", "r3d_18", "--strategy", "finetune", "--epochs", "0"), ("--epochs must be positive",)),
    (("--backbone", "r3d_18", "--strategy", "finetune", "--fraction", "0"), ("--fraction must be in (0, 1]",)),
    (("--backbone", "efficientnet_lite0", "--strategy", "linear", "--temporal", "lstm"),
     ("Invalid value for '--temporal'",)),
    (("--backbone", "efficientnet_lite0", "--strategy", "linear", "--sampling", "nope"), ("no clip cache 'nope'",)),
    (("--strategy", "linear"), ("Missing option '--backbone'",)),
])
def test_train_option_values(vtl, sampled_ws: Path, args: tuple[str, ...], fragments: tuple[str, ...]) -> None:
    assert_user_error(vtl("train", sampled_ws, *args), *fragments)
    assert not (sampled_ws / "train").exists()


def test_unknown_backbone_in_a_real_process(sampled_ws: Path) -> None:
    proc = run_vtl("train", sampled_ws, "--backbone", "resnet19", "--strategy", "linear")
    assert_user_error(proc, "unknown backbone 'resnet19'", "did you mean")


def test_train_before_sample(vtl, tiny_dataset: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    invoke_vtl("-q", "prepare", ws, "--root", tiny_dataset, "--workers", "0")
    assert_user_error(vtl("train", ws, "--backbone", "efficientnet_lite0", "--strategy", "linear"),
                      "no sampled clips yet", "vtl sample")


def test_evaluate_without_runs(vtl, sampled_ws: Path) -> None:
    assert_user_error(vtl("evaluate", sampled_ws), "no trained run", "vtl train")
    assert_user_error(vtl("evaluate", sampled_ws, "--run", "nope"), "run 'nope' has no best.pt")
    assert_user_error(vtl("evaluate", sampled_ws, "--split", "bogus"), "Invalid value for '--split'")


def test_predict_bad_inputs(vtl, sampled_ws: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    video = sorted(tiny_dataset.rglob("*.mp4"))[0]
    assert_user_error(vtl("predict", tmp_path / "nope.pt", video), "nope.pt does not exist")
    # a file that is no checkpoint (here: a CSV) is refused without unpickling it
    assert_user_error(vtl("predict", sampled_ws / "manifest.csv", video), "manifest.csv")


def test_run_missing_or_invalid_config(vtl, tmp_path: Path) -> None:
    assert_user_error(vtl("run", tmp_path / "nope.yaml"), "nope.yaml does not exist")
    bad = tmp_path / "bad.yaml"
    bad.write_text("workspace: ws\nprepare: {format: folder\n")
    assert_user_error(vtl("run", bad), "bad.yaml", "not valid YAML")
    listy = tmp_path / "list.yaml"
    listy.write_text("- prepare\n- sample\n")
    assert_user_error(vtl("run", listy), "expected a mapping of sections")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = run_vtl("--debug", "prepare", tmp_path / "ws", "--root", tmp_path / "nope")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "UserError" in proc.stderr


def test_relative_root_works_from_another_directory(tiny_dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "here").mkdir()
    (tmp_path / "elsewhere").mkdir()
    shutil.copytree(tiny_dataset, tmp_path / "here" / "data")
    proc = run_vtl("-q", "prepare", "ws", "--root", "data", "--workers", "1", cwd=tmp_path / "here")
    assert proc.returncode == 0, proc.stderr
    proc = run_vtl("-q", "sample", tmp_path / "here" / "ws", "--frames", "4", "--short-side", "32", "--workers", "1",
                   cwd=tmp_path / "elsewhere")
    assert proc.returncode == 0, proc.stderr
    assert "sampled 18 videos" in proc.stdout and "failed" not in proc.stdout
