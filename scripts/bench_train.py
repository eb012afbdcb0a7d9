"""Benchmark: training throughput (clips/s) on this machine with and without ``--channels-last``.

For each backbone, builds the model ``vtl train`` builds (backbone + head, ``Speed.prepare``
applied exactly as ``--channels-last`` does), then times full training steps through the
engine's own ``train_one_epoch`` (forward under the run's autocast, cross-entropy, backward,
AdamW step, the per-step ``.item()`` that also synchronises a GPU) on random clips of the
backbone's shape. The variants are measured interleaved (A, B, A, B, ...) so machine noise hits
both alike; the median step time gives clips/s. Not a test: prints a markdown table for
docs/performance.md. ``scripts/gpu_check.py`` reuses :func:`compare` for bf16 vs fp32 and
:func:`flops_per_clip` for the GPU consumption estimate.

    .venv/bin/python scripts/bench_train.py                 # r3d_18, x3d_xs, efficientnet_lite0
    .venv/bin/python scripts/bench_train.py --backbones r2plus1d_18 --size 112 --frames 8
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

import torch
from torch import nn

from pipeline.engine.loop import train_one_epoch
from pipeline.engine.speed import Speed
from pipeline.models.classifier import build_model
from pipeline.models.registry import get_spec
from pipeline.progress import set_quiet


def step_time(model: nn.Module, speed: Speed, clips: torch.Tensor, labels: torch.Tensor,
              optimizer: torch.optim.Optimizer) -> float:
    """Seconds of one training step of ``vtl train``'s loop (a one-batch epoch)."""
    sums = train_one_epoch(model, [(clips, labels, labels)], optimizer, None, nn.CrossEntropyLoss(),
                           clips.device, desc="bench", amp=speed.amp, memory_format=speed.memory_format)
    return sums["seconds"]


def clip_shape(backbone: str, frames: int | None, size: int | None) -> tuple[int, int]:
    spec = get_spec(backbone)
    return frames or spec.clip_len, size or spec.input_size


def compare(backbone: str, speeds: dict[str, Speed], *, batch: int, frames: int | None = None,
            size: int | None = None, repeats: int = 5, warmup: int = 2,
            device: torch.device | str = "cpu", cudnn_benchmark: dict[str, bool] | None = None) -> dict:
    """Training clips/s of ``backbone`` under each of ``speeds``, steps interleaved, median of
    ``repeats`` after ``warmup`` (oneDNN/cuDNN pick and cache their kernels in the first steps).
    ``cudnn_benchmark`` turns cuDNN's autotuner on for the variants it names (vtl train leaves
    it off, torch's default), set before each of their steps."""
    device = torch.device(device)
    benchmark = torch.backends.cudnn.benchmark
    frames, size = clip_shape(backbone, frames, size)
    clips = torch.randn(batch, 3, frames, size, size, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    set_quiet(True)
    runs = {}
    for label, speed in speeds.items():
        torch.manual_seed(0)
        model, _ = build_model(backbone, 10, weights="none")
        speed.prepare(model)
        model.to(device).train()
        runs[label] = (model, speed, torch.optim.AdamW(model.parameters(), lr=1e-4), [])
    for i in range(warmup + repeats):
        for label, (model, speed, opt, times) in runs.items():
            torch.backends.cudnn.benchmark = (cudnn_benchmark or {}).get(label, benchmark)
            t = step_time(model, speed, clips, labels, opt)
            if i >= warmup:
                times.append(t)
    torch.backends.cudnn.benchmark = benchmark
    rates = {label: batch / statistics.median(r[3]) for label, r in runs.items()}
    return {"backbone": backbone, "shape": f"{batch}×3×{frames}×{size}×{size}", "clips_per_s": rates}


def flops_per_clip(backbone: str, frames: int | None = None, size: int | None = None) -> dict[str, float]:
    """FLOPs of one clip through ``backbone`` + head, forward and forward + backward, counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls; BatchNorm and
    activations are not counted) on the meta device: shapes only, no arithmetic, instant."""
    from torch.utils.flop_counter import FlopCounterMode

    frames, size = clip_shape(backbone, frames, size)
    model, _ = build_model(backbone, 101, weights="none")
    model.to("meta").train()
    x = torch.empty(1, 3, frames, size, size, device="meta")
    with FlopCounterMode(display=False) as forward:
        model(x)
    with FlopCounterMode(display=False) as train:
        model(x).sum().backward()
    return {"forward": float(forward.get_total_flops()), "train": float(train.get_total_flops())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="r3d_18,x3d_xs,efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.device}; median of {args.repeats} training steps, "
          "formats interleaved")
    print("| backbone | batch | clips/s (default) | clips/s (--channels-last) | ratio |")
    print("|---|---|---|---|---|")
    for name in args.backbones.split(","):
        video = get_spec(name.strip()).kind == "video"
        speeds = {"default": Speed(video=video), "channels_last": Speed(channels_last=True, video=video)}
        r = compare(name.strip(), speeds, batch=args.batch, frames=args.frames, size=args.size,
                    repeats=args.repeats, device=args.device)
        default, last = r["clips_per_s"]["default"], r["clips_per_s"]["channels_last"]
        print(f"| {r['backbone']} | {r['shape']} | {default:.2f} | {last:.2f} | {last / default:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
