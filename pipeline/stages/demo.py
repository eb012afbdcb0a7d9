"""``vtl demo``: the embedded default — transfer vs scratch on synthetic videos, no download.

1. Writes a synthetic *source* dataset (6 motions, plain backgrounds, many
   clips) and a *target* dataset (5 motion classes in another domain: other
   colours, textured backgrounds, at most 10 training clips per class).
2. Pretrains a video backbone on the source (the user's "own source dataset").
3. On the target, compares: the video backbone from scratch; ImageNet
   efficientnet_lite0 as a linear probe and fine-tuned; the source-pretrained
   video backbone fine-tuned.
4. **Which source?** A short ``vtl benchmark`` on the same target (2-frame clips): the
   ImageNet efficientnet_lite0 and a resnet18 that the benchmark pretrains on a *label-shuffled*
   source dataset, each as a linear probe at its best learning rate on the validation split,
   against the scratch baselines over two seeds: ImageNet beats its own backbone from scratch
   but is judged against the best scratch model too; the shuffled source is flagged as negative
   transfer (see docs/benchmark.md).
5. Writes ``report.md`` (table + bar chart + the benchmark's verdicts), ``summary.json`` (one entry
   per target run) and ``benchmark.json`` (a copy of the benchmark's ``summary.json``).

Every step is an ordinary stage on ordinary workspaces, so a re-run reuses
what is done (data, caches, finished runs).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.benchmark.config import BenchmarkConfig
from pipeline.data.sampling import SamplingConfig
from pipeline.data.synthetic import make_source_dataset, make_target_dataset
from pipeline.engine.config import EvaluateConfig, TrainConfig
from pipeline.engine.determinism import deterministic_mode
from pipeline.files import write_json, write_text
from pipeline.progress import echo
from pipeline.provenance import KEY as PROVENANCE
from pipeline.report.benchmark_report import headline
from pipeline.report.markdown import table
from pipeline.report.plots import plot_bars
from pipeline.stages.benchmark import run_benchmark
from pipeline.stages.evaluate import run_evaluate
from pipeline.stages.prepare import PrepareConfig, run_prepare
from pipeline.stages.sample import SampleConfig, run_sample
from pipeline.stages.train import run_train
from pipeline.workspace import Workspace


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo; the defaults finish in a few minutes on 2 CPU cores."""

    source_clips_per_class: int = 30
    target_clips_per_class: int = 30  # 10 train, 5 val, 15 test per class
    video_backbone: str = "x3d_xs"
    video_size: int = 32
    frame_size: int = 112
    frames: int = 8
    source_epochs: int = 6
    target_epochs: int = 12
    linear_epochs: int = 60
    workers: int = 2
    # the "which source?" benchmark: tiny 2-frame clips so that each scratch cell takes seconds
    bench_frames: int = 2
    bench_short_side: int = 64
    bench_seeds: int = 2
    bench_lr_factors: tuple[float, ...] = (1 / 3, 1.0, 3.0)
    shuffled_clips_per_class: int = 10


def _written_once(root: Path, what: str, write: Callable[[Path], Any]) -> Path:
    """``write(root)`` unless an earlier demo finished writing it (``.complete``)."""
    if not (root / ".complete").is_file():
        echo(f"demo: writing the {what}")
        write(root)
        (root / ".complete").touch()
    return root


def _ensure_data(out: Path, plan: DemoPlan) -> tuple[Path, Path]:
    source = _written_once(out / "data" / "source", "synthetic source dataset",
                           lambda root: make_source_dataset(root, plan.source_clips_per_class, seed=0))
    target = _written_once(out / "data" / "target", "synthetic target dataset",
                           lambda root: make_target_dataset(root, plan.target_clips_per_class, seed=1))
    return source, target


def _workspace(path: Path, root: Path, plan: DemoPlan, val: float, test: float,
               sampling: SamplingConfig) -> tuple[Workspace, str]:
    """A prepared and sampled workspace, and the key of its clip cache."""
    ws = Workspace(path)
    run_prepare(ws, PrepareConfig(format="folder", root=root, val_fraction=val, test_fraction=test,
                                  workers=plan.workers))
    return ws, run_sample(ws, sampling, SampleConfig(workers=plan.workers))["key"]


def _target_runs(plan: DemoPlan, source_ckpt: Path, sampling: str) -> list[tuple[str, str, TrainConfig]]:
    """(display name, source description, config) of each target run, all on clip cache ``sampling``
    (named, because the benchmark section samples the target workspace a second way)."""
    v, f = plan.video_backbone, "efficientnet_lite0"
    runs = [
        (f"{v} from scratch", "none (random init)",
         TrainConfig(backbone=v, strategy="scratch", epochs=plan.target_epochs, lr=5e-3, batch_size=16,
                     input_size=plan.video_size, augment="crop", name="scratch")),
        (f"{f} ImageNet, linear probe", "imagenet1k",
         TrainConfig(backbone=f, strategy="linear", weights="imagenet1k", epochs=plan.linear_epochs, lr=1e-2,
                     batch_size=32, input_size=plan.frame_size, name="imagenet-linear")),
        (f"{f} ImageNet, fine-tune", "imagenet1k",
         TrainConfig(backbone=f, strategy="finetune", weights="imagenet1k", epochs=max(1, plan.target_epochs // 3),
                     lr=1e-3, backbone_lr_mult=0.1, batch_size=16, input_size=plan.frame_size, augment="crop",
                     name="imagenet-finetune")),
        (f"{v} synthetic-source, fine-tune", str(source_ckpt),
         TrainConfig(backbone=v, strategy="finetune", weights=str(source_ckpt), epochs=plan.target_epochs,
                     lr=5e-3, backbone_lr_mult=0.3, batch_size=16, input_size=plan.video_size, augment="crop",
                     name="source-finetune")),
    ]
    for _, _, cfg in runs:
        cfg.sampling = sampling
    return runs


def run_demo(out: Path, plan: DemoPlan | None = None) -> Path:
    """The demo into ``out``; every training and evaluation in deterministic mode (``--deterministic``):
    run twice, it prints the same numbers (its synthetic videos are byte-identical too)."""
    with deterministic_mode(True):
        return _run_demo(out, plan or DemoPlan())


def _run_demo(out: Path, plan: DemoPlan) -> Path:
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    source_root, target_root = _ensure_data(out, plan)
    clips = SamplingConfig(frames=plan.frames, short_side=64, clips_per_video=2)
    source_ws, source_key = _workspace(out / "source", source_root, plan, val=0.15, test=0.0, sampling=clips)
    target_ws, target_key = _workspace(out / "target", target_root, plan, val=0.17, test=0.5, sampling=clips)

    echo(f"demo: pretraining {plan.video_backbone} on the synthetic source")
    pre = run_train(source_ws, TrainConfig(backbone=plan.video_backbone, strategy="scratch", epochs=plan.source_epochs,
                                           lr=5e-3, batch_size=16, input_size=plan.video_size, augment="crop",
                                           name="pretrain", sampling=source_key))
    source_ckpt = source_ws.run("pretrain").best

    summary: list[dict[str, Any]] = []
    for name, source, cfg in _target_runs(plan, source_ckpt, target_key):
        echo(f"demo: target run '{name}'")
        trained = run_train(target_ws, cfg)
        metrics = run_evaluate(target_ws, EvaluateConfig(run=cfg.run_name))
        summary.append({"name": name, "backbone": cfg.backbone, "source": source, "strategy": cfg.strategy,
                        "top1": metrics["video_top1"], "mean_class_accuracy": metrics["video_mean_class_accuracy"],
                        "train_seconds": round(trained["train_seconds"]), "run": cfg.run_name,
                        PROVENANCE: metrics[PROVENANCE]})
    bench = {**_benchmark_sources(out, plan, target_ws), "seeds": plan.bench_seeds}  # seeds: for the report
    write_json(out / "summary.json", summary)
    report = _write_report(out, summary, pre, time.perf_counter() - t0, target_ws, bench)
    return report


def _benchmark_sources(out: Path, plan: DemoPlan, target_ws: Workspace) -> dict[str, Any]:
    """``vtl benchmark`` on the target with one good source and one deliberately bad source dataset,
    which the benchmark pretrains itself; returns its ``summary.json``."""
    echo("demo: benchmark of sources (which one transfers? which one hurts?)")
    shuffled_root = _written_once(out / "data" / "source-shuffled", "label-shuffled source dataset",
                                  lambda root: make_source_dataset(root, plan.shuffled_clips_per_class, size=32,
                                                                   frames=8, seed=2, shuffle_labels=True))
    tiny = SamplingConfig(frames=plan.bench_frames, short_side=plan.bench_short_side)
    shuffled_ws, shuffled_key = _workspace(out / "source-shuffled", shuffled_root, plan, val=0.15, test=0.0,
                                           sampling=tiny)
    bench_key = run_sample(target_ws, tiny, SampleConfig(workers=plan.workers))["key"]
    sources = out / "sources.yaml"
    # The shuffled source's labels are drawn at random and its learning rate is far too high:
    # features worth nothing, the kind of source nobody would pick on purpose but one can pick by
    # accident.
    write_text(sources, f"""# written by `vtl demo`: the benchmark of its "which source?" section
lr_factors: [{", ".join(f"{f:g}" for f in plan.bench_lr_factors)}]
train:
  sampling: {bench_key}
  augment: none
  scratch: {{epochs: 6, lr: 0.003, batch_size: 12}}
  linear: {{epochs: 30, lr: 0.01}}
sources:
  - name: imagenet
    backbone: efficientnet_lite0
    weights: imagenet1k
    train: {{input_size: 64}}
  - name: shuffled-labels
    backbone: resnet18
    dataset: {shuffled_ws.root.resolve()}
    pretrain: {{epochs: 3, lr: 0.1, batch_size: 8, input_size: 32, augment: none, sampling: {shuffled_key}}}
    train: {{input_size: 32}}
""")
    result = run_benchmark(target_ws, BenchmarkConfig(sources=sources, strategies=("linear",), fractions=(1.0,),
                                                      seeds=plan.bench_seeds))
    shutil.copyfile(result["summary"], out / "benchmark.json")
    return json.loads((out / "benchmark.json").read_text())


def _yes_no(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


def _write_report(out: Path, summary: list[dict], pre: dict, seconds: float, target_ws: Workspace,
                  bench: dict[str, Any]) -> Path:
    scratch = summary[0]["top1"]
    plot_bars([s["name"] for s in summary], [s["top1"] for s in summary], out / "demo_top1.png",
              title="Target test top-1 (synthetic actions, 10 train clips/class)", ylabel="top-1",
              reference=scratch, reference_label="scratch")
    rows = [{**s, "gain": s["top1"] - scratch} for s in summary]
    counts = {split: len(target_ws.manifest_rows(split)) for split in ("train", "val", "test")}
    bench_rows = [{**e, "top1": f"{e['top1_mean']:.3f} ± {e['top1_spread']:.3f}", "lr": f"{e['lr']:.3g}",
                   "own": _yes_no(e["beats_own_scratch"]), "best": _yes_no(e["beats_best_scratch"]),
                   "flag": "NEGATIVE TRANSFER" if e["source"] in bench["negative_transfer"] else ""}
                  for e in bench["ranking"]]
    text = f"""# vtl demo: transfer vs scratch

Target: {len(target_ws.classes())} synthetic action classes (motion + shape, textured backgrounds),
{counts['train']} training / {counts['val']} validation / {counts['test']} test clips.
Source: synthetic motions on plain backgrounds; the video backbone was pretrained on it
(best validation top-1 {pre['best_val_top1']:.3f}).

{table(rows, [("name", "run"), ("strategy", "strategy"), ("top1", "top-1"),
              ("mean_class_accuracy", "mean class acc."), ("gain", "gain vs scratch"),
              ("train_seconds", "train time (s)")])}

![top-1 per run](demo_top1.png)

Each run's confusion matrix and per-class scores are in `target/eval/<run>/`.
A run below scratch would be *negative transfer*: the source hurt.

## Which source? (`vtl benchmark`)

On 2-frame clips of the same target, two sources as linear probes ({bench['seeds']} seeds, each source's
learning rate chosen on the validation split): the ImageNet efficientnet_lite0, and a resnet18 that the
benchmark pretrained itself on a **label-shuffled** source dataset (random labels, a far too high learning
rate: the kind of source that hurts). Beside them, the best model trained from scratch over both
backbones: a source is *worth it* only if it beats that, not merely its own backbone from scratch.

{headline(bench)}

{table(bench_rows, [("rank", "rank"), ("source", "source"), ("backbone", "backbone"), ("best_strategy", "strategy"),
                    ("top1", "top-1"), ("lr", "lr"), ("own", "beats own scratch"),
                    ("best", "beats best scratch"), ("flag", "flag")])}

Full grid, transferability scores (LogME, LEEP), cost and plots: `target/benchmark/report.md`;
the same verdicts for scripts: `benchmark.json` (a copy of `target/benchmark/summary.json`).

Total time {seconds:.0f} s.
"""
    write_text(out / "report.md", text)
    return out / "report.md"
