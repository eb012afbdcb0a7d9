"""`vtl export`: the exported model's logits match PyTorch's; the file describes itself (metadata in
the ONNX/TorchScript file and a JSON sidecar); `--uint8-input` bakes the normalisation in."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline import __version__
from pipeline.data.sampling import SamplingConfig
from pipeline.data.synthetic import make_target_dataset
from pipeline.data.transforms import DeviceNormalize
from pipeline.engine.config import TrainConfig
from pipeline.models.classifier import load_classifier
from pipeline.models.registry import get_spec
from pipeline.stages.export import TORCHSCRIPT_METADATA, example_input, metadata_path, run_export
from pipeline.stages.prepare import PrepareConfig, run_prepare
from pipeline.stages.sample import SampleConfig, run_sample
from pipeline.stages.train import run_train
from pipeline.workspace import Workspace


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data = make_target_dataset(root / "data", 4, size=32, frames=8)
    ws = Workspace(root / "ws")
    run_prepare(ws, PrepareConfig(format="folder", root=data, val_fraction=0.25, test_fraction=0.25, workers=1))
    run_sample(ws, SamplingConfig(frames=4, short_side=32), SampleConfig(workers=1))
    run_train(ws, TrainConfig(backbone="r3d_18", strategy="scratch", epochs=1, batch_size=4, input_size=32))
    return ws.run("r3d_18-scratch").best


def _reference(ckpt_path, batch: int = 2):
    model, ckpt = load_classifier(ckpt_path)
    model.eval()
    x = example_input(ckpt, batch)
    with torch.no_grad():
        return x, model(x).numpy()


def test_torchscript_matches_pytorch(checkpoint, tmp_path):
    x, ref = _reference(checkpoint)
    path = run_export(checkpoint, "torchscript", tmp_path / "model.pt")
    scripted = torch.jit.load(str(path))
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), ref, atol=1e-4, rtol=0)


def test_onnx_matches_pytorch_with_another_batch_size(checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    x, ref = _reference(checkpoint, batch=3)
    path = run_export(checkpoint, "onnx", tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path))
    np.testing.assert_allclose(session.run(None, {"clip": x.numpy()})[0], ref, atol=1e-4, rtol=0)
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed into place


def test_exports_describe_themselves(checkpoint, tmp_path):
    onnx = pytest.importorskip("onnx")
    _, ckpt = load_classifier(checkpoint)
    spec = get_spec("r3d_18")
    onnx_path = run_export(checkpoint, "onnx", tmp_path / "model.onnx")
    meta = json.loads(metadata_path(onnx_path).read_text())
    assert metadata_path(onnx_path).name == "model.onnx.json"
    assert {p.key: json.loads(p.value) for p in onnx.load(str(onnx_path)).metadata_props} == meta
    assert meta["classes"] == ckpt.classes and len(meta["classes"]) == 5
    assert (meta["mean"], meta["std"]) == (list(spec.mean), list(spec.std))
    assert (meta["frames"], meta["input_size"], meta["resize"]["short_side"]) == (4, 32, 32)
    assert meta["sampling"]["sampling"] == "uniform" and meta["sampling"]["test_views"] == 1
    assert (meta["backbone"], meta["weights"], meta["vtl_version"]) == ("r3d_18", "none", __version__)
    assert meta["input"] == {"name": "clip", "layout": meta["input"]["layout"], "uint8": False}

    ts_path = run_export(checkpoint, "torchscript", tmp_path / "model.pt")
    extra = {TORCHSCRIPT_METADATA: ""}
    torch.jit.load(str(ts_path), _extra_files=extra)
    assert json.loads(extra[TORCHSCRIPT_METADATA]) == meta == json.loads(metadata_path(ts_path).read_text())


def test_uint8_input_bakes_the_normalisation_in(checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, ckpt = load_classifier(checkpoint)
    model.eval()
    spec = get_spec(ckpt.backbone)
    x8 = example_input(ckpt, 3, uint8=True)  # (B, T, H, W, 3) uint8
    with torch.no_grad():
        ref = model(DeviceNormalize(spec.mean, spec.std)(x8.permute(0, 4, 1, 2, 3))).numpy()
    path = run_export(checkpoint, "onnx", tmp_path / "m.onnx", uint8_input=True)
    session = ort.InferenceSession(str(path))
    np.testing.assert_allclose(session.run(None, {"clip": x8.numpy()})[0], ref, atol=1e-4, rtol=0)
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["input"]["uint8"] is True
