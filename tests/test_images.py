"""The image path: image formats, probing bad images, and the dog-breed case study."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.formats import FORMATS, FormatOptions
from pipeline.data.formats.stanford_dogs import breed_name
from pipeline.files import read_csv


def vtl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--quiet", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"vtl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def _image(path: Path, colour: tuple[int, int, int], mode: str = "RGB", size: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    arr = np.clip(np.array(colour)[None, None] + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


def test_breed_names_drop_the_synset_prefix():
    assert breed_name("n02085620-Chihuahua") == "Chihuahua"
    assert breed_name("n02106662-German_shepherd") == "German_shepherd"
    assert breed_name("beagle") == "beagle"


def test_stanford_dogs_official_mat_splits(tmp_path):
    from scipy.io import savemat

    images = tmp_path / "Images"
    files = {}
    for synset in ("n02085620-Chihuahua", "n02088364-beagle"):
        for i in range(3):
            files[f"{synset}/{synset[:9]}_{i}.jpg"] = _image(images / synset / f"{synset[:9]}_{i}.jpg", (200, 50, 50))
    rel = sorted(files)
    cell = np.empty((len(rel[:4]), 1), dtype=object)
    for i, r in enumerate(rel[:4]):
        cell[i, 0] = np.array([r])
    lists = tmp_path / "lists"
    lists.mkdir()
    savemat(lists / "train_list.mat", {"file_list": cell})
    test_cell = np.empty((3, 1), dtype=object)
    for i, r in enumerate([*rel[4:], "n02088364-beagle/missing.jpg"]):
        test_cell[i, 0] = np.array([r])
    savemat(lists / "test_list.mat", {"file_list": test_cell})

    result = FORMATS["stanford_dogs"].read(FormatOptions(tmp_path, lists, 1))
    splits = {r.path.name: (r.label, r.split) for r in result.rows}
    assert [s for _, s in splits.values()].count("train") == 4
    assert [s for _, s in splits.values()].count("test") == 2
    assert {label for label, _ in splits.values()} == {"Chihuahua", "beagle"}
    assert result.quarantined == [(str(images / "n02088364-beagle/missing.jpg"),
                                   "listed in split file but missing on disk")]


def test_bad_images_are_quarantined_and_odd_modes_become_rgb(tmp_path):
    root = tmp_path / "photos"
    for cls, colour in (("red", (220, 40, 40)), ("blue", (40, 40, 220))):
        for i in range(4):
            _image(root / cls / f"{i}.jpg", colour)
    _image(root / "red" / "cmyk.jpg", (220, 40, 40), mode="CMYK")
    _image(root / "red" / "grey.png", (220, 40, 40), mode="L")
    _image(root / "blue" / "alpha.png", (40, 40, 220), mode="RGBA")
    (root / "blue" / "empty.jpg").write_bytes(b"")
    (root / "blue" / "notes.jpg").write_text("not an image")
    good = _image(tmp_path / "whole.jpg", (40, 40, 220), size=120)
    (root / "red" / "truncated.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    ws = tmp_path / "ws"
    vtl("prepare", str(ws), "--format", "images", "--root", str(root), "--workers", "1")
    reasons = {Path(q["path"]).name: q["reason"] for q in read_csv(ws / "quarantine.csv")}
    assert set(reasons) == {"empty.jpg", "notes.jpg", "truncated.jpg"}
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["notes.jpg"].startswith("cannot decode image")
    names = {Path(r["path"]).name for r in read_csv(ws / "manifest.csv")}
    assert {"cmyk.jpg", "grey.png", "alpha.png"} <= names

    vtl("sample", str(ws), "--workers", "1")
    clips = list((ws / "clips").glob("*/*.npy"))
    assert len(clips) == len(read_csv(ws / "manifest.csv")) == 11  # 8 plain + 3 odd modes
    for clip in clips:
        arr = np.load(clip)
        assert arr.dtype == np.uint8 and arr.shape[:2] == (1, 1) and arr.shape[-1] == 3


def test_video_options_on_an_image_workspace_are_an_error(tmp_path):
    root = tmp_path / "photos"
    for cls in ("a", "b"):
        for i in range(3):
            _image(root / cls / f"{i}.png", (100, 100, 100))
    ws = tmp_path / "ws"
    vtl("prepare", str(ws), "--format", "images", "--root", str(root), "--workers", "1")
    proc = vtl("sample", str(ws), "--frames", "16", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --frames is a video option")
    assert "Traceback" not in proc.stderr


@pytest.mark.shared  # the checkpoint comes from the shared dog photos
@pytest.mark.xdist_group("dogs")  # one worker builds the dogs_linear fixture once for all three
def test_predict_refuses_a_file_that_is_not_an_image_or_video(tmp_path, dogs_linear):
    ckpt, _ = dogs_linear
    bogus = tmp_path / "photo.jpg"
    bogus.write_text("hello")
    proc = vtl("predict", str(ckpt), str(bogus), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bogus} is not a readable image"


@pytest.fixture(scope="module")
def dogs_linear(tmp_path_factory, shared_data):
    """prepare → sample → train linear → evaluate on the 6-breed dog photos (60/20/20, seed 0)."""
    ws = tmp_path_factory.mktemp("dogs") / "ws"
    start = time.perf_counter()
    vtl("prepare", str(ws), "--format", "images", "--root", str(shared_data / "images" / "dogs"),
        "--val-fraction", "0.2", "--test-fraction", "0.2", "--seed", "0")
    vtl("sample", str(ws))
    vtl("train", str(ws), "--backbone", "efficientnet_lite0", "--strategy", "linear", "--epochs", "40",
        "--lr", "0.01", "--batch-size", "32")
    vtl("evaluate", str(ws), "--run", "efficientnet_lite0-linear")
    seconds = time.perf_counter() - start
    return ws / "train" / "efficientnet_lite0-linear" / "best.pt", (ws, seconds)


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.xdist_group("dogs")
def test_dog_breeds_linear_probe_reaches_target(dogs_linear, shared_data):
    ckpt, (ws, seconds) = dogs_linear
    metrics = json.loads((ws / "eval" / "efficientnet_lite0-linear" / "metrics.json").read_text())
    assert metrics["top1"] >= 0.90, metrics
    assert metrics["num_samples"] == 60  # 20% of 6 x 50
    assert (ws / "eval" / "efficientnet_lite0-linear" / "mistakes.png").is_file()
    assert seconds <= 180 * 1.5  # target ≤ 3 min on 2 cores; slack for a loaded CI machine

    # Features were extracted once: a second linear run reuses them (no new feature folder).
    features = sorted(p.name for p in (ws / "features").iterdir())
    vtl("train", str(ws), "--backbone", "efficientnet_lite0", "--strategy", "linear", "--epochs", "5",
        "--name", "again")
    assert sorted(p.name for p in (ws / "features").iterdir()) == features

    photo = next((shared_data / "images" / "dogs" / "pug").glob("*.jpg"))
    out = json.loads(vtl("predict", str(ckpt), str(photo), "--json").stdout)
    assert len(out["top"]) == 5
    assert out["top"][0]["class"] == "pug"
    probs = [p["probability"] for p in out["top"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6


@pytest.mark.shared
def test_stanford_dogs_with_imagenet_weights_warns_about_leakage(tmp_path, shared_data):
    root = tmp_path / "Images"
    for breed, synset in (("beagle", "n02088364"), ("pug", "n02110958")):
        src = sorted((shared_data / "images" / "dogs" / breed).glob("*.jpg"))[:5]
        for f in src:
            dest = root / f"{synset}-{breed}" / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest)
    ws = tmp_path / "ws"
    vtl("prepare", str(ws), "--format", "stanford_dogs", "--root", str(tmp_path), "--workers", "1")
    assert (ws / "classes.txt").read_text().split() == ["beagle", "pug"]
    vtl("sample", str(ws), "--short-side", "64", "--workers", "1")
    proc = vtl("train", str(ws), "--backbone", "efficientnet_lite0", "--strategy", "linear", "--epochs", "1",
               "--input-size", "64")
    assert "Stanford Dogs photos come from ImageNet" in proc.stderr
    vtl("evaluate", str(ws))
    report = vtl("report", str(ws)).stdout
    assert "Stanford Dogs photos come from ImageNet" in (ws / "report.md").read_text()
    assert "report.md" in report


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.xdist_group("dogs")
def test_dog_breeds_finetune_keeps_up_with_the_linear_probe(dogs_linear, shared_data):
    """Issue 5's target: finetune ≥ linear − 0.02 on the test split, with the recipe of
    configs/dogs_efficientnet_lite0.yaml (LP-FT from the cached features, small steps). Without
    the probed head, fine-tuning 180 photos distorts the ImageNet features (0.867 at lr 0.003)."""
    _, (ws, _) = dogs_linear
    vtl("train", str(ws), "--backbone", "efficientnet_lite0", "--strategy", "finetune", "--weights", "imagenet1k",
        "--epochs", "3", "--lr", "0.0005", "--backbone-lr-mult", "0.1", "--batch-size", "16", "--input-size", "224")
    vtl("evaluate", str(ws), "--run", "efficientnet_lite0-finetune")
    top1 = {run: json.loads((ws / "eval" / run / "metrics.json").read_text())["top1"]
            for run in ("efficientnet_lite0-linear", "efficientnet_lite0-finetune")}
    assert top1["efficientnet_lite0-finetune"] >= top1["efficientnet_lite0-linear"] - 0.02, top1
    assert (ws / "train" / "efficientnet_lite0-finetune" / "head" / "best.pt").is_file()
