"""End to end through the CLI on a tiny synthetic dataset: prepare → sample → train → evaluate → predict,
``vtl run CONFIG.yaml``, and the contract's files, columns and keys (docs: /work/shared/DESIGN.md).

One workspace is built once for the module (the expensive part: two small trainings). Stages run
in this process through the Click group (no interpreter start-up per stage); error paths go through
``pipeline.cli.main`` (the console script's code: exit code and ``error:`` line as a user sees them).
tests/test_bad_input.py runs the same kind of errors in real processes.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import TINY_CLASSES, TINY_CLIPS_PER_CLASS, invoke_vtl, vtl_main

pytestmark = pytest.mark.slow  # the module's workspace takes ~30-60 s to build on 2 cores

LINEAR = "efficientnet_lite0-linear"
SCRATCH = "r3d_18-scratch"
VIEWS = 2
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONTRACT_METRICS = ("top1", "top5", "mean_class_accuracy", "num_samples", "video_top1", "video_top5")


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def mtimes(folder: Path, pattern: str = "*") -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob(pattern)) if p.is_file()}


@pytest.fixture(scope="module")
def ws(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("pipeline") / "ws"
    invoke_vtl("-q", "prepare", ws, "--format", "folder", "--root", tiny_dataset, "--seed", "0", "--workers", "1")
    invoke_vtl("-q", "sample", ws, "--frames", "8", "--short-side", "32", "--clips-per-video", VIEWS,
               "--workers", "1")
    # a frame backbone with the packaged ImageNet weights, linear probe on cached features
    invoke_vtl("-q", "train", ws, "--backbone", "efficientnet_lite0", "--strategy", "linear", "--weights",
               "imagenet1k", "--input-size", "64", "--epochs", "3", "--lr", "0.01")
    # a video backbone from scratch: trains on the clips themselves
    invoke_vtl("-q", "train", ws, "--backbone", "r3d_18", "--strategy", "scratch", "--input-size", "32",
               "--epochs", "1", "--batch-size", "4")
    for run in (LINEAR, SCRATCH):
        invoke_vtl("-q", "evaluate", ws, "--run", run)
    return ws


# ----------------------------------------------------------------------------- prepare


def test_prepare_writes_manifest_classes_quarantine(ws: Path, tiny_dataset: Path) -> None:
    columns, rows = read_csv(ws / "manifest.csv")
    assert {"path", "label", "split", "num_frames", "fps", "width", "height"} <= set(columns)
    assert len(rows) == TINY_CLASSES * TINY_CLIPS_PER_CLASS
    for r in rows:
        assert Path(r["path"]).is_file() and Path(r["path"]).parent.name == r["label"]
        assert (int(r["num_frames"]), float(r["fps"]), int(r["width"]), int(r["height"])) == (12, 16.0, 32, 32)

    classes = (ws / "classes.txt").read_text().splitlines()
    assert classes == sorted(p.name for p in tiny_dataset.iterdir())
    assert classes == sorted(classes) and len(classes) == TINY_CLASSES

    assert (ws / "quarantine.csv").read_text().splitlines() == ["path,reason"]


def test_split_is_stratified(ws: Path) -> None:
    _, rows = read_csv(ws / "manifest.csv")
    counts = Counter((r["label"], r["split"]) for r in rows)
    for label in {r["label"] for r in rows}:
        # per class of 6: round(6 x 0.15) = 1 to test, 1 to val, the other 4 to train
        assert (counts[label, "train"], counts[label, "val"], counts[label, "test"]) == (4, 1, 1), counts


def test_split_is_deterministic(ws: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    invoke_vtl("-q", "prepare", tmp_path / "same", "--root", tiny_dataset, "--seed", "0", "--workers", "1")
    assert (tmp_path / "same" / "manifest.csv").read_bytes() == (ws / "manifest.csv").read_bytes()

    invoke_vtl("-q", "prepare", tmp_path / "other", "--root", tiny_dataset, "--seed", "1", "--workers", "1")
    _, a = read_csv(ws / "manifest.csv")
    _, b = read_csv(tmp_path / "other" / "manifest.csv")
    assert {r["path"] for r in a} == {r["path"] for r in b}
    assert {(r["path"], r["split"]) for r in a} != {(r["path"], r["split"]) for r in b}  # the seed matters
    assert {r["label"] for r in b if r["split"] == "train"} == {r["label"] for r in a}


# ----------------------------------------------------------------------------- sample


def test_sample_rerun_uses_the_cache(ws: Path) -> None:
    clips = next((ws / "clips").iterdir())
    before = mtimes(clips)
    prepared = mtimes(ws, "*.csv") | mtimes(ws, "*.txt")
    assert sum(name.endswith(".npy") for name in before) == TINY_CLASSES * TINY_CLIPS_PER_CLASS

    result = invoke_vtl("sample", ws, "--frames", "8", "--short-side", "32", "--clips-per-video", VIEWS,
                        "--workers", "1")
    assert "18 videos already cached, 0 to sample" in result.stderr
    assert f"sampled {TINY_CLASSES * TINY_CLIPS_PER_CLASS} videos" in result.stdout
    assert mtimes(clips) == before  # no clip rewritten
    assert mtimes(ws, "*.csv") | mtimes(ws, "*.txt") == prepared  # manifest, quarantine, classes untouched


def test_cached_clips_have_the_sampled_shape(ws: Path) -> None:
    import numpy as np

    clips = ws / "clips" / "uniform-t8-s2-ss32-v2-seed0"
    arr = np.load(next(clips.glob("*.npy")))
    assert arr.dtype == np.uint8 and arr.shape == (VIEWS, 8, 32, 32, 3)


# ----------------------------------------------------------------------------- train


@pytest.mark.parametrize(("run", "epochs"), [(LINEAR, 3), (SCRATCH, 1)])
def test_train_writes_run_files(ws: Path, run: str, epochs: int) -> None:
    out = ws / "train" / run
    for name in ("best.pt", "last.pt", "metrics.jsonl", "config.yaml"):
        assert (out / name).is_file(), name
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    for h in history:  # 3 val/test videos, 1-3 epochs: too few to assert learning here (test_benchmark.py does)
        assert 0.0 <= h["val_top1"] <= 1.0 and math.isfinite(h["train_loss"])
    config = yaml.safe_load((out / "config.yaml").read_text())
    backbone, strategy = run.rsplit("-", 1)
    assert (config["backbone"], config["strategy"], config["epochs"]) == (backbone, strategy, epochs)
    assert config["classes"] == (ws / "classes.txt").read_text().splitlines()


def test_linear_probe_caches_features(ws: Path) -> None:
    features = list((ws / "features").iterdir())
    assert len(features) == 1 and features[0].name.startswith("efficientnet_lite0@imagenet1k@")


def test_train_rerun_does_not_retrain(ws: Path) -> None:
    out = ws / "train" / LINEAR
    before = mtimes(out)
    result = invoke_vtl("train", ws, "--backbone", "efficientnet_lite0", "--strategy", "linear", "--weights",
                        "imagenet1k", "--input-size", "64", "--epochs", "3", "--lr", "0.01")
    assert "already finished" in result.stderr
    assert "after 3 epochs" in result.stdout
    after = mtimes(out)
    assert after.pop("train.log") > before.pop("train.log")  # the log says what the re-run did ...
    assert "already finished" in (out / "train.log").read_text().splitlines()[-1]
    assert after == before  # ... and best.pt, last.pt, metrics.jsonl and config.yaml are untouched


def test_finetune_starts_from_the_linear_probe_head(ws: Path, tmp_path: Path) -> None:
    """LP-FT: the head is first fitted on the cached frozen features (the linear run's cache is
    reused), and fine-tuning starts from that head. With a fine-tuning LR of ~0, the final head
    is the probe's best head. (On a copy: the module's workspace keeps its latest run.)"""
    import shutil

    import torch

    ws = Path(shutil.copytree(ws, tmp_path / "ws"))
    features = sorted(p.name for p in (ws / "features").iterdir())
    invoke_vtl("-q", "train", ws, "--backbone", "efficientnet_lite0", "--strategy", "finetune", "--weights",
               "imagenet1k", "--input-size", "64", "--epochs", "1", "--lr", "1e-12", "--head-epochs", "4",
               "--batch-size", "4", "--name", "lpft")
    assert sorted(p.name for p in (ws / "features").iterdir()) == features  # no second extraction
    out = ws / "train" / "lpft"
    head = torch.load(out / "head" / "best.pt", weights_only=True)
    final = torch.load(out / "best.pt", weights_only=True)
    assert head["config"]["strategy"] == "linear" and head["config"]["epochs"] == 4
    for key in ("head.1.weight", "head.1.bias"):
        assert head["model"][key].abs().sum() > 0
        torch.testing.assert_close(final["model"][key], head["model"][key], atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("run", [LINEAR, SCRATCH])
def test_evaluate_writes_the_contract(ws: Path, run: str) -> None:
    out = ws / "eval" / run
    metrics = json.loads((out / "metrics.json").read_text())
    for key in CONTRACT_METRICS:
        assert key in metrics, key
    for key in ("top1", "top5", "mean_class_accuracy", "video_top1", "video_top5"):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
    _, manifest = read_csv(ws / "manifest.csv")
    test_rows = [r for r in manifest if r["split"] == "test"]
    assert metrics["num_samples"] == VIEWS * len(test_rows)  # clip level: every view of every test video
    assert metrics["top5"] == 1.0  # 3 classes: the true class is always in the top 5

    columns, per_class = read_csv(out / "per_class.csv")
    assert columns == ["class", "precision", "recall", "f1", "support"]
    assert [r["class"] for r in per_class] == (ws / "classes.txt").read_text().splitlines()
    assert sum(int(r["support"]) for r in per_class) == len(test_rows)

    columns, predictions = read_csv(out / "predictions.csv")
    assert {"path", "label", "predicted", "probability", "correct"} <= set(columns)
    assert sorted((r["path"], r["label"]) for r in predictions) == sorted((r["path"], r["label"]) for r in test_rows)
    # video top-1 is the share of correct video-level predictions
    assert metrics["video_top1"] == pytest.approx(sum(int(r["correct"]) for r in predictions) / len(predictions))
    for r in predictions:
        assert 0.0 < float(r["probability"]) <= 1.0
        assert int(r["correct"]) == (r["label"] == r["predicted"])

    png = (out / "confusion.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 1000


def test_evaluate_defaults_to_the_latest_run_and_is_deterministic(ws: Path) -> None:
    import numpy as np

    out = ws / "eval" / SCRATCH
    before = json.loads((out / "metrics.json").read_text())
    (cache,) = out.glob(".predictions-*.npz")  # evaluate's cached softmax outputs: remove them, so the
    with np.load(cache) as z:                   # second evaluation decodes and scores every clip again
        probs_before = z["probs"]
    cache.unlink()
    printed = json.loads(invoke_vtl("-q", "evaluate", ws).stdout)  # no --run, default --split test
    assert Path(printed["eval_dir"]).name == SCRATCH  # the run trained last
    (cache,) = out.glob(".predictions-*.npz")
    with np.load(cache) as z:
        np.testing.assert_allclose(z["probs"], probs_before, atol=1e-6, rtol=0)
    for key in ("top1", "top5", "mean_class_accuracy", "video_top1", "num_samples"):
        assert printed[key] == pytest.approx(before[key])


# ----------------------------------------------------------------------------- predict


def test_predict_json(ws: Path, tiny_dataset: Path) -> None:
    videos = sorted(tiny_dataset.rglob("*.mp4"))[:2]
    classes = (ws / "classes.txt").read_text().splitlines()
    for run, inputs in ((LINEAR, videos), (SCRATCH, videos[:1])):
        result = invoke_vtl("predict", ws / "train" / run / "best.pt", *inputs, "--json", "--topk", "2")
        lines = result.stdout.splitlines()
        assert len(lines) == len(inputs)
        for line, video in zip(lines, inputs, strict=True):
            obj = json.loads(line)
            assert obj["input"] == str(video)
            probs = [t["probability"] for t in obj["top"]]
            assert len(probs) == 2 and probs == sorted(probs, reverse=True)
            assert all(0.0 <= p <= 1.0 for p in probs) and sum(probs) <= 1.0 + 1e-6
            assert {t["class"] for t in obj["top"]} <= set(classes)


@pytest.mark.parametrize("run", [LINEAR, SCRATCH])
def test_predict_agrees_with_evaluate(ws: Path, run: str) -> None:
    # The same checkpoint on the same test videos: predict decodes and samples each file itself, evaluate
    # reads the clip cache (and, for the linear probe, its cached features); both average the softmax
    # over the same views, so the top class and its probability agree.
    _, rows = read_csv(ws / "eval" / run / "predictions.csv")
    rows = sorted(rows, key=lambda r: r["path"])[:4]
    result = invoke_vtl("predict", ws / "train" / run / "best.pt", *[r["path"] for r in rows], "--json",
                        "--topk", "1")
    for line, row in zip(result.stdout.splitlines(), rows, strict=True):
        (top,) = json.loads(line)["top"]
        assert top["class"] == row["predicted"], row["path"]
        assert top["probability"] == pytest.approx(float(row["probability"]), abs=1e-4), row["path"]


def test_the_readme_export_example_exports_and_runs(ws: Path, tmp_path: Path) -> None:
    # README: vtl export runs/mine/train/efficientnet_lite0-linear/best.pt --format onnx --uint8-input -o model.onnx
    import numpy as np
    import onnxruntime as ort
    import torch

    from pipeline.data.transforms import DeviceNormalize
    from pipeline.models.classifier import load_classifier
    from pipeline.stages.export import example_input

    best = ws / "train" / LINEAR / "best.pt"
    invoke_vtl("export", best, "--format", "onnx", "--uint8-input", "-o", tmp_path / "model.onnx")
    model, ckpt = load_classifier(best)
    clip = example_input(ckpt, 2, uint8=True)  # uint8 (B, T, H, W, 3), as a client decodes it
    with torch.no_grad():  # vtl's own path: the checkpoint's normalisation, then the network
        want = model.eval()(DeviceNormalize(*ckpt.normalization)(clip.permute(0, 4, 1, 2, 3))).numpy()
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: clip.numpy()})
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_predict_topk_beyond_the_classes(ws: Path, tiny_dataset: Path) -> None:
    # top-k larger than the number of classes: every class once, probabilities summing to 1
    video = sorted(tiny_dataset.rglob("*.mp4"))[0]
    obj = json.loads(invoke_vtl("predict", ws / "train" / LINEAR / "best.pt", video, "--json", "--topk", "10").stdout)
    assert sorted(t["class"] for t in obj["top"]) == (ws / "classes.txt").read_text().splitlines()
    assert sum(t["probability"] for t in obj["top"]) == pytest.approx(1.0, abs=1e-4)


def test_predict_plain_text(ws: Path, tiny_dataset: Path) -> None:
    video = sorted(tiny_dataset.rglob("*.mp4"))[0]
    lines = invoke_vtl("predict", ws / "train" / LINEAR / "best.pt", video, "--topk", "1").stdout.splitlines()
    assert lines[0] == str(video) and len(lines) == 2


# ----------------------------------------------------------------------------- vtl run CONFIG.yaml


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_config(tiny_dataset: Path) -> dict:
    return {
        "workspace": "ws_run",  # relative to the config file's folder
        "prepare": {"format": "folder", "root": str(tiny_dataset), "seed": 0, "workers": 1},
        "sample": {"frames": 4, "short_side": 32, "workers": 1},
        "train": [{"backbone": "efficientnet_lite0", "strategy": "linear", "epochs": 2, "input_size": 32,
                   "name": "probe"}],
        "evaluate": {"split": "test"},
    }


def test_run_config_runs_every_stage(ws: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "exp.yaml", run_config(tiny_dataset))
    invoke_vtl("-q", "run", config)
    out = tmp_path / "ws_run"
    # same prepare options as the module's workspace: the same manifest
    assert (out / "manifest.csv").read_bytes() == (ws / "manifest.csv").read_bytes()
    assert len(list((out / "clips" / "uniform-t4-s2-ss32-v1-seed0").glob("*.npy"))) == 18
    assert {p.name for p in (out / "train" / "probe").iterdir()} >= {"best.pt", "last.pt", "metrics.jsonl",
                                                                    "config.yaml"}
    metrics = json.loads((out / "eval" / "probe" / "metrics.json").read_text())
    assert set(CONTRACT_METRICS) <= set(metrics)
    _, manifest = read_csv(out / "manifest.csv")
    assert metrics["num_samples"] == sum(r["split"] == "test" for r in manifest)  # evaluate: {split: test}


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["prepare"].update(val_fractoin=0.2),
     "typo.yaml: prepare: unknown key 'val_fractoin' (did you mean 'val_fraction'?)"),
    (lambda d: d.update(sampel=d.pop("sample")), "typo.yaml: unknown key 'sampel' (did you mean 'sample'?)"),
    (lambda d: d["sample"].update(frame=8), "sample: unknown key 'frame' (did you mean 'frames'?)"),
    (lambda d: d["train"][0].update(epoch=3), "train[0]: unknown key 'epoch' (did you mean 'epochs'?)"),
], ids=["prepare", "top-level", "sample", "train"])
def test_run_config_unknown_keys(tiny_dataset: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], edit,
                                 message: str) -> None:
    data = run_config(tiny_dataset)
    edit(data)
    config = write_config(tmp_path / "typo.yaml", data)
    capfd.readouterr()
    assert vtl_main("run", config) == 2  # pipeline.cli.main, as the console script (exit code via SystemExit)
    err = capfd.readouterr().err
    assert "Traceback" not in err
    last = err.rstrip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, err


def test_run_config_is_validated_before_any_stage_runs(tiny_dataset: Path, tmp_path: Path,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    data = run_config(tiny_dataset)
    data["train"][0]["epoch"] = 3
    assert vtl_main("run", write_config(tmp_path / "typo.yaml", data)) == 2
    assert not (tmp_path / "ws_run" / "manifest.csv").exists()
