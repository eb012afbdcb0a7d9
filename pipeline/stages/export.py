"""``vtl export``: a trained checkpoint as TorchScript or ONNX, for serving without vtl.

The exported model takes the normalised float clip ``(B, C, T, H, W)`` that
evaluation feeds the network (see ``config.yaml`` of the run for T and the crop
size; mean/std are the backbone's) and returns logits over the run's classes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.choices import EXPORT_FORMATS
from pipeline.errors import UserError
from pipeline.files import replaced_on_success
from pipeline.models.checkpoint import Checkpoint
from pipeline.models.classifier import load_classifier


def example_input(ckpt: Checkpoint, batch: int = 1) -> torch.Tensor:
    cfg = ckpt.config
    frames = int(cfg["sampling_params"]["frames"])
    size = int(cfg["input_size"])
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(0))


def run_export(checkpoint: Path, fmt: str, out: Path) -> Path:
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    model, ckpt = load_classifier(checkpoint)
    model.eval()
    x = example_input(ckpt)
    with replaced_on_success(out) as tmp, torch.inference_mode(False), torch.no_grad():
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(model, x), str(tmp))
        else:
            _onnx(model, x, str(tmp))
    return out


def _onnx(model: torch.nn.Module, x: torch.Tensor, path: str) -> None:
    try:
        # The TorchScript-based exporter: no onnxscript dependency, dynamic batch axis.
        torch.onnx.export(model, (x,), path, dynamo=False, input_names=["clip"], output_names=["logits"],
                          dynamic_axes={"clip": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                          external_data=False)
    except ImportError as e:
        raise UserError(f"ONNX export needs the onnx package ({e}); pip install onnx") from None
