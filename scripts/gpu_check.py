"""The steps of ``scripts/gpu_check.sh``, one subcommand each; every step writes ``STEP.json`` into
``--work`` and prints its figures, and ``summary`` gathers them into summary.md/summary.json.

Run through gpu_check.sh, which runs them in order, each in its own process under a time limit
(a crash or hang in one step does not lose the others' figures):

    scripts/gpu_check.sh              # on a GPU machine: r2plus1d_18 at 16×112², about 3-5 minutes
    scripts/gpu_check.sh --dry-run    # the same steps on CPU at 2×32², gloo instead of nccl

By hand (``--plan dry`` or ``gpu``):

    .venv/bin/python scripts/gpu_check.py data --plan dry --work /tmp/gc
    .venv/bin/python scripts/gpu_check.py amp --plan dry --work /tmp/gc
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_train, bench_loader beside this file


@dataclass(frozen=True)
class Plan:
    """Sizes of one check. ``gpu``: the north-star shape (r2plus1d_18, 16×112², UCF101-like cached
    frames of 128×170); ``dry``: the same steps small enough for 2 CPU cores."""

    device: str = "cuda"
    backbone: str = "r2plus1d_18"
    frames: int = 16
    size: int = 112  # crop fed to the network
    height: int = 128  # videos are written at the shape `vtl sample --short-side 128` leaves UCF101 in
    width: int = 170
    video_frames: int = 32
    classes: int = 5
    videos_per_class: int = 16
    train_batch: int = 32
    warmup: int = 3
    repeats: int = 10
    extract_batch: int = 64
    extract_batches: int = 30  # through the loader
    loader_batch: int = 16
    loader_batches: int = 12
    loader_repeats: int = 2
    loader_workers: str | None = None  # None: 0, 1, 2, 4, ... up to the cores
    ddp_batch: int = 16
    ddp_epochs: int = 1
    workers: int = 8  # DataLoader workers of the DDP run and of the loader-fed extraction and training
    fed_batches: int = 30  # training steps timed through the real loader
    amp: bool = True


PLANS = {
    "gpu": Plan(),
    "dry": Plan(device="cpu", frames=2, size=32, height=32, width=40, video_frames=8, classes=3, videos_per_class=4,
                train_batch=2, warmup=0, repeats=1, extract_batch=4, extract_batches=3, loader_batch=4,
                loader_batches=2, loader_repeats=1, loader_workers="0,1", ddp_batch=4, workers=0, fed_batches=1,
                amp=False),  # vtl train without --amp (CPU bf16 is slow or refused); the amp step still runs bf16
}


def _write(work: Path, step: str, result: dict[str, Any]) -> None:
    (work / f"{step}.json").write_text(json.dumps(result, indent=2, default=str))


def _read(work: Path, step: str) -> dict[str, Any] | None:
    path = work / f"{step}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _device(plan: Plan):
    import torch

    if plan.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device visible to torch; use --dry-run for the CPU rehearsal")
    return torch.device(plan.device)


# ----------------------------------------------------------------------------- steps


def step_env(plan: Plan, work: Path) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                            "cuda": torch.version.cuda, "cpus": os.cpu_count(), "machine": platform.machine(),
                            "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    sms=props.multi_processor_count, cudnn=torch.backends.cudnn.version(),
                    bf16=torch.cuda.is_bf16_supported(), cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    if Path("/dev/shm").is_dir():  # DataLoader workers hand batches over in shared memory
        info["shm_gib"] = round(shutil.disk_usage("/dev/shm").total / 2**30, 1)
        if info["shm_gib"] < 2:
            print(f"env: warning: /dev/shm holds only {info['shm_gib']} GiB; loader workers may fail "
                  "(a float32 batch of 16 clips at 16×112² is 38.5 MB, 2 in flight per worker)")
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout
    print(f"env: torch {info['torch']} (CUDA {info['cuda']}), {info['cpus']} CPUs, "
          f"GPU: {info.get('gpu', 'none')}, /dev/shm {info.get('shm_gib', '?')} GiB")
    return info


def _wide_videos(root: Path, plan: Plan) -> int:
    """Synthetic target-domain videos (pipeline.data.synthetic) at plan.height × plan.width."""
    import numpy as np

    from pipeline.data.synthetic import TARGET_CLASSES, make_clip, write_video

    rng = np.random.default_rng(0)
    side = max(plan.height, plan.width)
    top, left = (side - plan.height) // 2, (side - plan.width) // 2
    n = 0
    for cls in TARGET_CLASSES[:plan.classes]:
        for i in range(plan.videos_per_class):
            clip = make_clip(cls.motion, cls.shape, "target", rng, size=side, frames=plan.video_frames, hue=cls.hue)
            write_video(root / cls.name / f"{cls.name}_{i:03d}.mp4", clip[:, top:top + plan.height,
                                                                          left:left + plan.width])
            n += 1
    return n


def step_data(plan: Plan, work: Path) -> dict[str, Any]:
    """A real workspace: synthetic videos → run_prepare → run_sample (the pipeline's own code)."""
    from pipeline.data.sampling import SamplingConfig
    from pipeline.progress import set_quiet
    from pipeline.stages.prepare import PrepareConfig, run_prepare
    from pipeline.stages.sample import SampleConfig, run_sample
    from pipeline.workspace import Workspace

    set_quiet(True)
    t0 = time.perf_counter()
    videos = _wide_videos(work / "videos", plan)
    workers = max(1, min(8, (os.cpu_count() or 2) - 1))
    ws = Workspace(work / "ws")
    run_prepare(ws, PrepareConfig(format="folder", root=work / "videos", val_fraction=0.2, test_fraction=0.2,
                                  workers=workers))
    sampled = run_sample(ws, SamplingConfig(frames=plan.frames, short_side=min(plan.height, plan.width),
                                            clips_per_video=2), SampleConfig(workers=workers))
    result = {"workspace": str(ws.root), "sampling": sampled["key"], "cache": str(ws.clips_dir(sampled["key"])),
              "videos": videos, "cached": sampled["videos"], "seconds": time.perf_counter() - t0}
    print(f"data: {videos} synthetic videos of {plan.video_frames}×{plan.height}×{plan.width} prepared and sampled "
          f"({sampled['videos']} cached, {plan.frames} frames each) in {result['seconds']:.1f} s")
    return result


def step_amp(plan: Plan, work: Path) -> dict[str, Any]:
    """bf16 autocast vs fp32 training clips/s (random init, random clips resident on the device)."""
    import torch
    from bench_train import compare, flops_per_clip

    from pipeline.engine.speed import Speed

    dev = _device(plan)
    # fp32 convolutions on a GPU run in TF32 (torch's cudnn.allow_tf32 default, recorded by env).
    speeds = {"fp32": Speed(), "bf16": Speed(amp=torch.bfloat16),
              "bf16_channels_last": Speed(amp=torch.bfloat16, channels_last=True)}
    if dev.type == "cuda":  # cuDNN's autotuner (vtl train leaves it off); on a CPU it would be bf16 again
        speeds["bf16_cudnn_benchmark"] = Speed(amp=torch.bfloat16)
    r = compare(plan.backbone, speeds, batch=plan.train_batch, frames=plan.frames, size=plan.size,
                repeats=plan.repeats, warmup=plan.warmup, device=dev, cudnn_benchmark={"bf16_cudnn_benchmark": True})
    rates = r["clips_per_s"]
    chosen = Speed.choose(dev, amp=True, channels_last=False, video=True)  # what `vtl train --amp` picks here
    flops = flops_per_clip(plan.backbone, plan.frames, plan.size)
    best = max(rates, key=rates.get)
    result = {"shape": r["shape"], "clips_per_s": rates, "ratio_bf16": rates["bf16"] / rates["fp32"],
              "vs_fp32": {k: v / rates["fp32"] for k, v in rates.items()}, "best": best,
              "vtl_train_amp_dtype": str(chosen.amp), "gflops_train_per_clip": flops["train"] / 1e9,
              "achieved_tflops": {k: v * flops["train"] / 1e12 for k, v in rates.items()},
              "peak_memory_gib": (torch.cuda.max_memory_allocated(dev) / 2**30) if dev.type == "cuda" else None}
    print(f"### bf16 AMP vs fp32 training, {plan.backbone} {r['shape']} on {dev}\n")
    print("| variant | clips/s | vs fp32 | achieved TFLOP/s |\n|---|---:|---:|---:|")
    for k, v in rates.items():
        print(f"| {k} | {v:.1f} | {v / rates['fp32']:.2f}× | {result['achieved_tflops'][k]:.3g} |")
    print(f"\namp: bf16 / fp32 = {result['ratio_bf16']:.2f}× ({rates['bf16']:.1f} vs {rates['fp32']:.1f} clips/s); "
          f"`vtl train --amp` picks {chosen.amp} here")
    return result


def train_args(plan: Plan, work: Path) -> list[str]:
    """The `vtl train` command line the DDP step runs under torchrun."""
    data = _read(work, "data")
    if data is None:
        raise SystemExit("gpu_check: the data step has not run")
    args = ["train", data["workspace"], "--backbone", plan.backbone, "--strategy", "scratch",
            "--epochs", str(plan.ddp_epochs), "--batch-size", str(plan.ddp_batch), "--input-size", str(plan.size),
            "--workers", str(plan.workers), "--name", "gpu-check-ddp", "--restart"]
    return args + (["--amp"] if plan.amp else [])


def step_ddp(plan: Plan, work: Path, log: Path, rc: int, seconds: float) -> dict[str, Any]:
    """Read what the torchrun run left: exit code, the backend line, metrics.jsonl."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    backend = re.search(r"distributed: (\d+) process\(es\), backend (\w+)", text)
    finished = re.search(r"trained .*: best val top-1 ([\d.]+) after (\d+) epochs", text)
    data = _read(work, "data") or {}
    metrics = Path(data.get("workspace", "")) / "train" / "gpu-check-ddp" / "metrics.jsonl"
    history = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    result = {"rc": rc, "seconds": seconds, "backend": backend.group(2) if backend else None,
              "world_size": int(backend.group(1)) if backend else None, "finished": bool(finished) and rc == 0,
              "epochs": len(history), "clips_per_s": history[-1]["clips_per_s"] if history else None,
              "val_top1": history[-1]["val_top1"] if history else None}
    if not backend:
        result["error"] = "no 'distributed: … backend' line: the run did not join a process group"
    elif rc != 0 or not finished:
        result["error"] = f"torchrun exited {rc}; see the log"
    rate = f"{result['clips_per_s']:.1f} clips/s" if result["clips_per_s"] is not None else "no epoch"
    print(f"ddp: torchrun --nproc_per_node 1, backend {result['backend']}, "
          f"{'finished' if result['finished'] else 'FAILED'} in {seconds:.0f} s, {rate} (epoch incl. loader)")
    return result


class _timed:  # noqa: N801 - used like the function it was
    """``loader``'s batches, noting the time the ``skip``-th one arrives (after start-up); sized like
    the loader, as the training loop needs (it counts the batches of an accumulation group)."""

    def __init__(self, loader, skip: int, marks: list[float]):
        self.loader, self.skip, self.marks = loader, skip, marks

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.skip:
                self.marks.append(time.perf_counter())
            yield batch


def step_extract(plan: Plan, work: Path) -> dict[str, Any]:
    """Feature extraction (frozen backbone, inference_mode, the engine's extract_features): on
    device-resident clips (the GPU's rate), and through the real loader, float32 vs uint8."""
    import torch
    from bench_loader import make_loader, read_cache

    from pipeline.data.transforms import DeviceNormalize
    from pipeline.engine.loop import extract_features
    from pipeline.engine.speed import Speed
    from pipeline.models.classifier import build_model
    from pipeline.progress import set_quiet

    set_quiet(True)
    dev = _device(plan)
    torch.manual_seed(0)
    model, spec = build_model(plan.backbone, plan.classes, weights="none")
    backbone = model.backbone.to(dev).eval()
    x = torch.randn(plan.extract_batch, 3, plan.frames, plan.size, plan.size, device=dev)
    batch = [(x, torch.zeros(len(x)), torch.zeros(len(x)))]
    compute: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(plan.warmup + plan.repeats):
        for k in compute:
            t0 = time.perf_counter()
            extract_features(backbone, batch, dev, desc="extract",  # ends with .cpu(): synchronised
                             amp=torch.bfloat16 if k == "bf16" else None)
            if i >= plan.warmup:
                compute[k].append(time.perf_counter() - t0)
    rates = {k: len(x) / sorted(v)[len(v) // 2] for k, v in compute.items()}

    data = _read(work, "data")
    through: dict[str, float] = {}
    diff = None
    # Through the loader as `vtl train --amp` would run it: bf16 on a GPU, fp32 on a CPU.
    amp = Speed.choose(dev, amp=True, channels_last=False, video=True).amp if dev.type == "cuda" else None
    if data:
        cache, ids, labels = read_cache(Path(data["cache"]))
        diff = _normalisation_diff(cache, ids, plan, spec, dev)
        workers = max(0, min(plan.workers, (os.cpu_count() or 2) - 1))
        skip = 2 * workers + 2
        norm = DeviceNormalize(spec.mean, spec.std)
        for path in ("float32", "uint8"):
            loader = make_loader(cache, ids, labels, path=path, size=plan.size, mean=spec.mean, std=spec.std,
                                 batch=plan.extract_batch, workers=workers, train=False,
                                 samples=(skip + plan.extract_batches) * plan.extract_batch)
            marks: list[float] = []
            extract_features(backbone, _timed(loader, skip, marks), dev, desc="extract", amp=amp,
                             normalize=norm if path == "uint8" else None)
            through[path] = plan.extract_batches * plan.extract_batch / (time.perf_counter() - marks[0])
    result = {"batch": plan.extract_batch, "compute_clips_per_s": rates, "ratio_bf16": rates["bf16"] / rates["fp32"],
              "through_loader_clips_per_s": through, "loader_workers": plan.workers,
              "device_normalize_max_abs_diff": diff}
    if diff:
        result["error"] = f"uint8 batches normalised on {dev} differ from the host path by up to {diff:g}"
    print(f"### Feature extraction, {plan.backbone} {plan.frames}×{plan.size}², batch {plan.extract_batch}, "
          f"torch.inference_mode, on {dev}\n")
    print("| input | fp32 clips/s | bf16 clips/s |\n|---|---:|---:|")
    print(f"| clips already on the device | {rates['fp32']:.1f} | {rates['bf16']:.1f} |")
    for path, v in through.items():
        print(f"| through the loader ({path}, eval transform) | | {v:.1f} |" if amp is not None else
              f"| through the loader ({path}, eval transform) | {v:.1f} | |")
    print(f"\nextract: {rates['bf16']:.1f} clips/s bf16, {rates['fp32']:.1f} fp32 (bf16 / fp32 = "
          f"{result['ratio_bf16']:.2f}×)" + (f"; through the loader uint8 / float32 = "
                                            f"{through['uint8'] / through['float32']:.2f}×" if through else ""))
    if diff is not None:
        print(f"extract: uint8 normalised on {dev} vs on the host: max |difference| {diff:g}")
    return result


def _normalisation_diff(cache, ids: list[str], plan: Plan, spec, dev) -> float:
    """Largest difference between a batch normalised on the host (today's path) and the same
    clips sent as uint8 and normalised on ``dev`` (0 expected: the same float32 arithmetic)."""
    import numpy as np
    import torch
    from torch.utils.data import default_collate

    from pipeline.data.transforms import DeviceNormalize, build_transform

    host = build_transform(plan.size, spec.mean, spec.std, train=True)
    raw = build_transform(plan.size, spec.mean, spec.std, train=True, normalize=False)
    expected, sent = [], []
    for i, vid in enumerate(ids[:8]):
        clip = np.array(cache.read(vid)[0])  # out of the read-only memory map, as ClipDataset does
        torch.manual_seed(i)  # the same crop/flip draws on both paths
        expected.append(host(clip))
        torch.manual_seed(i)
        sent.append(raw(clip))
    on_device = DeviceNormalize(spec.mean, spec.std)(default_collate(sent).to(dev))
    return float((on_device.cpu() - default_collate(expected)).abs().max())


def step_loader(plan: Plan, work: Path) -> dict[str, Any]:
    """bench_loader over the workspace's clip cache, against the measured GPU consumption."""
    import bench_loader

    data = _read(work, "data")
    amp = _read(work, "amp")
    argv = ["--backbone", plan.backbone, "--size", str(plan.size), "--batch", str(plan.loader_batch),
            "--batches", str(plan.loader_batches), "--repeats", str(plan.loader_repeats),
            "--json", str(work / "loader_raw.json")]
    if data:
        argv += ["--cache", data["cache"]]
    else:
        argv += ["--frames", str(plan.frames), "--height", str(plan.height), "--width", str(plan.width)]
    if plan.loader_workers:
        argv += ["--workers", plan.loader_workers]
    consumption = None
    if amp:  # the GPU's measured appetite: its best training variant
        consumption = max(amp["clips_per_s"].values())
        argv += ["--gpu-rate", f"{consumption:.3f}"]
    print("### Loader rate vs GPU consumption\n")
    r = bench_loader.main(argv)
    best = {p: max(row[p] for row in r["rows"]) for p in bench_loader.PATHS}
    r.update(measured_train_clips_per_s=consumption,
             headroom={p: (best[p] / consumption if consumption else None) for p in best}, best=best)
    extract = _read(work, "extract")
    if extract:
        r["measured_extract_clips_per_s"] = extract["compute_clips_per_s"]["bf16" if plan.device == "cuda" else "fp32"]
    print(f"\nloader: best float32 {best['float32']:.1f} clips/s, uint8 {best['uint8']:.1f} clips/s"
          + (f"; training consumes {consumption:.1f} clips/s: headroom float32 {r['headroom']['float32']:.2f}×, "
             f"uint8 {r['headroom']['uint8']:.2f}×" if consumption else ""))
    if data and amp:
        r["fed"] = _fed_training(plan, Path(data["cache"]), amp)
    return r


def _fed_training(plan: Plan, cache_dir: Path, amp_result: dict[str, Any]) -> dict[str, Any]:
    """Training steps fed by the real loader (plan.workers workers, train augmentation) against the
    same steps on device-resident clips (the amp step): the share of its appetite the loader
    meets, i.e. how busy the loader lets the GPU be. float32 batches vs uint8 + DeviceNormalize."""
    import torch
    from bench_loader import make_loader, read_cache

    from pipeline.data.transforms import DeviceNormalize
    from pipeline.engine.loop import train_one_epoch
    from pipeline.models.classifier import build_model
    from pipeline.progress import set_quiet

    set_quiet(True)
    dev = _device(plan)
    dtype = torch.bfloat16 if dev.type == "cuda" else None  # what `vtl train --amp` runs on the GPU
    resident = amp_result["clips_per_s"]["bf16" if dtype else "fp32"]
    cache, ids, labels = read_cache(cache_dir)
    skip = 2 * plan.workers + 1  # the batches prefetched while the model warmed up, and the first step
    rates = {}
    for path in ("float32", "uint8"):
        torch.manual_seed(0)
        model, spec = build_model(plan.backbone, plan.classes, weights="none")
        model.to(dev).train()
        loader = make_loader(cache, ids, labels, path=path, size=plan.size, mean=spec.mean, std=spec.std,
                             batch=plan.train_batch, workers=plan.workers,
                             samples=(skip + plan.fed_batches) * plan.train_batch)
        marks: list[float] = []
        train_one_epoch(model, _timed(loader, skip, marks), torch.optim.AdamW(model.parameters(), lr=1e-4), None,
                        torch.nn.CrossEntropyLoss(), dev, desc="fed", amp=dtype,
                        normalize=DeviceNormalize(spec.mean, spec.std) if path == "uint8" else None)
        rates[path] = plan.fed_batches * plan.train_batch / (time.perf_counter() - marks[0])  # ends synchronised
    busy = {p: v / resident for p, v in rates.items()}
    print(f"loader: training fed by {plan.workers} workers: float32 {rates['float32']:.1f} clips/s "
          f"({busy['float32']:.0%} of the {resident:.1f} clips/s on resident clips), uint8 {rates['uint8']:.1f} "
          f"clips/s ({busy['uint8']:.0%})")
    return {"workers": plan.workers, "batch": plan.train_batch, "clips_per_s": rates, "resident_clips_per_s": resident,
            "busy_share": busy}


# ----------------------------------------------------------------------------- summary

SECTIONS = ("env", "data", "amp", "ddp", "extract", "loader")


def _figure(step: str, r: dict[str, Any]) -> str:
    if step == "env":
        return f"{r.get('gpu', 'no GPU')}, torch {r['torch']}, {r['cpus']} CPUs"
    if step == "data":
        return f"{r['cached']} videos cached in {r['seconds']:.1f} s"
    if step == "amp":
        c = r["clips_per_s"]
        return (", ".join(f"{k} {v:.1f}" for k, v in c.items()) + f" clips/s; bf16/fp32 {r['ratio_bf16']:.2f}×")
    if step == "ddp":
        rate = f"{r['clips_per_s']:.1f} clips/s" if r.get("clips_per_s") is not None else "no epoch"
        return f"backend {r['backend']}, {'finished' if r['finished'] else 'failed'}, {rate}"
    if step == "extract":
        c = r["compute_clips_per_s"]
        return f"fp32 {c['fp32']:.1f}, bf16 {c['bf16']:.1f} clips/s; bf16/fp32 {r['ratio_bf16']:.2f}×"
    if step == "loader":
        b = r["best"]
        head = (f"; headroom over training {r['headroom']['float32']:.2f}× / {r['headroom']['uint8']:.2f}×"
                if r.get("measured_train_clips_per_s") else "")
        fed = r.get("fed")
        busy = (f"; training fed by {fed['workers']} workers: {fed['busy_share']['float32']:.0%} (float32) / "
                f"{fed['busy_share']['uint8']:.0%} (uint8) of the resident rate" if fed else "")
        return f"best float32 {b['float32']:.1f}, uint8 {b['uint8']:.1f} clips/s{head}{busy}"
    raise ValueError(step)


def step_summary(plan: Plan, work: Path, out: Path, mode: str, status: dict[str, str]) -> dict[str, Any]:
    results = {s: _read(work, s) for s in SECTIONS}
    summary = {"mode": mode, "plan": asdict(plan), "status": status, "results": results}
    lines = [f"# gpu_check ({mode}), {time.strftime('%Y-%m-%d %H:%M')}", "",
             "| section | status | figures |", "|---|---|---|"]
    for s in SECTIONS:
        r = results[s]
        st = status.get(s, "not run")
        ok = r is not None and st == "ok" and not r.get("error")
        lines.append(f"| {s} | {'ok' if ok else st if st != 'ok' else 'failed'} | "
                     f"{_figure(s, r) if r else '—'}{' — ' + r['error'] if r and r.get('error') else ''} |")
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(text)
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=(*SECTIONS, "train-args", "summary"))
    p.add_argument("--plan", choices=sorted(PLANS), default="gpu")
    p.add_argument("--work", type=Path, required=True, help="scratch folder shared by the steps")
    p.add_argument("--out", type=Path, help="summary: where summary.md/json go")
    p.add_argument("--status", default="", help="summary: step=status,... as the shell saw them")
    p.add_argument("--log", type=Path, help="ddp: the torchrun log")
    p.add_argument("--rc", type=int, default=0, help="ddp: torchrun's exit code")
    p.add_argument("--seconds", type=float, default=0.0, help="ddp: its wall time")
    args = p.parse_args()
    plan = PLANS[args.plan]
    args.work.mkdir(parents=True, exist_ok=True)
    if args.step == "train-args":
        print(" ".join(train_args(plan, args.work)))
        return
    if args.step == "summary":
        status = dict(kv.split("=", 1) for kv in args.status.split(",") if "=" in kv)
        summary = step_summary(plan, args.work, args.out or args.work, args.plan, status)
        failed = [s for s in SECTIONS if status.get(s) != "ok" or (summary["results"][s] or {}).get("error")]
        sys.exit(1 if failed else 0)
    if args.step == "ddp":
        result = step_ddp(plan, args.work, args.log, args.rc, args.seconds)
    else:
        result = globals()[f"step_{args.step}"](plan, args.work)
    _write(args.work, args.step, result)
    sys.exit(1 if result.get("error") else 0)


if __name__ == "__main__":
    main()
