"""Benchmark: mean class accuracy on a 10:1 imbalanced target with ``--class-weights none|auto`` and
``--sampler random|balanced``, over seeds. Not a test: prints a markdown table for docs/performance.md.

The target is synthetic (``pipeline.data.synthetic``), laid out in split folders: in ``train/`` the
first classes have ``--major`` clips each and the others ``--major / ratio``; ``val/`` and ``test/``
are balanced, so mean class accuracy measures every class alike. Each run is a linear probe of the
packaged ImageNet efficientnet_lite0 on cached features (one extraction serves every run), through
the ordinary stages.

    .venv/bin/python scripts/bench_imbalance.py                 # 10:1, 3 seeds (~5 min on 2 cores)
    .venv/bin/python scripts/bench_imbalance.py --ratio 20 --seeds 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.data.sampling import SamplingConfig
from pipeline.data.synthetic import TARGET_CLASSES, make_target_dataset
from pipeline.engine.config import EvaluateConfig, TrainConfig
from pipeline.progress import set_quiet
from pipeline.stages.evaluate import run_evaluate
from pipeline.stages.prepare import PrepareConfig, run_prepare
from pipeline.stages.sample import SampleConfig, run_sample
from pipeline.stages.train import run_train
from pipeline.workspace import Workspace

VARIANTS = {"none": ("none", "random"), "auto weights": ("auto", "random"), "balanced sampler": ("none", "balanced")}


def make_target(root: Path, major: int, ratio: int, majors: int, eval_clips: int) -> None:
    """Split folders: an imbalanced train/, balanced val/ and test/ (other seeds, so other clips)."""
    classes = TARGET_CLASSES
    make_target_dataset(root / "train", major, classes=classes[:majors], size=64, frames=8, seed=1)
    make_target_dataset(root / "train", max(1, major // ratio), classes=classes[majors:], size=64, frames=8, seed=2)
    make_target_dataset(root / "val", eval_clips, classes=classes, size=64, frames=8, seed=3)
    make_target_dataset(root / "test", eval_clips, classes=classes, size=64, frames=8, seed=4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratio", type=int, default=10, help="largest : smallest class in train")
    p.add_argument("--major", type=int, default=40, help="train clips of each large class")
    p.add_argument("--majors", type=int, default=2, help="how many classes are large")
    p.add_argument("--eval-clips", type=int, default=10, help="val and test clips per class")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30)
    args = p.parse_args()
    set_quiet(True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root, ws = Path(tmp) / "data", Workspace(Path(tmp) / "ws")
        make_target(root, args.major, args.ratio, args.majors, args.eval_clips)
        run_prepare(ws, PrepareConfig(root=root, workers=2))
        key = run_sample(ws, SamplingConfig(frames=4, short_side=64), SampleConfig(workers=2))["key"]
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
        for seed in range(args.seeds):
            for name, (weights, sampler) in VARIANTS.items():
                run = f"{weights}-{sampler}-s{seed}"
                run_train(ws, TrainConfig(backbone="efficientnet_lite0", strategy="linear", epochs=args.epochs,
                                          lr=0.01, input_size=64, seed=seed, class_weights=weights, sampler=sampler,
                                          sampling=key, name=run))
                m = run_evaluate(ws, EvaluateConfig(run=run))
                results[name].append((m["video_mean_class_accuracy"], m["video_top1"]))
        counts = {split: len(ws.manifest_rows(split)) for split in ("train", "val", "test")}
    classes = len(TARGET_CLASSES)
    print(f"Target: {classes} classes, train {args.majors} x {args.major} + {classes - args.majors} x "
          f"{max(1, args.major // args.ratio)} clips ({args.ratio}:1), val/test {args.eval_clips} per class "
          f"(manifest: {counts}); efficientnet_lite0 linear, {args.epochs} epochs, seeds 0..{args.seeds - 1}; "
          f"{time.perf_counter() - t0:.0f} s\n")
    print("| variant | mean class accuracy (mean ± std) | top-1 (mean) |")
    print("|---|---:|---:|")
    for name, values in results.items():
        mca = [v[0] for v in values]
        spread = statistics.stdev(mca) if len(mca) > 1 else 0.0
        print(f"| {name} | {statistics.mean(mca):.3f} ± {spread:.3f} | {statistics.mean(v[1] for v in values):.3f} |")


if __name__ == "__main__":
    main()
