"""Benchmark: training throughput (clips/s) on this machine with and without ``--channels-last``.

For each backbone, builds the model ``vtl train`` builds (backbone + head, ``Speed.prepare``
applied exactly as ``--channels-last`` does), then times full training steps (forward,
cross-entropy, backward, AdamW step) on random clips of the backbone's shape. The two
memory formats are measured interleaved (A, B, A, B, ...) so machine noise hits both alike;
the median step time gives clips/s. Not a test: prints a markdown table for docs/performance.md.

    .venv/bin/python scripts/bench_train.py                 # r3d_18, x3d_xs, efficientnet_lite0
    .venv/bin/python scripts/bench_train.py --backbones r2plus1d_18 --size 112 --frames 8
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch import nn

from pipeline.engine.speed import Speed
from pipeline.models.classifier import build_model
from pipeline.models.registry import get_spec


def step_time(model: nn.Module, speed: Speed, clips: torch.Tensor, labels: torch.Tensor,
              optimizer: torch.optim.Optimizer) -> float:
    x = clips.contiguous(memory_format=speed.memory_format) if speed.memory_format else clips
    start = time.perf_counter()
    loss = nn.functional.cross_entropy(model(x), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def measure(backbone: str, batch: int, frames: int | None, size: int | None, repeats: int) -> dict:
    spec = get_spec(backbone)
    frames = frames or spec.clip_len
    size = size or spec.input_size
    video = spec.kind == "video"
    clips = torch.randn(batch, 3, frames, size, size)
    labels = torch.randint(0, 10, (batch,))
    runs = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        model, _ = build_model(backbone, 10, weights="none")
        speed = Speed(channels_last=channels_last, video=video)
        speed.prepare(model)
        model.train()
        runs[channels_last] = (model, speed, torch.optim.AdamW(model.parameters(), lr=1e-4), [])
    for _ in range(2):  # warm-up: oneDNN picks and caches its kernels
        for model, speed, opt, _times in runs.values():
            step_time(model, speed, clips, labels, opt)
    for _ in range(repeats):
        for model, speed, opt, times in runs.values():
            times.append(step_time(model, speed, clips, labels, opt))
    default, last = (batch / statistics.median(runs[k][3]) for k in (False, True))
    return {"backbone": backbone, "shape": f"{batch}×3×{frames}×{size}×{size}", "default": default,
            "channels_last": last, "ratio": last / default}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="r3d_18,x3d_xs,efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.repeats} training steps, formats interleaved")
    print("| backbone | batch | clips/s (default) | clips/s (--channels-last) | ratio |")
    print("|---|---|---|---|---|")
    for name in args.backbones.split(","):
        r = measure(name.strip(), args.batch, args.frames, args.size, args.repeats)
        print(f"| {r['backbone']} | {r['shape']} | {r['default']:.2f} | {r['channels_last']:.2f} | "
              f"{r['ratio']:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
