"""Benchmark: vtl's sparse-frame sampler against decode-everything baselines.

On every decodable video under ``--videos`` (the ``edge_cases`` folder and files that fail to
probe are skipped), measures in one run, interleaving the methods per video so they share the
machine's noise:

(a) vtl's sampler: probe once (untimed, as ``vtl prepare`` does), then time
    ``decoders.read(path, uniform_indices(n, FRAMES, train=False), size)`` as ``vtl sample`` does
    (PyAV's indexed decode, decord fallback);
(b) naive PyAV: decode every frame, convert each to an RGB ndarray, then pick the FRAMES frames;
(c) PyAV decode of every frame without RGB conversion (the floor of any decode-everything approach).

All decoders run with one thread. Prints clips/s per method, the ratios a/b and a/c (targets:
a >= 3x b and a >= 1.0x c) and a per-container breakdown. Not a test.

    .venv/bin/python scripts/bench_decode.py                      # ../shared/data/videos, 16 frames
    .venv/bin/python scripts/bench_decode.py --short-side 128 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import av  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.data import decoders  # noqa: E402
from pipeline.data.sampling import uniform_indices  # noqa: E402

VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}
METHODS = ("a", "b", "c")
NAMES = {"a": "(a) vtl sampler (decoders.read)", "b": "(b) PyAV decode all + rgb24", "c": "(c) PyAV decode all, no RGB"}


def find_videos(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS and "edge_cases" not in p.relative_to(root).parts
    )


def decode_all(path: Path, indices: list[int], size: tuple[int, int] | None, rgb: bool):
    container = av.open(str(path))
    try:
        stream = container.streams.video[0]
        stream.thread_count = 1
        if rgb:
            kw = {"height": size[0], "width": size[1]} if size else {}
            frames = [f.to_ndarray(format="rgb24", **kw) for f in container.decode(stream)]
            return np.stack([frames[min(i, len(frames) - 1)] for i in indices])
        n = 0
        for _ in container.decode(stream):
            n += 1
        return n
    finally:
        container.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--videos",
        type=Path,
        default=REPO / ".." / "shared" / "data" / "videos",
        help="folder of videos (default: ../shared/data/videos from the repo root)",
    )
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--short-side", type=int, default=None, help="resize so the short side is this (default: none)")
    args = ap.parse_args()
    root = args.videos.resolve()

    jobs = []  # (path, container ext, indices, size, backend)
    skipped = []
    for path in find_videos(root):
        try:
            info, backend = decoders.probe(path)
            indices = uniform_indices(info.num_frames, args.frames, train=False)
            size = decoders.resized_size(info.height, info.width, args.short_side)
            decoders.read(path, indices, size)  # warm-up: page cache + checks it decodes
            decode_all(path, indices, size, rgb=False)
        except Exception as e:  # noqa: BLE001 - anything undecodable is skipped, as prepare would quarantine it
            skipped.append(f"{path.relative_to(root)}: {str(e)[:80]}")
            continue
        jobs.append((path, path.suffix.lower().lstrip("."), indices, size, backend, info.num_frames))
    if not jobs:
        sys.exit(f"no decodable videos under {root}")

    runs = {
        "a": lambda p, idx, size, backend: decoders.read(p, idx, size),
        "b": lambda p, idx, size, backend: decode_all(p, idx, size, rgb=True),
        "c": lambda p, idx, size, backend: decode_all(p, idx, size, rgb=False),
    }
    total = defaultdict(float)
    by_ext = defaultdict(lambda: defaultdict(float))
    count_ext = defaultdict(int)
    for r in range(args.repeats):
        for k, (path, ext, idx, size, backend, _) in enumerate(jobs):
            order = METHODS[(r + k) % 3 :] + METHODS[: (r + k) % 3]  # rotate who goes first
            for m in order:
                t0 = time.perf_counter()
                runs[m](path, idx, size, backend)
                dt = time.perf_counter() - t0
                total[m] += dt
                by_ext[ext][m] += dt
            count_ext[ext] += 1

    n = len(jobs) * args.repeats
    rate = {m: n / total[m] for m in METHODS}
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    frames = sum(j[5] for j in jobs)
    print(
        f"videos: {len(jobs)} under {root} ({frames} frames in all; skipped {len(skipped)}), "
        f"{args.frames} frames/clip, short side {args.short_side or 'native'}, {args.repeats} repeats"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.2f} at the end, "
        f"PyAV {av.__version__}, decoder threads 1"
    )
    print()
    print("| method | clips/s | ms/clip |")
    print("|---|---:|---:|")
    for m in METHODS:
        print(f"| {NAMES[m]} | {rate[m]:.1f} | {1000 / rate[m]:.1f} |")
    print(f"| ratio a/b | **{rate['a'] / rate['b']:.2f}×** (target ≥ 3×) | |")
    print(f"| ratio a/c | **{rate['a'] / rate['c']:.2f}×** (target ≥ 1.0×) | |")
    print()
    print("| container | videos | probed by | (a) clips/s | (b) clips/s | (c) clips/s | a/b | a/c |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for ext in sorted(by_ext):
        c = count_ext[ext]
        r_ = {m: c / by_ext[ext][m] for m in METHODS}
        backends = ",".join(sorted({j[4] for j in jobs if j[1] == ext}))
        print(
            f"| {ext} | {c // args.repeats} | {backends} | {r_['a']:.1f} | {r_['b']:.1f} | {r_['c']:.1f} "
            f"| {r_['a'] / r_['b']:.2f}× | {r_['a'] / r_['c']:.2f}× |"
        )
    if skipped:
        print()
        print("skipped: " + "; ".join(skipped))


if __name__ == "__main__":
    main()
