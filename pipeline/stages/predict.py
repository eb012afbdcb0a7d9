"""``vtl predict``: classify files with a trained checkpoint, sampling them as evaluation does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data import decoders
from pipeline.data.formats.base import IMAGE_EXTENSIONS
from pipeline.data.sampling import SamplingConfig
from pipeline.data.transforms import build_transform
from pipeline.errors import UserError
from pipeline.models.registry import get_spec
from pipeline.stages.evaluate import load_classifier
from pipeline.stages.sample import image_clip, video_clips


def load_views(path: Path, sampling: SamplingConfig) -> np.ndarray:
    """uint8 (views, T, H, W, 3) for one file, as `vtl sample` would cache it for evaluation."""
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        try:
            clip = image_clip(path, sampling.short_side)
        except Exception:
            raise UserError(f"{path} is not a readable image") from None
        return np.repeat(clip, sampling.frames, axis=1) if sampling.frames > 1 else clip
    try:
        info, backend = decoders.probe(path)
    except decoders.DecodeError:
        raise UserError(f"{path} is not a readable video or image") from None
    row = {"id": path.name, "path": str(path), "num_frames": info.num_frames, "width": info.width,
           "height": info.height, "decoder": backend}
    try:
        return video_clips(row, sampling, train=False)
    except decoders.DecodeError as e:
        raise UserError(f"cannot decode {path}: {e}") from None


@torch.inference_mode()
def run_predict(checkpoint: Path, inputs: list[Path], topk: int = 5) -> list[dict[str, Any]]:
    model, ckpt = load_classifier(checkpoint)
    model.eval()
    cfg = ckpt["config"]
    classes = ckpt["classes"]
    sampling = SamplingConfig(**cfg["sampling_params"])
    spec = get_spec(ckpt["backbone"])
    transform = build_transform(cfg["input_size"], spec.mean, spec.std, train=False)
    results = []
    for path in inputs:
        views = load_views(path, sampling)
        batch = torch.stack([transform(v) for v in views])
        probs = torch.softmax(model(batch), dim=1).mean(0)
        top = torch.topk(probs, min(topk, len(classes)))
        results.append({"input": str(path), "top": [{"class": classes[int(i)], "probability": round(float(p), 6)}
                                                    for p, i in zip(top.values, top.indices, strict=True)]})
    return results
