"""``vtl predict``: classify files with a trained checkpoint, sampling them as evaluation does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.data.clips import load_views
from pipeline.data.sampling import SamplingConfig
from pipeline.data.transforms import build_transform
from pipeline.engine import distributed
from pipeline.models.classifier import load_classifier


@torch.inference_mode()
def run_predict(checkpoint: Path, inputs: list[Path], topk: int = 5, device: str | None = None,
                ) -> list[dict[str, Any]]:
    dev = distributed.device(distributed.DistInfo(requested=device))
    model, ckpt = load_classifier(checkpoint)
    model.eval().to(dev)
    classes = ckpt.classes
    sampling = SamplingConfig(**ckpt.config["sampling_params"])
    transform = build_transform(ckpt.config["input_size"], *ckpt.normalization, train=False)
    results = []
    for path in inputs:
        views = load_views(path, sampling)
        batch = torch.stack([transform(v) for v in views]).to(dev)
        probs = torch.softmax(model(batch), dim=1).mean(0).cpu()
        top = torch.topk(probs, min(topk, len(classes)))
        results.append({"input": str(path), "top": [{"class": classes[int(i)], "probability": round(float(p), 6)}
                                                    for p, i in zip(top.values, top.indices, strict=True)]})
    return results
