"""Benchmark: ``vtl sample`` throughput with 1 vs 2 workers, and peak memory vs dataset size.

Two targets (issue 3):

(a) ``vtl sample --workers 2`` has >= 1.6x the throughput of ``--workers 1`` (on 2 cores);
(b) peak memory of ``vtl sample`` does not grow with the dataset: 10x more videos raise the peak
    RSS by < 20%.

Generates ``--videos`` synthetic target-domain videos (``pipeline.data.synthetic``, libx264
.mp4, ``--size`` px, ``--frames`` frames, so decoding dominates) and a set ``--scale`` times
larger made of hard links to them under other names (every video is decoded again: the links
only save generating them). Runs ``vtl prepare`` once per set, then ``vtl sample`` as a real
subprocess into a fresh workspace copy (so a fresh clip cache) for every measurement,
interleaving the settings ``--repeats`` times so they share the machine's noise:

    small set, --workers 1 and 2;  large set, --workers 1 and 2

and reports per setting the median wall time, videos/s, and peak RSS of the whole process tree
(the ``vtl`` process plus its decode workers, summed, polled every 50 ms from /proc), beside the
largest single process's ``ru_maxrss``. Also times a no-op ``vtl sample`` (everything cached) to
show the fixed start-up cost and videos/s without it. Prints the two ratios. Not a test; run it
on a quiet machine:

    .venv/bin/python scripts/bench_sample.py                          # 60 videos, x10, 128 px, 64 frames
    .venv/bin/python scripts/bench_sample.py --videos 20 --scale 3 --repeats 1 --size 64 --frames 32  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Runs the command given as arguments, then prints the largest ru_maxrss (KiB) among the processes
# it waited for: the command and, through it, its workers.
WRAPPER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=60, help="Videos in the small set (multiple of 5 classes).")
    p.add_argument("--scale", type=int, default=10, help="The large set has this many times more videos.")
    p.add_argument("--size", type=int, default=128, help="Frame size of the synthetic videos (square).")
    p.add_argument("--frames", type=int, default=64, help="Frames per synthetic video.")
    p.add_argument("--clip-frames", type=int, default=16, help="vtl sample --frames.")
    p.add_argument("--short-side", type=int, default=112, help="vtl sample --short-side.")
    p.add_argument("--repeats", type=int, default=3, help="Measurements per setting (median reported).")
    p.add_argument("--out", type=Path, default=None,
                   help="Working folder (default: a temp folder, deleted). Generated videos are reused.")
    return p.parse_args()


# ----------------------------------------------------------------------------- data


def _make_class(job: tuple[str, int, int, int, int]) -> None:
    from pipeline.data.synthetic import TARGET_CLASSES, make_target_dataset

    root, index, per_class, size, frames = job
    make_target_dataset(Path(root), per_class, seed=100 + index, size=size, frames=frames,
                        classes=[TARGET_CLASSES[index]])


def make_sets(base: Path, videos: int, scale: int, size: int, frames: int) -> tuple[Path, Path]:
    from pipeline.data.synthetic import TARGET_CLASSES

    small, large = base / f"small-{videos}-{size}px-{frames}f", base / f"large-{videos}x{scale}-{size}px-{frames}f"
    classes = len(TARGET_CLASSES)
    if not small.is_dir():
        tmp = small.with_name(small.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        jobs = [(str(tmp), i, max(1, videos // classes), size, frames) for i in range(classes)]
        with get_context("spawn").Pool(min(classes, os.cpu_count() or 1)) as pool:
            pool.map(_make_class, jobs)
        tmp.rename(small)
    if not large.is_dir():
        tmp = large.with_name(large.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for video in sorted(small.rglob("*.mp4")):
            for k in range(scale):
                dest = tmp / video.parent.name / f"{video.stem}_copy{k:02d}.mp4"
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(video, dest)
                except OSError:
                    shutil.copy2(video, dest)
        tmp.rename(large)
    return small, large


def vtl(*args: object) -> list[str]:
    return [sys.executable, "-m", "pipeline", "-q", *map(str, args)]


def prepare(root: Path, ws: Path) -> int:
    if not (ws / "manifest.csv").is_file():
        subprocess.run(vtl("prepare", ws, "--root", root, "--workers", "2"), check=True, cwd=REPO)
    return sum(1 for _ in open(ws / "manifest.csv")) - 1


# ----------------------------------------------------------------------------- measuring


def tree_rss_kib(root_pid: int) -> int:
    """Summed VmRSS (KiB) of ``root_pid``'s descendants (not the wrapper itself), from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue  # exited meanwhile
        pid = int(entry.name)
        children.setdefault(int(fields["PPid"]), []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, stack = 0, list(children.get(root_pid, []))
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(cmd: list[str]) -> dict[str, float]:
    """Wall time, peak summed RSS of the process tree (polled) and the largest ru_maxrss, in MiB."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *cmd], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_kib(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    maxrss = int(err.strip().splitlines()[-1])
    return {"wall": wall, "tree_mib": peak / 1024, "maxrss_mib": maxrss / 1024}


def fresh_copy(prepared: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in ("manifest.csv", "classes.txt", "quarantine.csv", "workspace.json"):
        shutil.copy2(prepared / name, dest / name)
    return dest


def main() -> None:
    args = parse_args()
    base = args.out or Path(tempfile.mkdtemp(prefix="bench_sample."))
    base.mkdir(parents=True, exist_ok=True)
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"working in {base}", flush=True)
    t = time.perf_counter()
    small, large = make_sets(base / "data", args.videos, args.scale, args.size, args.frames)
    sets = {"small": prepare(small, base / "ws-small"), "large": prepare(large, base / "ws-large")}
    print(f"data ready in {time.perf_counter() - t:.0f} s: {sets['small']} and {sets['large']} videos, "
          f"{args.size}x{args.size} px, {args.frames} frames", flush=True)
    sample = ("--frames", args.clip_frames, "--short-side", args.short_side)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for r in range(args.repeats):
        for name in sets:
            for workers in (1, 2):
                ws = fresh_copy(base / f"ws-{name}", base / "run")
                m = measure(vtl("sample", ws, *sample, "--workers", workers))
                results.setdefault((name, workers), []).append(m)
                print(f"  [{r + 1}/{args.repeats}] {name:5s} workers {workers}: {m['wall']:6.2f} s, "
                      f"tree {m['tree_mib']:6.0f} MiB, largest process {m['maxrss_mib']:5.0f} MiB", flush=True)
    noop = measure(vtl("sample", base / "run", *sample, "--workers", 2))["wall"]  # all cached: start-up only
    shutil.rmtree(base / "run", ignore_errors=True)

    print(f"\nstart-up (no-op sample, all cached): {noop:.2f} s\n")
    print(f"{'set':6s}{'videos':>7s}{'workers':>8s}{'wall s':>8s}{'videos/s':>10s}{'excl. start-up':>16s}"
          f"{'tree MiB':>10s}{'largest MiB':>13s}")
    summary = {}
    for (name, workers), ms in results.items():
        wall = statistics.median(m["wall"] for m in ms)
        tree = statistics.median(m["tree_mib"] for m in ms)
        largest = statistics.median(m["maxrss_mib"] for m in ms)
        rate, steady = sets[name] / wall, sets[name] / max(wall - noop, 1e-9)
        summary[name, workers] = {"rate": rate, "steady": steady, "tree": tree}
        print(f"{name:6s}{sets[name]:7d}{workers:8d}{wall:8.2f}{rate:10.1f}{steady:16.1f}{tree:10.0f}{largest:13.0f}")

    speedup = summary["large", 2]["rate"] / summary["large", 1]["rate"]
    steady = summary["large", 2]["steady"] / summary["large", 1]["steady"]
    print(f"\n(a) throughput --workers 2 / --workers 1 ({sets['large']} videos): {speedup:.2f}x end to end, "
          f"{steady:.2f}x excluding start-up (target >= 1.6x)")
    for workers in (1, 2):
        growth = summary["large", workers]["tree"] / summary["small", workers]["tree"] - 1
        print(f"(b) peak RSS of the process tree, {sets['large']} vs {sets['small']} videos, --workers {workers}: "
              f"{growth:+.1%} (target < +20%)")
    print(json.dumps({f"{k[0]}-w{k[1]}": v for k, v in summary.items()} | {"startup_s": noop}))
    if args.out is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
