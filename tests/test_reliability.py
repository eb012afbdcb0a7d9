"""Reliability and security (docs/reliability.md): the bad-input matrix rows that no other test
covers, the workspace lock between two real processes, a full disk while writing the clip cache,
memory on a huge-resolution video, pickle payloads in checkpoints, and property-based fuzzing of
the parsers (split lists, CSV, JSON, config files) and of the samplers.

Every dataset here is a few 32 px synthetic clips written by the test; stages run in this process
(``invoke_vtl``, ``--workers 0``) unless the test is about processes."""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, invoke_vtl, run_vtl, vtl_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bad_input import assert_user_error, read_quarantine

from pipeline.data.synthetic import write_video
from pipeline.errors import UserError

RNG = np.random.default_rng(0)


def noise_video(path: Path, frames: int = 8, height: int = 32, width: int = 32, codec: str = "libx264",
                seed: int | None = None) -> np.ndarray:
    """A clip of random frames (every frame distinct); odd sizes need a lossless RGB codec."""
    rng = np.random.default_rng(seed) if seed is not None else RNG
    pixels = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    write_video(path, pixels, codec=codec)
    return pixels


def dataset(root: Path, per_class: int = 3, classes: tuple[str, ...] = ("a", "b"), frames: int = 8) -> Path:
    for c in classes:
        for i in range(per_class):
            noise_video(root / c / f"{c}{i}.mp4", frames=frames)
    return root


def prepare(ws: Path, root: Path, *extra: object) -> str:
    return invoke_vtl("-q", "prepare", ws, "--root", root, "--workers", "0", *extra).stdout


def sample(ws: Path, *extra: object) -> str:
    return invoke_vtl("-q", "sample", ws, "--short-side", "32", "--workers", "0", *extra).stdout


def manifest(ws: Path) -> dict[str, dict[str, str]]:
    with open(ws / "manifest.csv", newline="", encoding="utf-8") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


def clips(ws: Path) -> dict[str, np.ndarray]:
    """Every cached clip by manifest path (the only sampling of the workspace)."""
    (cache,) = (ws / "clips").iterdir()
    return {path: np.load(cache / f"{r['id']}.npy") for path, r in manifest(ws).items()}


# ----------------------------------------------------------------------------- the bad-input matrix


def test_truncated_videos(tmp_path: Path) -> None:
    """An MP4 cut anywhere loses its index (moov atom, written last) and is quarantined; a cut
    Matroska file keeps the frames before the cut, and only those are sampled."""
    root = dataset(tmp_path / "data", per_class=3)
    noise_video(tmp_path / "full.mkv", frames=24)
    from pipeline.data.decoders import get_decoder

    full_decoded = get_decoder("pyav").read(tmp_path / "full.mkv", list(range(24))).astype(int)
    data = (tmp_path / "full.mkv").read_bytes()
    (root / "a" / "cut.mkv").write_bytes(data[: len(data) * 6 // 10])
    mp4 = (root / "a" / "a0.mp4").read_bytes()
    (root / "b" / "cut.mp4").write_bytes(mp4[: len(mp4) * 9 // 10])
    ws = tmp_path / "ws"
    prepare(ws, root, "--val-fraction", "0", "--test-fraction", "0")
    assert read_quarantine(ws)["cut.mp4"].startswith("cannot decode: ")
    row = manifest(ws)[str(root / "a" / "cut.mkv")]
    assert 0 < int(row["num_frames"]) < 24
    sample(ws, "--frames", "8")
    cut = clips(ws)[str(root / "a" / "cut.mkv")][0]
    for frame in cut:  # each cached frame is one of the frames before the cut (libx264 decodes alike)
        matches = [k for k in range(24) if np.abs(frame.astype(int) - full_decoded[k]).mean() < 1]
        assert matches and matches[0] < int(row["num_frames"])


@pytest.mark.shared
def test_rotated_and_unordered_files_through_prepare_and_sample(shared_data: Path, tmp_path: Path) -> None:
    """Rotation metadata: the manifest holds the displayed size and clips come out upright;
    out-of-order timestamps: frames in presentation order (decoders cross-checked in test_decoders)."""
    edge = shared_data / "videos/edge_cases/decord_test_data"
    root = tmp_path / "data"
    for name, cls in (("video_0.mov", "plain"), ("video_90.mov", "turned"), ("unordered.mov", "plain")):
        (root / cls).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(edge / name, root / cls / name)
    ws = tmp_path / "ws"
    prepare(ws, root, "--val-fraction", "0", "--test-fraction", "0")
    rows = {Path(p).name: r for p, r in manifest(ws).items()}
    assert (rows["video_0.mov"]["width"], rows["video_0.mov"]["height"]) == ("568", "320")
    assert (rows["video_90.mov"]["width"], rows["video_90.mov"]["height"]) == ("320", "568")
    assert rows["unordered.mov"]["num_frames"] == "4"
    sample(ws, "--frames", "4")
    got = {Path(p).name: c for p, c in clips(ws).items()}
    assert got["video_0.mov"].shape == (1, 4, 32, 56, 3)  # landscape
    assert got["video_90.mov"].shape == (1, 4, 56, 32, 3)  # portrait, as displayed
    from pipeline.data.decoders import get_decoder, resized_size

    ordered = get_decoder("pyav").read(edge / "unordered.mov", [0, 1, 2, 3], resized_size(50, 50, 32))
    np.testing.assert_allclose(got["unordered.mov"][0].astype(float), ordered.astype(float), atol=3)


def test_video_shorter_than_the_clip(tmp_path: Path) -> None:
    """5 frames, clip of 12: frames repeat in order (uniform) or loop (random); no crash."""
    root = dataset(tmp_path / "data", per_class=3, frames=5)
    ws = tmp_path / "ws"
    prepare(ws, root)
    sample(ws, "--frames", "12", "--sampling", "random", "--stride", "1")
    sample(ws, "--frames", "12")
    caches = sorted((ws / "clips").iterdir())
    assert len(caches) == 2
    for cache in caches:
        for npy in cache.glob("*.npy"):
            assert np.load(npy).shape == (1, 12, 32, 32, 3)


def test_one_frame_video(tmp_path: Path) -> None:
    root = tmp_path / "data"
    pixels = {}
    for c in ("a", "b"):
        for i in range(3):
            pixels[str(root / c / f"{i}.mkv")] = noise_video(root / c / f"{i}.mkv", frames=1, codec="ffv1")
    ws = tmp_path / "ws"
    prepare(ws, root)
    assert {r["num_frames"] for r in manifest(ws).values()} == {"1"}
    sample(ws, "--frames", "4")
    for path, clip in clips(ws).items():
        assert clip.shape == (1, 4, 32, 32, 3)
        assert all(np.array_equal(frame, pixels[path][0]) for frame in clip[0])  # the one frame, 4 times


@pytest.mark.parametrize(("height", "width"), [(1, 1), (33, 47), (2, 301)], ids=["1x1", "odd", "thin"])
def test_odd_frame_sizes(tmp_path: Path, height: int, width: int) -> None:
    root = tmp_path / "data"
    for c in ("a", "b"):
        for i in range(3):
            noise_video(root / c / f"{i}.mkv", frames=6, height=height, width=width, codec="ffv1")
    ws = tmp_path / "ws"
    prepare(ws, root)
    assert {(r["width"], r["height"]) for r in manifest(ws).values()} == {(str(width), str(height))}
    sample(ws, "--frames", "4")
    from pipeline.data.decoders import resized_size

    h, w = resized_size(height, width, 32)
    assert min(h, w) == 32 and h % 2 == 0 and w % 2 == 0
    for clip in clips(ws).values():
        assert clip.shape == (1, 4, h, w, 3)
        assert clip.std() > 0  # real pixels, not an empty buffer


def test_paths_with_spaces_and_non_ascii_names(tmp_path: Path) -> None:
    root = tmp_path / "dätä set"
    names = {"jump rope": ["vidéo 1.mp4", "日本語 2.mp4", "x,y;z'3\".mp4"],
             "süße": ["ä b.mp4", "emoji 😀.mp4", "c.mp4"]}
    for cls, files in names.items():
        for name in files:
            noise_video(root / cls / name)
    ws = tmp_path / "wörk space"
    proc = run_vtl("-q", "prepare", ws, "--root", root, "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert "6 files in 2 classes" in proc.stdout and "0 quarantined" in proc.stdout
    assert (ws / "classes.txt").read_text(encoding="utf-8") == "jump rope\nsüße\n"
    assert {Path(p).name for p in manifest(ws)} == {n for files in names.values() for n in files}
    proc = run_vtl("-q", "sample", ws, "--frames", "4", "--short-side", "32", "--workers", "1")
    assert proc.returncode == 0 and "sampled 6 videos" in proc.stdout and "failed" not in proc.stdout, proc.stderr
    ids = [r["id"] for r in manifest(ws).values()]
    assert len(set(ids)) == 6 and not any(c in i for i in ids for c in " ,;'\"/")  # safe cache file names


def test_symlink_loops_in_the_dataset_tree(tmp_path: Path) -> None:
    """A folder link back up (a loop), a link into another class folder and a file-link loop:
    prepare ends, lists every real file once under its own class, and quarantines the links."""
    root = dataset(tmp_path / "data", per_class=3, classes=("a", "b", "c"))
    os.symlink("..", root / "a" / "up")  # a/up/a/up/... and a/up/b would relabel b's files as a
    os.symlink("../a", root / "b" / "nested")  # b/nested → a: a's files would be listed twice
    (root / "c" / "deeper").mkdir()
    os.symlink("..", root / "c" / "deeper" / "loop")  # c/deeper/loop → c
    os.symlink("x2.mp4", root / "c" / "x1.mp4")
    os.symlink("x1.mp4", root / "c" / "x2.mp4")
    outside = dataset(tmp_path / "elsewhere", per_class=2, classes=("more",))
    os.symlink(outside / "more", root / "a" / "more")  # a real link out of the tree: followed
    ws = tmp_path / "ws"
    out = prepare(ws, root, "--val-fraction", "0", "--test-fraction", "0")
    assert "11 files in 3 classes" in out, out
    labels = {Path(p).relative_to(root).as_posix(): r["label"] for p, r in manifest(ws).items()}
    assert labels == {**{f"{c}/{c}{i}.mp4": c for c in "abc" for i in range(3)},
                      "a/more/more0.mp4": "a", "a/more/more1.mp4": "a"}
    quarantine = {Path(q).relative_to(root).as_posix(): reason for q, reason in _quarantine_rows(ws)}
    assert quarantine["a/up"] == quarantine["b/nested"] == quarantine["c/deeper/loop"] == (
        "symlink loop or repeated folder link: skipped")
    assert quarantine["c/x1.mp4"] == quarantine["c/x2.mp4"] == "unreadable: Too many levels of symbolic links"


def _quarantine_rows(ws: Path) -> list[tuple[str, str]]:
    with open(ws / "quarantine.csv", newline="", encoding="utf-8") as f:
        return [(r["path"], r["reason"]) for r in csv.DictReader(f)]


def test_same_file_in_train_and_test_is_reported(tmp_path: Path) -> None:
    root = dataset(tmp_path / "data", per_class=6)
    for i in range(6):  # b5 is a copy of b0, a0..a2 have copies in b under other names
        shutil.copyfile(root / "a" / f"a{i % 3}.mp4", root / "b" / f"copy{i}.mp4")
    ws = tmp_path / "ws"
    proc = run_vtl("-q", "prepare", ws, "--root", root, "--workers", "1", "--test-fraction", "0.4")
    assert proc.returncode == 0, proc.stderr
    rows = manifest(ws)
    content = {p: Path(p).read_bytes() for p in rows}
    train = {content[p] for p, r in rows.items() if r["split"] == "train"}
    leaked = sorted(p for p, r in rows.items() if r["split"] == "test" and content[p] in train)
    assert leaked, "the seeded split must put some copies on both sides (else change the seed)"
    warning = f"warning: {len(leaked)} files appear in both train and test (same content): "
    assert warning in proc.stderr, proc.stderr
    assert leaked[0] in proc.stderr
    assert f"; {len(leaked)} test files duplicate train files" in proc.stdout

    clean = tmp_path / "ws-clean"
    proc = run_vtl("-q", "prepare", clean, "--root", dataset(tmp_path / "clean", per_class=6), "--workers", "1")
    assert proc.returncode == 0 and "same content" not in proc.stderr and "duplicate" not in proc.stdout


def test_invalid_values_in_a_config_file(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The CLI's option checks (tests/test_bad_input.py) hold for `vtl run` too, plus the kind of value."""
    cases = {
        "sample: {frames: 8.5}": "sample: frames must be int, got 8.5",
        "sample: {frames: eight}": "sample: frames must be int, got 'eight'",
        "sample: [frames, 8]": "sample must be a mapping of options, got list",
        "prepare: {format: folder, root: data, val_fraction: 1.5}": "--val-fraction must be in [0, 1)",
        "train: {backbone: x3d_xs, strategy: linear, lr: [1]}": "train[0]: lr must be float, got [1]",
        "train: {backbone: x3d_xs, strategy: linear, epochs: true}": "epochs must be int, got True",
        "train: 3": "train must be a mapping of train options or a list of them",
        "evaluate: {split: test, view: 5x3}": "evaluate: unknown key 'view' (did you mean 'views'?)",
    }
    for i, (section, message) in enumerate(cases.items()):
        f = tmp_path / f"c{i}.yaml"
        f.write_text(f"workspace: ws\n{section}\n")
        capfd.readouterr()
        assert vtl_main("run", f) == 2, section
        err = capfd.readouterr().err
        assert message in err and err.count("\n") == 1, (section, err)
    assert not (tmp_path / "ws").exists()
    ok = tmp_path / "ok.yaml"  # YAML 1.1 reads 1e-3 as a string: accepted where a float is expected
    ok.write_text("workspace: ws\ntrain: {backbone: x3d_xs, strategy: linear, lr: 1e-3}\n")
    from pipeline.stages.run import load_plan

    assert load_plan(ok).trains[0].lr == 0.001


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = dataset(tmp_path_factory.mktemp("rel") / "data", per_class=4)
    ws = root.parent / "ws"
    prepare(ws, root)
    sample(ws, "--frames", "2")
    return ws


def _checkpoint(path: Path, backbone: str, classes: list[str], state_from: str | None = None) -> None:
    from pipeline.models.checkpoint import Checkpoint
    from pipeline.models.classifier import build_model

    model, _ = build_model(state_from or backbone, len(classes), weights="none")
    Checkpoint(backbone=backbone, classes=classes, model=model.state_dict(), config={"sampling": "x"}).save(path)


def test_checkpoint_of_another_class_count_or_backbone(sampled: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Evaluating a run whose checkpoint does not fit this workspace or its own recorded backbone.
    (--weights of another backbone: tests/test_weights.py.)"""
    _checkpoint(sampled / "train" / "three" / "best.pt", "resnet18", ["a", "b", "c"])
    _checkpoint(sampled / "train" / "liar" / "best.pt", "resnet18", ["a", "b"], state_from="mobilenet_v3_large")
    capfd.readouterr()
    assert vtl_main("evaluate", sampled, "--run", "three") == 2
    assert "error: run 'three' was trained on other classes than" in capfd.readouterr().err
    assert vtl_main("evaluate", sampled, "--run", "liar") == 2
    assert "does not match its recorded backbone" in capfd.readouterr().err
    # No results: each refused evaluation leaves only its log, which says why it stopped.
    written = [p for p in (sampled / "eval").rglob("*") if p.is_file()]
    assert sorted(p.name for p in written) == ["evaluate.log", "evaluate.log"]
    assert all("error:" in p.read_text() for p in written)
    shutil.rmtree(sampled / "train")


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the payload ever runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickle_payload_in_a_checkpoint_never_runs(sampled: Path, tmp_path: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    import torch

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"kind": "vtl-checkpoint", "model": {"w": torch.zeros(1)}, "classes": ["a", "b"],
                "backbone": "resnet18", "payload": Payload(marker)}, evil)
    torch.load(evil, weights_only=False).get("payload").close()  # the payload is live ...
    assert marker.exists()
    marker.unlink()  # ... and vtl must never run it

    run_dir = sampled / "train" / "evil"
    run_dir.mkdir(parents=True)
    shutil.copyfile(evil, run_dir / "best.pt")
    video = next(iter(manifest(sampled)))
    commands = [("predict", evil, video), ("evaluate", sampled, "--run", "evil"),
                ("train", sampled, "--backbone", "resnet18", "--strategy", "linear", "--weights", evil),
                ("weights", "import", evil, "--backbone", "resnet18", "--tag", "imagenet1k")]
    try:
        for args in commands:
            capfd.readouterr()
            assert vtl_main(*args) == 2, args
            err = capfd.readouterr().err
            assert "error: refusing to load" in err and "payload was not executed" in err, (args, err)
            assert not marker.exists(), f"vtl {args[0]} ran the pickle payload"
    finally:
        shutil.rmtree(sampled / "train")


def test_workspace_of_an_incompatible_vtl_version(sampled: Path, tmp_path: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    from pipeline import WORKSPACE_FORMAT, __version__

    ws = tmp_path / "old"
    shutil.copytree(sampled, ws)
    info = json.loads((ws / "workspace.json").read_text())
    for layout, version in ((WORKSPACE_FORMAT + 1, "9.0.0"), (None, "0.0.1")):
        new = {**info, "layout": layout, "vtl_version": version}
        (ws / "workspace.json").write_text(json.dumps({k: v for k, v in new.items() if v is not None}))
        fragments = (f"was written by vtl {version} with workspace layout {layout or '?'}",
                     f"this vtl {__version__} reads layout {WORKSPACE_FORMAT}", "re-run `vtl prepare`")
        assert_user_error(run_vtl("sample", ws), *fragments)  # a real process
        capfd.readouterr()
        assert vtl_main("evaluate", ws) == 2  # a stage that imports torch: in this process, faster
        err = capfd.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and all(f in err for f in fragments), err


# ----------------------------------------------------------------------------- concurrency


def test_two_processes_on_one_workspace(sampled: Path, tmp_path: Path) -> None:
    """While `vtl sample` holds the workspace (frozen with SIGSTOP so the timing cannot flake),
    a second sample and a prepare on it fail at once naming the holder, `vtl --wait 1` fails
    after a second, and `vtl --wait 300` queues; the holder then finishes untouched, the
    queued run gets the lock, and so does the next run."""
    ws = tmp_path / "ws"
    shutil.copytree(sampled, ws)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    root = Path(next(iter(manifest(ws)))).parents[1]
    for _attempt in range(5):
        holder = subprocess.Popen([sys.executable, "-m", "pipeline", "-q", "sample", ws, "--frames", "4",
                                   "--clips-per-video", "3", "--short-side", "32", "--workers", "0", "--force"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        tag = f"`vtl sample` (pid {holder.pid})"
        while holder.poll() is None and not _lock_text(ws).endswith(tag):
            time.sleep(0.002)
        holder.send_signal(signal.SIGSTOP)
        if holder.poll() is None and _lock_text(ws).endswith(tag):
            break
        holder.communicate()  # finished before it could be frozen: try again
    else:
        pytest.fail("could not catch `vtl sample` holding the lock in 5 tries")
    waiter = None
    try:
        for args in (("sample", ws, "--frames", "4"), ("prepare", ws, "--root", root, "--workers", "0")):
            assert_user_error(run_vtl(*args), f"workspace {ws} is busy: {tag} is writing to it")
        t0 = time.monotonic()
        assert_user_error(run_vtl("--wait", "1", "sample", ws, "--frames", "4"),
                          f"workspace {ws} is busy: {tag} is writing to it (waited 1 s)")
        assert time.monotonic() - t0 >= 1.0
        # `--wait` long enough: it queues behind the holder and runs once the holder is done
        waiter = subprocess.Popen([sys.executable, "-m", "pipeline", "--wait", "300", "sample", ws, "--frames", "4",
                                   "--clips-per-video", "3", "--short-side", "32", "--workers", "0"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert waiter.poll() is None, waiter.communicate()
    finally:
        holder.send_signal(signal.SIGCONT)
    out, err = holder.communicate(timeout=300)
    assert holder.returncode == 0, err
    _, w_err = waiter.communicate(timeout=300)
    assert waiter.returncode == 0, w_err
    assert f"waiting up to 300 s: workspace {ws} is busy: {tag}" in w_err
    assert all(np.load(p).shape == (3, 4, 32, 32, 3) for p in ws.glob("clips/uniform-t4-*/*.npy"))
    proc = run_vtl("-q", "sample", ws, "--frames", "4", "--clips-per-video", "3", "--workers", "0")
    assert proc.returncode == 0, proc.stderr  # the lock went with the holder


def _lock_text(ws: Path) -> str:
    try:
        return (ws / ".lock").read_text()
    except FileNotFoundError:
        return ""


# ----------------------------------------------------------------------------- resource limits


def _limited(limit_bytes: int):
    def apply() -> None:  # runs in the child: files cannot grow past the limit; writes get EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


@pytest.mark.parametrize("workers", ["0", "1"])
def test_full_disk_while_writing_the_clip_cache(sampled: Path, tmp_path: Path, workers: str) -> None:
    """RLIMIT_FSIZE stands in for a full disk: each clip (48 KiB) is larger than a file may grow.
    One error line naming the file, no partial or temp file left, and a re-run completes."""
    ws = tmp_path / "ws"
    shutil.copytree(sampled, ws, ignore=shutil.ignore_patterns("clips"))
    args = [sys.executable, "-m", "pipeline", "sample", ws, "--frames", "4", "--short-side", "64", "--workers", workers]
    proc = subprocess.run(args, capture_output=True, text=True, preexec_fn=_limited(32 * 1024), timeout=300)
    error = assert_user_error(proc, "cannot write", "File too large (disk full?)", "free some space and re-run")
    cache = next((ws / "clips").iterdir())
    assert str(cache) in error and ".npy" in error
    assert not list(cache.glob("*.npy")) and not list(cache.glob(".*"))  # nothing partial, no temp file
    assert json.loads((cache / "params.json").read_text())["sampling"]["short_side"] == 64

    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = manifest(ws)
    assert len(list(cache.glob("*.npy"))) == len(rows)
    assert all(np.load(cache / f"{r['id']}.npy").shape == (1, 4, 64, 64, 3) for r in rows.values())


def test_huge_resolution_video_is_resized_while_decoding(tmp_path: Path) -> None:
    """A 4000x3000 clip sampled at short side 32: 8 full-size RGB frames alone would take 288 MiB;
    the sampling process stays well below (frames are resized inside the decoder)."""
    import av

    height, width = 3000, 4000
    yy, xx = np.mgrid[0:height, 0:width]
    board = ((xx // 50 + yy // 50) % 2 * 200).astype(np.uint8)
    for cls in ("a", "b"):
        path = tmp_path / "data" / cls / "big.mp4"
        path.parent.mkdir(parents=True)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=8)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "ultrafast"}
            for i in range(8):  # one frame at a time: the test must not hold the video in memory either
                img = np.repeat(np.roll(board, 10 * i, axis=1)[..., None], 3, axis=2)
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    del yy, xx, board
    ws = tmp_path / "ws"
    assert run_vtl("-q", "prepare", ws, "--root", tmp_path / "data", "--workers", "1").returncode == 0
    peak = _peak_rss_mib("sample", ws, "--frames", "8", "--short-side", "32", "--workers", "0")
    (cache,) = (ws / "clips").iterdir()
    assert [np.load(p).shape for p in cache.glob("*.npy")] == [(1, 8, 32, 42, 3)] * 2
    assert peak < 250, f"vtl sample peaked at {peak} MiB"


def _peak_rss_mib(*args: object) -> int:
    """Peak RSS of `vtl ARGS` (and its workers), measured in a fresh parent whose only children they are."""
    probe = ("import resource, subprocess, sys; "
             "r = subprocess.run([sys.executable, '-m', 'pipeline', '-q', *sys.argv[1:]]); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)")
    proc = subprocess.run([sys.executable, "-c", probe, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    code, peak = proc.stdout.split()[-2:]
    assert code == "0", proc.stderr
    return int(peak)


# ----------------------------------------------------------------------------- fuzzing: parsers


FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
TEXT = st.one_of(st.text(max_size=200),
                 st.lists(st.sampled_from(["a", "1", "2", " ", "\t", "/", ".avi", "\n", "\r\n", ",", '"', "{", "}",
                                           "[", "]", ":", "\ufeff", "\x00", "é", "0", "x.avi 1", "-"]),
                          max_size=40).map("".join))
BYTES = st.one_of(TEXT.map(lambda t: t.encode("utf-8")), st.binary(max_size=120))


def _expect_user_error_or_result(call) -> None:
    try:
        call()
    except UserError as e:
        assert str(e) and "\n" not in str(e)


@FUZZ
@given(class_ind=BYTES, train=BYTES, test=BYTES)
def test_fuzz_ucf101_split_files(class_ind: bytes, train: bytes, test: bytes) -> None:
    from pipeline.data.formats import FormatOptions, ucf101

    with tempfile.TemporaryDirectory() as d:
        root, lists = Path(d) / "UCF-101", Path(d) / "ucfTrainTestlist"
        noise_dir = root / "A"
        noise_dir.mkdir(parents=True)
        (noise_dir / "v_A_g01_c01.avi").write_bytes(b"")
        lists.mkdir()
        for name, data in (("classInd.txt", class_ind), ("trainlist01.txt", train), ("testlist01.txt", test)):
            (lists / name).write_bytes(data)
        _expect_user_error_or_result(lambda: ucf101.read(FormatOptions(root, lists, 1)))


@FUZZ
@given(split=BYTES, name=st.sampled_from(["brush_hair", "a b", "x_test_split"]))
def test_fuzz_hmdb51_split_files(split: bytes, name: str) -> None:
    from pipeline.data.formats import FormatOptions, hmdb51

    with tempfile.TemporaryDirectory() as d:
        root, lists = Path(d) / "hmdb51", Path(d) / "testTrainMulti_7030_splits"
        (root / name).mkdir(parents=True)
        (root / name / "v.avi").write_bytes(b"")
        lists.mkdir()
        (lists / f"{name}_test_split1.txt").write_bytes(split)
        _expect_user_error_or_result(lambda: hmdb51.read(FormatOptions(root, lists, 1)))


@FUZZ
@given(body=BYTES, header=st.sampled_from(["label,youtube_id,time_start,time_end,split\n",
                                           "youtube_id,label,split,time_end,time_start,is_cc\n", ""]))
def test_fuzz_kinetics_csv(body: bytes, header: str) -> None:
    from pipeline.data.formats import FormatOptions, kinetics

    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "k400"
        (root / "train" / "abseiling").mkdir(parents=True)
        (root / "train" / "abseiling" / "abc_000001_000011.mp4").write_bytes(b"")
        csv_file = Path(d) / "train.csv"
        csv_file.write_bytes(header.encode() + body)
        _expect_user_error_or_result(lambda: kinetics.read(FormatOptions(root, csv_file)))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                  max_size=4), max_leaves=12)
ENTRY = st.fixed_dictionaries({"id": st.one_of(st.text(max_size=5), st.integers()),
                               "template": st.one_of(st.text(max_size=20), st.just("Putting [something] down"),
                                                     st.integers())},
                              optional={"label": st.text(max_size=10), "placeholders": JSON})


@FUZZ
@given(labels=st.one_of(JSON, st.dictionaries(st.text(max_size=25), st.text(max_size=3), max_size=3),
                        st.just({"Putting something down": "0"})),
       train=st.one_of(JSON, st.lists(ENTRY, max_size=4)), validation=st.one_of(BYTES, st.lists(ENTRY, max_size=3)))
def test_fuzz_ssv2_annotations(labels, train, validation) -> None:
    from pipeline.data.formats import FormatOptions, ssv2

    with tempfile.TemporaryDirectory() as d:
        root, ann = Path(d) / "videos", Path(d) / "labels"
        root.mkdir()
        (root / "1.webm").write_bytes(b"")
        ann.mkdir()
        (ann / "labels.json").write_text(json.dumps(labels))
        (ann / "train.json").write_text(json.dumps(train))
        data = validation if isinstance(validation, bytes) else json.dumps(validation).encode()
        (ann / "validation.json").write_bytes(data)
        _expect_user_error_or_result(lambda: ssv2.read(FormatOptions(root, ann)))


@FUZZ
@given(data=BYTES)
def test_fuzz_manifest_csv(data: bytes) -> None:
    """A damaged manifest.csv: every stage that reads it stops with a UserError."""
    from pipeline.workspace import Workspace

    with tempfile.TemporaryDirectory() as d:
        ws = Workspace(d)
        ws.write_info(media="video")
        (ws.root / "classes.txt").write_text("a\n")
        ws.manifest.write_bytes(b"id,path,label,split\n" + data)
        _expect_user_error_or_result(ws.manifest_rows)
        ws.manifest.write_bytes(data)
        _expect_user_error_or_result(ws.manifest_rows)


SECTION = st.one_of(JSON, st.dictionaries(st.sampled_from(["format", "root", "frames", "short_side", "sampling",
                                                           "backbone", "strategy", "epochs", "lr", "seed",
                                                           "val_fraction", "split", "views", "workers", "fold"]),
                                          JSON, max_size=4))


@FUZZ
@given(text=TEXT, doc=st.dictionaries(st.sampled_from(["workspace", "prepare", "sample", "train", "evaluate",
                                                         "sampel", "tarin"]), SECTION, max_size=5))
def test_fuzz_config_loader(text: str, doc: dict) -> None:
    """Arbitrary text, and arbitrary YAML documents shaped like a config: load_plan (all of
    `vtl run`'s checks, nothing run) either accepts it or raises a one-line UserError."""
    import yaml

    from pipeline.stages.run import load_plan

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        for content in (text, yaml.safe_dump(doc)):
            path.write_text(content, encoding="utf-8")
            _expect_user_error_or_result(lambda: load_plan(path))


# ----------------------------------------------------------------------------- fuzzing: samplers


@settings(max_examples=300, deadline=None, database=None)
@given(num_frames=st.integers(1, 2000), n=st.integers(1, 64), stride=st.integers(1, 16),
       sampling=st.sampled_from(["random", "dense"]), seed=st.integers(0, 2**32 - 1))
def test_contiguous_clips_step_by_stride_and_wrap(num_frames: int, n: int, stride: int, sampling: str,
                                                  seed: int) -> None:
    """random/dense clips are runs of N frames `stride` apart, looping past the end; dense views
    start one span apart and together cover every frame the spans reach."""
    from pipeline.data.sampling import SamplingConfig, clip_span

    cfg = SamplingConfig(sampling=sampling, frames=n, stride=stride, clips_per_video=3, seed=seed)
    for train in (True, False):
        views = cfg.views(num_frames, train=train, video_id="v")
        for clip in views:
            assert len(clip) == n and all(0 <= i < num_frames for i in clip)
            assert all((b - a) % num_frames == stride % num_frames for a, b in zip(clip, clip[1:], strict=False))
    if sampling == "dense":
        span, starts = clip_span(n, stride), [v[0] for v in views]
        assert starts[0] == 0 and starts[-1] == max(0, num_frames - span)
        assert all(0 < b - a <= span for a, b in zip(starts, starts[1:], strict=False))  # no gap, no repeat


NUMERIC = ("frames", "stride", "short_side", "clips_per_video", "seed")


@settings(max_examples=200, deadline=None, database=None)
@given(numbers=st.dictionaries(st.sampled_from(NUMERIC), st.integers(-3, 6), max_size=5),
       sampling=st.one_of(st.none(), st.sampled_from(["uniform", "random", "dense", "bogus", "", "Uniform"])),
       num_frames=st.integers(1, 50))
def test_sampling_config_accepts_or_refuses_cleanly(numbers: dict, sampling: str | None, num_frames: int) -> None:
    """Any values of the right kinds (kinds are checked by the CLI and `vtl run`): a UserError,
    or a sampler whose every view has N in-range indices, the same for the same seed."""
    from pipeline.data.sampling import SamplingConfig

    options = {**numbers, **({"sampling": sampling} if sampling is not None else {})}
    try:
        cfg = SamplingConfig(**options)
    except UserError:
        return
    views = cfg.views(num_frames, train=True, video_id="v")
    assert views and all(len(v) == cfg.frames and all(0 <= i < num_frames for i in v) for v in views)
    assert views == SamplingConfig(**options).views(num_frames, train=True, video_id="v")
