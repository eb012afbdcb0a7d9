"""`vtl predict` over folders and lists (bad inputs are rows, the batch goes on), its CSV/JSONL
schemas, long-video timelines, and `--device cuda` without a GPU.

One tiny classifier is trained once for the module: three synthetic target actions whose shape and
colour always go with the motion, an ImageNet efficientnet_lite0 linear probe (seconds on 2 cores).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import vtl_main
from PIL import Image

from pipeline.data import decoders
from pipeline.data.clips import load_views
from pipeline.data.sampling import SamplingConfig
from pipeline.data.synthetic import TARGET_CLASSES, make_clip, make_target_dataset, write_video
from pipeline.engine.config import TrainConfig
from pipeline.models.checkpoint import Checkpoint
from pipeline.stages.predict import COLUMNS, SEGMENT_COLUMNS, WINDOW_COLUMNS, run_predict
from pipeline.stages.prepare import PrepareConfig, run_prepare
from pipeline.stages.sample import SampleConfig, run_sample
from pipeline.stages.train import run_train
from pipeline.workspace import Workspace

CLASSES = TARGET_CLASSES[:3]
SIZE, FPS = 64, 16
INPUT = 112  # decoded and fed at 112 px: ImageNet features need objects of more than a few pixels


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(best.pt, the dataset root): 3 actions x 12 clips of 16 frames at 64 px, linear probe."""
    root = tmp_path_factory.mktemp("predict")
    data = make_target_dataset(root / "data", 12, size=SIZE, frames=16, classes=CLASSES, shape_consistency=1.0)
    ws = Workspace(root / "ws")
    run_prepare(ws, PrepareConfig(format="folder", root=data, workers=1))
    run_sample(ws, SamplingConfig(frames=4, short_side=INPUT, clips_per_video=2), SampleConfig(workers=1))
    run_train(ws, TrainConfig(backbone="efficientnet_lite0", strategy="linear", weights="imagenet1k", epochs=30,
                              lr=0.01, input_size=INPUT))
    return ws.run("efficientnet_lite0-linear").best, data


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture
def mixed_folder(trained, tmp_path) -> tuple[Path, dict[str, Path]]:
    """Good videos, a corrupted video, an empty file, an image, a frame folder and a stray text file."""
    _, data = trained
    folder = tmp_path / "inbox"
    good = {cls.name: sorted((data / cls.name).glob("*.mp4"))[0] for cls in CLASSES}
    (folder / "videos").mkdir(parents=True)
    for name, video in good.items():
        shutil.copy(video, folder / "videos" / f"{name}.mp4")
    corrupted = folder / "corrupted.mp4"
    corrupted.write_bytes(good[CLASSES[0].name].read_bytes()[:300])  # the header, no frames
    (folder / "empty.mp4").write_bytes(b"")
    clip = decoders.read(good[CLASSES[1].name], list(range(16)))  # a video of class 1, as an image and frames

    Image.fromarray(clip[0]).save(folder / "photo.png")
    frames = folder / "frames" / "clip_a"
    frames.mkdir(parents=True)
    for i, img in enumerate(clip, start=1):
        Image.fromarray(img).save(frames / f"img_{i:05d}.png")
    (folder / "notes.txt.bak").write_text("not media")
    paths = {"corrupted": corrupted, "empty": folder / "empty.mp4", "image": folder / "photo.png",
             "frames": frames, **{f"video_{k}": folder / "videos" / f"{k}.mp4" for k in good}}
    return folder, paths


def test_batch_over_a_folder_predicts_every_good_input_and_reports_the_bad(trained, mixed_folder, tmp_path, capfd):
    ckpt, _ = trained
    folder, paths = mixed_folder
    out = tmp_path / "predictions.csv"
    assert vtl_main("-q", "predict", ckpt, folder, "--output", out, "--topk", "2", "--workers", "1",
                    "--batch-size", "3") == 0
    captured = capfd.readouterr()
    assert captured.out.strip() == str(out)
    assert "2 input(s) could not be predicted" in captured.err
    columns, rows = _read_csv(out)
    assert columns == list(COLUMNS)
    by_path = {r["path"]: r for r in rows}
    assert set(by_path) == {str(p) for p in paths.values()}  # one row per input, the stray text file ignored
    for key in ("corrupted", "empty"):
        assert by_path[str(paths[key])]["error"] and not by_path[str(paths[key])]["top1"]
    assert "not a readable video" in by_path[str(paths["empty"])]["error"]
    names = [c.name for c in CLASSES]
    for key in ("image", "frames", *(f"video_{n}" for n in names)):
        row = by_path[str(paths[key])]
        assert row["error"] == "" and row["top1"] in names
        topk = json.loads(row["topk"])
        assert [t["class"] for t in topk][0] == row["top1"] and len(topk) == 2
        assert float(row["top1_probability"]) == topk[0]["probability"] >= topk[1]["probability"]
    for n in names:  # the trained actions are recognised
        assert by_path[str(paths[f"video_{n}"])]["top1"] == n
    assert by_path[str(paths["frames"])]["top1"] == CLASSES[1].name


def test_jsonl_and_list_file_inputs(trained, mixed_folder, tmp_path):
    ckpt, _ = trained
    _, paths = mixed_folder
    listing = tmp_path / "inputs.csv"  # a CSV with a path column (relative to the list), other columns ignored
    listing.write_text("label,path\nx,inbox/empty.mp4\ny,inbox/videos/" + f"{CLASSES[2].name}.mp4\n")
    out = tmp_path / "out.jsonl"
    result = run_predict(ckpt, [listing, tmp_path / "missing.mp4"], topk=3, output=out, workers=0)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [set(r) for r in records] == [{*COLUMNS, "input", "top"}] * 3
    assert [r["path"] for r in records] == [str(tmp_path / "inbox/empty.mp4"),
                                            str(tmp_path / "inbox/videos" / f"{CLASSES[2].name}.mp4"),
                                            str(tmp_path / "missing.mp4")]
    assert records[2]["error"] == f"{tmp_path / 'missing.mp4'} does not exist"
    assert records[1]["top1"] == CLASSES[2].name and len(records[1]["topk"]) == 3 and records[1]["error"] == ""
    assert sum(t["probability"] for t in records[1]["topk"]) == pytest.approx(1.0, abs=1e-4)
    assert result.predicted == 1


def test_nothing_predictable_is_a_one_line_error(trained, tmp_path, capfd):
    ckpt, _ = trained
    (tmp_path / "a.mp4").write_bytes(b"")
    assert vtl_main("predict", ckpt, tmp_path / "a.mp4", tmp_path / "b.mp4") == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: none of the 2 inputs could be predicted (first: ")
    assert "Traceback" not in "\n".join(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_a_one_line_error(trained, capfd):
    ckpt, data = trained
    video = sorted(data.rglob("*.mp4"))[0]
    assert vtl_main("predict", ckpt, video, "--device", "cuda") == 2
    err = capfd.readouterr().err.strip()
    assert err.startswith("error: --device cuda: no GPU is visible") and len(err.splitlines()) == 1


def test_timeline_of_three_actions_back_to_back(trained, tmp_path):
    ckpt, _ = trained
    seconds = 3  # each action lasts 3 s (done three times, 1 s each): the boundaries are at 3 s and 6 s
    rng = np.random.default_rng(11)
    parts = [make_clip(c.motion, c.shape, "target", rng, size=SIZE, frames=FPS, hue=c.hue)
             for c in CLASSES for _ in range(seconds)]
    video = tmp_path / "long.mp4"
    write_video(video, np.concatenate(parts), fps=FPS)
    out = tmp_path / "timeline.csv"
    window, stride = 1.0, 0.5
    result = run_predict(ckpt, [video], topk=2, output=out, window=window, stride=stride, smooth=3, workers=0)

    columns, rows = _read_csv(out)
    assert columns == ["path", *WINDOW_COLUMNS, *COLUMNS[1:]]
    assert [(float(r["start"]), float(r["end"])) for r in rows] == \
        [(k * stride, k * stride + window) for k in range(int((3 * seconds - window) / stride) + 1)]
    seg_columns, segments = _read_csv(out.with_name("timeline.segments.csv"))
    assert seg_columns == list(SEGMENT_COLUMNS)
    assert [s["label"] for s in segments] == [c.name for c in CLASSES], [(r["start"], r["top1"]) for r in rows]
    for s, truth in zip(segments, range(0, 3 * seconds, seconds), strict=True):
        assert abs(float(s["start"]) - truth) <= stride and abs(float(s["end"]) - (truth + seconds)) <= stride
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.segments == [{**s, "start": float(s["start"]), "end": float(s["end"]), "score": float(s["score"])}
                               for s in segments]

    # every window below the threshold: one background segment over the whole video
    quiet = run_predict(ckpt, [video], window=seconds, min_score=1.0, workers=0)  # 3 windows: cheap
    assert [(s["label"], s["start"], s["end"]) for s in quiet.segments] == [("background", 0.0, 3.0 * seconds)]


# ----------------------------------------------------------------------------- docs/serving.md's client

REPO = Path(__file__).resolve().parents[1]
REAL_CLIPS = ("hmdb51/dive/BASE_Jumping_Compilation_-_Brilliant_dive_f_cm_np1_le_bad_3.mp4",
              "torchvision_assets/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi",
              "kinetics400/abseiling/abseiling_k400.mp4",
              "kinetics400/flipping_pancake/flipping_a_pancake.mkv")


def documented_client() -> types.ModuleType:
    """The code block of docs/serving.md, as a module: the test runs what the page shows."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "serving.md").read_text(), re.S)
    assert len(blocks) == 1
    module = types.ModuleType("onnx_client")
    exec(compile(blocks[0], "docs/serving.md", "exec"), module.__dict__)
    return module


def test_the_documented_client_is_the_script():
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "serving.md").read_text(), re.S)
    assert blocks == [(REPO / "scripts" / "onnx_client.py").read_text()]


@pytest.mark.shared
def test_documented_onnx_client_matches_predict_on_real_clips(trained, shared_data, tmp_path, capfd):
    pytest.importorskip("onnxruntime")
    ckpt, _ = trained
    model = tmp_path / "model.onnx"
    assert vtl_main("-q", "export", ckpt, "--format", "onnx", "--uint8-input", "-o", model) == 0
    (tmp_path / "model.onnx.json").unlink()  # the client needs only the .onnx file
    client = documented_client()
    session, meta = client.load(str(model))
    clips = [shared_data / "videos" / c for c in REAL_CLIPS]
    ours = run_predict(ckpt, clips, topk=len(CLASSES), workers=0)
    sampling = SamplingConfig(**Checkpoint.load(ckpt).config["sampling_params"])
    for clip, row in zip(clips, ours.rows, strict=True):
        assert row["error"] == ""
        vtl_probs = {t["class"]: t["probability"] for t in row["topk"]}
        # the same decoded frames (vtl's): the client's crop, model run and averaging agree to 1e-4
        views = load_views(clip, sampling)
        same = client.classify(session, meta, np.stack([client.crop(v, meta["input_size"]) for v in views]))
        np.testing.assert_allclose(same, [vtl_probs[c] for c in meta["classes"]], atol=1e-4, rtol=0)
        # the client on its own (its decoding and sampling): the same answer
        theirs = client.predict(session, meta, clip)
        assert meta["classes"][int(theirs.argmax())] == row["top1"], (clip, theirs, vtl_probs)
