"""``vtl export``: a trained checkpoint as TorchScript or ONNX, for serving without vtl.

The exported model returns logits over the run's classes. It takes the normalised float clip
``(B, C, T, H, W)`` that evaluation feeds the network or, with ``uint8_input``, the raw uint8 clip
``(B, T, H, W, 3)`` (normalisation baked into the graph). Either way the file describes itself
(:func:`metadata`): class names, mean/std, frames, input size, the sampling and resize rules,
backbone, weights and vtl version, in ONNX ``metadata_props`` (one JSON value per key), in the
TorchScript file's extra file ``vtl.json``, and in a sidecar ``FILE.json`` (docs/serving.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pipeline import __version__
from pipeline.choices import EXPORT_FORMATS
from pipeline.data.sampling import SamplingConfig
from pipeline.errors import UserError
from pipeline.files import replaced_on_success, write_json
from pipeline.models.checkpoint import Checkpoint
from pipeline.models.classifier import load_classifier

TORCHSCRIPT_METADATA = "vtl.json"  # the TorchScript extra file holding the metadata
INPUT_NAME, OUTPUT_NAME = "clip", "logits"


def example_input(ckpt: Checkpoint, batch: int = 1, *, uint8: bool = False) -> torch.Tensor:
    frames, size = int(ckpt.config["sampling_params"]["frames"]), int(ckpt.config["input_size"])
    g = torch.Generator().manual_seed(0)
    if uint8:
        return torch.randint(0, 256, (batch, frames, size, size, 3), generator=g, dtype=torch.uint8)
    return torch.randn(batch, 3, frames, size, size, generator=g)


def metadata(ckpt: Checkpoint, *, uint8_input: bool) -> dict[str, Any]:
    """Everything a client needs to feed the exported model as `vtl predict` feeds the network."""
    mean, std = ckpt.normalization
    sampling = SamplingConfig(**ckpt.config["sampling_params"])
    size = int(ckpt.config["input_size"])
    layout = "uint8 (B, T, H, W, 3), RGB 0-255" if uint8_input else \
        "float32 (B, 3, T, H, W), (x / 255 - mean) / std"
    return {
        "classes": list(ckpt.classes),
        "mean": list(mean), "std": list(std),
        "frames": sampling.frames, "input_size": size,
        "sampling": {**sampling.to_dict(), "test_views": sampling.clips_per_video,
                     "rule": "uniform: TSN segments, view v of V takes frame floor(k*n/T + (v+0.5)*n/(T*V)) of "
                             "segment k; softmax averaged over the views" if sampling.sampling == "uniform"
                             else f"{sampling.sampling} (pipeline.data.sampling)"},
        "resize": {"short_side": sampling.short_side, "input_size": size,
                   "rule": f"decode with the short side at {sampling.short_side} px (even sizes), resize the short "
                           f"side to {size} (bilinear, antialiased), centre crop {size}x{size}"},
        "input": {"name": INPUT_NAME, "layout": layout, "uint8": uint8_input},
        "output": {"name": OUTPUT_NAME, "layout": "float32 (B, classes) logits: softmax for probabilities"},
        "backbone": ckpt.backbone, "weights": ckpt.weights, "temporal": ckpt.temporal,
        "vtl_version": __version__,
    }


def metadata_path(out: Path) -> Path:
    """The sidecar beside an exported file: ``model.onnx`` → ``model.onnx.json``."""
    return out.with_name(out.name + ".json")


class Uint8Input(torch.nn.Module):
    """uint8 ``(B, T, H, W, 3)`` → the normalised float ``(B, 3, T, H, W)`` the network takes, then the
    network: the arithmetic of :class:`~pipeline.data.transforms.DeviceNormalize`."""

    def __init__(self, model: torch.nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1, 1))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        x = clip.permute(0, 4, 1, 2, 3).to(torch.float32) / 255.0
        return self.model((x - self.mean) / self.std)


def run_export(checkpoint: Path, fmt: str, out: Path, *, uint8_input: bool = False) -> Path:
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    model, ckpt = load_classifier(checkpoint)
    mean, std = ckpt.normalization
    net = Uint8Input(model, list(mean), list(std)) if uint8_input else model
    net.eval()
    x = example_input(ckpt, uint8=uint8_input)
    meta = metadata(ckpt, uint8_input=uint8_input)
    with replaced_on_success(out) as tmp, torch.inference_mode(False), torch.no_grad():
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(net, x), str(tmp), _extra_files={TORCHSCRIPT_METADATA: json.dumps(meta)})
        else:
            _onnx(net, x, str(tmp), meta)
    write_json(metadata_path(out), meta)
    return out


def _onnx(model: torch.nn.Module, x: torch.Tensor, path: str, meta: dict[str, Any]) -> None:
    try:
        import onnx

        # The TorchScript-based exporter: no onnxscript dependency, dynamic batch axis.
        torch.onnx.export(model, (x,), path, dynamo=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=17,
                          external_data=False)
    except ImportError as e:
        raise UserError(f"ONNX export needs the onnx package ({e}); pip install onnx") from None
    graph = onnx.load(path)
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(graph, path)
