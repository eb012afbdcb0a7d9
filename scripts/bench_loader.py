"""Benchmark: loader headroom, clips/s per DataLoader worker count, float32 vs uint8 batches.

Reads a real clip cache (by default one written here with ``ClipCache`` at the UCF101 shape
``vtl sample --frames 16 --short-side 128`` leaves: 16 × 128 × 170, synthetic clips from
``pipeline.data.synthetic``; or ``--cache DIR``, e.g. a workspace's ``clips/<key>``) through
``ClipDataset`` and the train augmentation exactly as ``vtl train`` builds it
(``build_transform(size, mean, std, train=True)``), in batches as ``vtl train`` loads them
(shuffled, ``pin_memory`` where CUDA is available). Two paths, measured side by side:

- float32: today's path, clips normalised on the host (``ToDtype`` + ``Normalize`` in the worker);
- uint8: ``build_transform(..., normalize=False)``; the batch crosses to the GPU as uint8 (a quarter
  of the bytes) and ``DeviceNormalize`` finishes it there.

For each worker count (0, 1, 2, 4, … up to the cores) and each path, the steady-state rate of
batches arriving in the training process (after the workers' start-up and first prefetch), the
two paths interleaved and the worker counts cycled ``--repeats`` times so machine noise hits all
alike; medians. With ``--to-device`` (default where CUDA is available) each batch is also copied
to the GPU and, for uint8, normalised there, and the GPU synchronised per batch: the rate at which
the loader delivers model-ready tensors. Prints a markdown table and, for an assumed GPU
consumption rate (``--gpu-rate`` clips/s; default: r2plus1d_18's training FLOPs per clip, counted
with ``FlopCounterMode``, against ``--util`` × ``--peak-tflops``), how many workers keep it fed.
Not a test.

    .venv/bin/python scripts/bench_loader.py                         # 64 clips, batch 16, workers 0..cores
    .venv/bin/python scripts/bench_loader.py --cache runs/ucf/clips/uniform-t16-s1-ss128-v1-seed0 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from pipeline.data.cache import ClipCache
from pipeline.data.datasets import ClipDataset
from pipeline.data.synthetic import TARGET_CLASSES, make_clip
from pipeline.data.transforms import DeviceNormalize, build_transform
from pipeline.models.registry import get_spec

PATHS = ("float32", "uint8")
# H200 SXM datasheet: 989 TFLOP/s dense bf16 tensor-core peak (1,979 with 2:4 sparsity).
H200_BF16_TFLOPS = 989.0


def write_cache(root: Path, clips: int, frames: int, height: int, width: int, *,
                seed: int = 0) -> tuple[ClipCache, list[str], list[int]]:
    """``clips`` synthetic videos of one view each, ``(1, frames, height, width, 3)`` uint8, in a
    real ``ClipCache`` (make_clip draws square frames: a square of the long side, cropped)."""
    cache = ClipCache(root)
    cache.init({"bench_loader": True, "frames": frames, "height": height, "width": width})
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    for i in range(clips):
        label = i % len(TARGET_CLASSES)
        cls = TARGET_CLASSES[label]
        clip = make_clip(cls.motion, cls.shape, "target", rng, size=side, frames=frames, hue=cls.hue)
        cache.write(f"v{i:04d}", np.ascontiguousarray(clip[None, :, top:top + height, left:left + width]))
        ids.append(f"v{i:04d}")
        labels.append(label)
    return cache, ids, labels


def read_cache(root: Path) -> tuple[ClipCache, list[str], list[int]]:
    """Every video of an existing clip cache (labels do not matter for speed)."""
    cache = ClipCache(root)
    ids = sorted(p.stem for p in cache.root.glob("*.npy"))
    if not ids:
        raise SystemExit(f"no clips in {root}")
    return cache, ids, [0] * len(ids)


def make_loader(cache: ClipCache, ids: list[str], labels: list[int], *, path: str, size: int, mean, std,
                batch: int, workers: int, samples: int, train: bool = True, seed: int = 0) -> DataLoader:
    """The loader ``vtl train`` builds (``_clip_loaders``), drawing ``samples`` clips with
    replacement so a small cache gives as many batches as a measurement needs."""
    transform = build_transform(size, mean, std, train=train, normalize=path == "float32")
    dataset = ClipDataset(cache, ids, labels, transform, train=True)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch, sampler=RandomSampler(dataset, True, samples, generator=generator),
                      num_workers=workers, pin_memory=torch.cuda.is_available(), drop_last=True)


def loader_rate(loader: DataLoader, *, skip: int, to_device: torch.device | None = None,
                normalize: DeviceNormalize | None = None) -> float:
    """Clips/s arriving after the first ``skip`` batches (worker start-up and first prefetch);
    with ``to_device``, copied there (and normalised) and synchronised, as a training step would."""
    seen, start = 0, None
    for i, (clips, _, _) in enumerate(loader):
        if to_device is not None:
            x = clips.to(to_device, non_blocking=True)
            if normalize is not None:
                x = normalize(x)
            if to_device.type == "cuda":
                torch.cuda.synchronize(to_device)
        if i == skip - 1:
            start = time.perf_counter()
        elif i >= skip:
            seen += len(clips)
    if start is None or not seen:
        raise ValueError("not enough batches to measure: raise --batches")
    return seen / (time.perf_counter() - start)


def default_workers() -> list[int]:
    cores = os.cpu_count() or 1
    return [w for w in (0, 1, 2, 4, 8, 12, 16, 24, 32, 48, 64) if w <= cores]


def measure(cache: ClipCache, ids: list[str], labels: list[int], *, workers: list[int], size: int, mean, std,
            batch: int, batches: int, repeats: int, to_device: torch.device | None = None,
            train: bool = True) -> list[dict]:
    """One row per worker count: median clips/s of each path over ``repeats`` interleaved rounds."""
    rates: dict[tuple[int, str], list[float]] = {(w, p): [] for w in workers for p in PATHS}
    norm = DeviceNormalize(mean, std)
    for p in PATHS:  # warm-up, untimed: first calls of the transforms, the allocator, the page cache
        for _ in make_loader(cache, ids, labels, path=p, size=size, mean=mean, std=std, batch=batch, workers=0,
                             samples=2 * batch, train=train):
            pass
    for r in range(repeats):
        for w in workers:
            skip = 2 * w + 2  # each worker prefetches 2 batches before the steady state
            for p in PATHS if r % 2 == 0 else PATHS[::-1]:  # alternate which path goes first
                loader = make_loader(cache, ids, labels, path=p, size=size, mean=mean, std=std, batch=batch,
                                     workers=w, samples=(skip + batches) * batch, train=train, seed=r)
                rates[(w, p)].append(loader_rate(loader, skip=skip, to_device=to_device,
                                                 normalize=norm if p == "uint8" else None))
    rows = []
    for w in workers:
        f, u = (statistics.median(rates[(w, p)]) for p in PATHS)
        rows.append({"workers": w, "float32": f, "uint8": u, "ratio": u / f,
                     "per_worker": {p: statistics.median(rates[(w, p)]) / max(w, 1) for p in PATHS}})
    return rows


def copy_ceiling(batch: int, frames: int, size: int, rounds: int = 5, copies: int = 10) -> dict[str, float]:
    """Clips/s one thread copies batches at into a reused buffer (the pin-memory thread's work per
    batch, minus page locking): a serial ceiling of the training process, whatever the number of
    workers. Median of ``rounds``, the two dtypes interleaved. One thread, as DataLoader's pin
    thread sets for itself (on a busy 2-core VM a 2-thread copy measured 3× slower than one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    bufs = {p: (torch.ones(batch, 3, frames, size, size, dtype=dt), torch.empty(batch, 3, frames, size, size, dtype=dt))
            for p, dt in (("float32", torch.float32), ("uint8", torch.uint8))}
    times: dict[str, list[float]] = {p: [] for p in bufs}
    for r in range(rounds + 1):
        for p, (src, dst) in bufs.items():
            t0 = time.perf_counter()
            for _ in range(copies):
                dst.copy_(src)
            if r:  # round 0 touches the pages: a warm-up
                times[p].append(time.perf_counter() - t0)
    torch.set_num_threads(threads)
    return {p: batch * copies / statistics.median(t) for p, t in times.items()}


def per_clip_costs(cache: ClipCache, ids: list[str], *, size: int, mean, std, batch: int,
                   repeats: int = 20) -> dict[str, dict[str, float]]:
    """Milliseconds per clip, one thread, of a worker's two jobs on each path: the transform
    (``build_transform(train=True)`` with and without the float conversion) and collating a batch."""
    from torch.utils.data import default_collate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    clips = [np.array(cache.read(i)[0]) for i in (ids * batch)[:batch]]
    out: dict[str, dict[str, float]] = {}
    for path in PATHS:
        transform = build_transform(size, mean, std, train=True, normalize=path == "float32")
        items = [transform(c) for c in clips]  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            items = [transform(c) for c in clips]
        tf = (time.perf_counter() - t0) / (repeats * batch)
        t0 = time.perf_counter()
        for _ in range(repeats):
            default_collate(items)
        out[path] = {"transform_ms": 1e3 * tf, "collate_ms": 1e3 * (time.perf_counter() - t0) / (repeats * batch)}
    torch.set_num_threads(threads)
    return out


def assumed_gpu_rate(backbone: str, frames: int, size: int, util: float, peak_tflops: float) -> dict:
    """Training clips/s a GPU of ``peak_tflops`` sustains at ``util`` of it, from FLOPs per clip."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_train import flops_per_clip

    flops = flops_per_clip(backbone, frames, size)
    sustained = util * peak_tflops * 1e12
    return {"backbone": backbone, "frames": frames, "size": size, "gflops_forward": flops["forward"] / 1e9,
            "gflops_train": flops["train"] / 1e9, "util": util, "peak_tflops": peak_tflops,
            "train_clips_per_s": sustained / flops["train"], "forward_clips_per_s": sustained / flops["forward"]}


def workers_needed(rows: list[dict], rate: float, path: str) -> str:
    """Fewest measured workers that reach ``rate``, else a linear projection from the best
    per-worker rate measured (an estimate: it assumes one more core per worker)."""
    for row in rows:
        if row["workers"] > 0 and row[path] >= rate:
            return str(row["workers"])
    per_worker = max(row["per_worker"][path] for row in rows if row["workers"] > 0)
    return f"≈ {math.ceil(rate / per_worker)} (projected at {per_worker:.0f} clips/s per worker)"


def markdown(rows: list[dict], *, batch: int, shape: str, to_device: bool) -> str:
    dest = "on the GPU, normalised" if to_device else ("pinned" if torch.cuda.is_available() else
                                                        "in the training process (no CUDA here: not pinned)")
    lines = [f"clips/s of batches of {batch} ({shape}) {dest}; median of interleaved rounds", "",
             "| workers | float32 clips/s | uint8 clips/s | uint8 / float32 | float32 per worker | uint8 per worker |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['float32']:.1f} | {r['uint8']:.1f} | {r['ratio']:.2f}× | "
                     f"{r['per_worker']['float32']:.1f} | {r['per_worker']['uint8']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, help="an existing clip cache folder (default: write one here)")
    p.add_argument("--clips", type=int, default=64, help="clips to write when no --cache is given")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--height", type=int, default=128, help="cached frame height (UCF101 at --short-side 128)")
    p.add_argument("--width", type=int, default=170, help="cached frame width (320×240 scaled to short side 128)")
    p.add_argument("--size", type=int, default=112, help="crop fed to the network")
    p.add_argument("--backbone", default="r2plus1d_18", help="mean/std and the FLOP count for the GPU estimate")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=12, help="batches timed per measurement (after the warm-up)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", default=None, help="comma-separated worker counts (default: 0,1,2,4,... ≤ cores)")
    p.add_argument("--to-device", default=None, help="copy each batch to this device (default: cuda if available)")
    p.add_argument("--gpu-rate", type=float, default=None, help="GPU consumption, clips/s (default: estimated)")
    p.add_argument("--util", type=float, default=0.25, help="assumed share of the peak r2plus1d_18 sustains")
    p.add_argument("--peak-tflops", type=float, default=H200_BF16_TFLOPS)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    workers = [int(w) for w in args.workers.split(",")] if args.workers else default_workers()
    spec = get_spec(args.backbone)
    device = args.to_device or ("cuda" if torch.cuda.is_available() else None)
    dev = torch.device(device) if device else None

    with tempfile.TemporaryDirectory() as tmp:
        if args.cache:
            cache, ids, labels = read_cache(args.cache)
        else:
            cache, ids, labels = write_cache(Path(tmp) / "clips", args.clips, args.frames, args.height, args.width)
        shape = "×".join(str(s) for s in cache.read(ids[0]).shape[1:])
        rows = measure(cache, ids, labels, workers=workers, size=args.size, mean=spec.mean, std=spec.std,
                       batch=args.batch, batches=args.batches, repeats=args.repeats, to_device=dev)
        costs = per_clip_costs(cache, ids, size=args.size, mean=spec.mean, std=spec.std, batch=args.batch)
    frames = int(shape.split("×")[0])
    ceiling = copy_ceiling(args.batch, frames, args.size)
    estimate = assumed_gpu_rate(args.backbone, frames, args.size, args.util, args.peak_tflops)
    gpu_rate = args.gpu_rate or estimate["train_clips_per_s"]

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print()
    print(markdown(rows, batch=args.batch, shape=f"cached {shape} → {frames}×{args.size}×{args.size}",
                   to_device=dev is not None))
    print()
    print("per clip, one thread: " + "; ".join(f"{p} transform {c['transform_ms']:.2f} ms + collate "
                                                 f"{c['collate_ms']:.2f} ms" for p, c in costs.items()))
    print(f"one-thread batch copy (the pin thread's work, minus page locking): float32 {ceiling['float32']:.0f} "
          f"clips/s, uint8 {ceiling['uint8']:.0f} clips/s")
    print()
    print(f"{args.backbone} at {frames}×{args.size}²: {estimate['gflops_forward']:.1f} GFLOPs forward, "
          f"{estimate['gflops_train']:.1f} GFLOPs forward + backward per clip (FlopCounterMode); at "
          f"{args.util:.0%} of {args.peak_tflops:.0f} TFLOP/s that is {estimate['train_clips_per_s']:.0f} "
          f"training clips/s, {estimate['forward_clips_per_s']:.0f} forward-only clips/s")
    source = "given" if args.gpu_rate else "estimated"
    for path in PATHS:
        print(f"workers to feed {gpu_rate:.4g} clips/s ({source}), {path}: {workers_needed(rows, gpu_rate, path)}")
    result = {"rows": rows, "copy_ceiling": ceiling, "per_clip_ms": costs, "estimate": estimate, "gpu_rate": gpu_rate,
              "gpu_rate_source": source, "batch": args.batch, "cached_shape": shape, "size": args.size,
              "to_device": str(dev) if dev else None, "pinned": torch.cuda.is_available(),
              "workers_needed": {path: workers_needed(rows, gpu_rate, path) for path in PATHS}}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
