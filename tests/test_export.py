"""`vtl export`: the exported model's logits match PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data.sampling import SamplingConfig
from pipeline.data.synthetic import make_target_dataset
from pipeline.engine.config import TrainConfig
from pipeline.models.classifier import load_classifier
from pipeline.stages.export import example_input, run_export
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
