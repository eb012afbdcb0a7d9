"""What a source costs to use: parameters, GFLOPs per clip, inference latency and throughput.

Measured on the model the cells train (backbone + the target's head, at the run's input size and
clip length), with random weights: the cost does not depend on them. GFLOPs come from
``torch.utils.flop_counter`` (a multiply-add counts as 2 FLOPs) on one clip; latency is the median
of a few batch-1 forward passes, throughput the clips/s of batch-16 passes, both in eval mode
without gradients on the device given. Results are kept in ``benchmark/cost.json`` by setting, so a
re-run measures only what is new.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.files import write_json

LATENCY_RUNS = 5
THROUGHPUT_BATCH = 16
THROUGHPUT_RUNS = 2
COST_COLUMNS = ("params", "gflops", "latency_ms", "throughput")


@dataclass(frozen=True)
class CostSetting:
    """What the cost depends on."""

    backbone: str
    input_size: int
    frames: int
    temporal: str
    num_classes: int
    device: str

    @property
    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def measure_cost(setting: CostSetting) -> dict[str, float]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.models.classifier import build_model

    model, _ = build_model(setting.backbone, setting.num_classes, temporal=setting.temporal)
    device = torch.device(setting.device)
    model = model.to(device).eval()
    clip = torch.randn(1, 3, setting.frames, setting.input_size, setting.input_size, device=device)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model(clip)
        latency = _median_seconds(model, clip, LATENCY_RUNS, device)
        batch = clip.expand(THROUGHPUT_BATCH, -1, -1, -1, -1).contiguous()
        per_batch = _median_seconds(model, batch, THROUGHPUT_RUNS, device)
    return {"params": int(sum(p.numel() for p in model.parameters())),
            "gflops": round(counter.get_total_flops() / 1e9, 4),
            "latency_ms": round(latency * 1000, 2), "throughput": round(THROUGHPUT_BATCH / per_batch, 2)}


def _median_seconds(model: Any, x: Any, runs: int, device: Any) -> float:
    import torch

    model(x)  # warm-up: allocation, cuDNN autotuning
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def costs(settings: dict[str, CostSetting], cache_file: Path) -> dict[str, dict[str, float]]:
    """``{name: cost}`` for every named setting, measuring only those not in ``cache_file``."""
    cached: dict[str, dict[str, float]] = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    out = {}
    for name, setting in settings.items():
        if setting.key not in cached:
            cached[setting.key] = measure_cost(setting)
            write_json(cache_file, cached)
        out[name] = cached[setting.key]
    return out
