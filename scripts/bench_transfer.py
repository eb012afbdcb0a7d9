"""Benchmark: what caching features buys a frozen-backbone (``linear``) run, and how fast
feature extraction is.

Measures, in one run and on the same data (synthetic clips from ``pipeline.data.synthetic``,
written to a real clip cache and read through the same datasets/loaders ``vtl train`` uses):

(a) one ``linear`` training epoch on cached features (what ``vtl train --strategy linear`` does
    after its one-time extraction),
(b) one epoch that runs the frozen backbone over the clips and trains the same head,

and prints the ratio (b)/(a), plus frames/s of feature extraction under ``torch.inference_mode()``
for efficientnet_lite0 and r2plus1d_18, with and without channels_last. Not a test: it prints a
markdown table for docs/performance.md.

    .venv/bin/python scripts/bench_transfer.py            # defaults: 64 clips, 8 frames, 112 px
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipeline.data.cache import ClipCache
from pipeline.data.datasets import ClipDataset, FeatureDataset
from pipeline.data.synthetic import TARGET_CLASSES, make_clip
from pipeline.data.transforms import build_transform
from pipeline.engine.loop import extract_features, train_one_epoch
from pipeline.models.classifier import build_model
from pipeline.progress import set_quiet
from pipeline.transfer.strategies import Strategy


def write_clips(root: Path, n: int, frames: int, size: int, seed: int) -> tuple[ClipCache, list[str], list[int]]:
    cache = ClipCache(root)
    cache.init({"bench": True, "frames": frames, "size": size})
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for i in range(n):
        label = i % len(TARGET_CLASSES)
        cls = TARGET_CLASSES[label]
        clip = make_clip(cls.motion, cls.shape, "target", rng, size=size, frames=frames)
        cache.write(f"v{i:03d}", clip[None])  # (views=1, T, H, W, C)
        ids.append(f"v{i:03d}")
        labels.append(label)
    return cache, ids, labels


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cached_vs_frozen(args: argparse.Namespace, cache: ClipCache, ids: list[str], labels: list[int]) -> dict:
    dev = torch.device("cpu")
    torch.manual_seed(0)
    model, spec = build_model("efficientnet_lite0", len(TARGET_CLASSES), weights="imagenet1k")
    strategy = Strategy("linear")
    transform = build_transform(args.size, spec.mean, spec.std, train=False)
    clips = ClipDataset(cache, ids, labels, transform, train=True)
    criterion = nn.CrossEntropyLoss()

    # One-time extraction (what `vtl train --strategy linear` does once per backbone@weights@sampling).
    t0 = time.perf_counter()
    feats = extract_features(model.backbone, DataLoader(clips, batch_size=args.batch_size), dev, desc="extract")
    extraction = time.perf_counter() - t0
    offsets = np.arange(len(ids) + 1)

    # (a) a linear epoch on cached features (train.py: batch max(batch_size, 32)).
    groups = [g for g in strategy.param_groups(model, 1e-3) if g["name"] == "head"]
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)
    feature_loader = DataLoader(FeatureDataset(feats, offsets, labels, train=True),
                                batch_size=max(args.batch_size, 32), shuffle=True)

    def feature_epoch() -> None:
        model.head.train()
        train_one_epoch(model.head, feature_loader, opt, None, criterion, dev, desc="cached")

    feature_epoch()  # warm-up
    a = timed(feature_epoch, args.repeats_cached)

    # (b) the same epoch through the frozen backbone (eval-mode BatchNorm, no backbone gradients).
    clip_loader = DataLoader(clips, batch_size=args.batch_size, shuffle=True)

    def frozen_epoch() -> None:
        strategy.set_train_mode(model)
        train_one_epoch(model, clip_loader, opt, None, criterion, dev, desc="frozen")

    b = timed(frozen_epoch, args.repeats_frozen)
    return {"cached_epoch_s": a, "frozen_epoch_s": b, "ratio": b / a, "extraction_s": extraction}


def extraction_fps(name: str, frames: int, size: int, batch: int, channels_last: bool, iters: int) -> float:
    torch.manual_seed(0)
    model, spec = build_model(name, 2)
    backbone = model.backbone.eval()
    clip = torch.randn(batch, 3, frames, size, size)
    if channels_last:
        if spec.kind == "frame":  # frames are folded into the batch: 2D convs, NHWC
            backbone = backbone.to(memory_format=torch.channels_last)
        else:
            backbone = backbone.to(memory_format=torch.channels_last_3d)
            clip = clip.contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        backbone(clip)  # warm-up
        seconds = timed(lambda: backbone(clip), iters)
    return batch * frames / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=112, help="crop fed to the network")
    p.add_argument("--batch-size", type=int, default=8, help="clip batch (vtl train's default)")
    p.add_argument("--repeats-cached", type=int, default=20)
    p.add_argument("--repeats-frozen", type=int, default=1)
    p.add_argument("--fps-iters", type=int, default=2)
    p.add_argument("--r2plus1d-frames", type=int, default=16, help="r2plus1d_18's declared clip length")
    args = p.parse_args()
    set_quiet(True)

    with tempfile.TemporaryDirectory() as tmp:
        cache, ids, labels = write_clips(Path(tmp) / "clips", args.clips, args.frames, 128, seed=0)
        r = cached_vs_frozen(args, cache, ids, labels)

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print()
    print(f"### efficientnet_lite0, {args.clips} clips x {args.frames} frames at {args.size} px, "
          f"batch {args.batch_size}")
    print()
    print("| | seconds |")
    print("|---|---:|")
    print(f"| (a) `linear` epoch on cached features | {r['cached_epoch_s']:.4f} |")
    print(f"| (b) epoch through the frozen backbone | {r['frozen_epoch_s']:.2f} |")
    print(f"| ratio (b) / (a) | **{r['ratio']:.0f}x** |")
    print(f"| one-time feature extraction (all clips) | {r['extraction_s']:.2f} |")
    print()
    print("### Feature extraction under torch.inference_mode(), frames/s")
    print()
    print("| backbone | clip | batch | contiguous | channels_last |")
    print("|---|---|---:|---:|---:|")
    for name, frames in (("efficientnet_lite0", args.frames), ("r2plus1d_18", args.r2plus1d_frames)):
        fps = [extraction_fps(name, frames, args.size, args.batch_size, cl, args.fps_iters) for cl in (False, True)]
        print(f"| {name} | {frames}x{args.size}x{args.size} | {args.batch_size} | {fps[0]:.0f} | {fps[1]:.0f} |")


if __name__ == "__main__":
    main()
