"""The demo end to end on a miniature plan (the full one is `make demo`), twice into two folders:
the same videos byte for byte and the same numbers (issue 19)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_reproducibility import _assert_provenance, _hashes

from pipeline.stages.demo import DemoPlan, run_demo

pytestmark = pytest.mark.slow

# One seed and a single learning rate; the target is kept large enough (8 training clips per class) for
# the ImageNet probe to learn, the runs that only have to exist (source pretraining, target fine-tuning)
# train for one epoch.
TINY = DemoPlan(source_clips_per_class=4, target_clips_per_class=24, video_size=32, frame_size=64,
                source_epochs=1, target_epochs=1, linear_epochs=3, workers=0, shuffled_clips_per_class=3,
                bench_lr_factors=(1.0,), bench_seeds=1)


def _numbers(out: Path) -> tuple[list, list]:
    """summary.json without its timings, provenance and paths; the benchmark's ranked scores."""
    summary = json.loads((out / "summary.json").read_text())
    bench = json.loads((out / "benchmark.json").read_text())
    for entry in summary:
        _assert_provenance(entry.pop("provenance"))
    return ([{k: v for k, v in e.items() if k not in ("train_seconds", "source")} for e in summary],
            [(e["source"], e["top1_mean"], e["top1_spread"]) for e in bench["ranking"]])


def test_demo_writes_report_and_summary_and_gives_the_same_numbers_twice(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("a")
    report = run_demo(tmp_path, TINY)
    assert report == tmp_path / "report.md"
    text = report.read_text()
    assert "| run | strategy | top-1 |" in text
    assert (tmp_path / "demo_top1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["strategy"] for s in summary] == ["scratch", "linear", "finetune", "finetune"]
    for entry in summary:
        assert set(entry) >= {"name", "backbone", "source", "strategy", "top1", "mean_class_accuracy",
                              "train_seconds"}
        assert 0.0 <= entry["top1"] <= 1.0
    # The transferred video backbone names its source: the checkpoint pretrained on the source data.
    assert summary[-1]["source"].endswith("best.pt")

    # The "which source?" section: a real benchmark grid on the target, scratch included.
    assert "## Which source? (`vtl benchmark`)" in text
    bench = json.loads((tmp_path / "benchmark.json").read_text())
    summary_json = tmp_path / "target" / "benchmark" / "summary.json"
    assert (tmp_path / "benchmark.json").read_bytes() == summary_json.read_bytes()
    assert {e["source"] for e in bench["ranking"]} == {"imagenet", "shuffled-labels", "scratch"}
    assert bench["best_scratch"]["backbone"] in {"efficientnet_lite0", "resnet18"}
    # The shuffled source was pretrained by the benchmark itself, from its dataset.
    pretrained = tmp_path / "target" / "benchmark" / "sources" / "shuffled-labels" / "train" / "pretrain"
    assert (pretrained / "best.pt").is_file()
    assert "beats best scratch" in text
    results = (tmp_path / "target" / "benchmark" / "results.csv").read_text().splitlines()
    assert sum(",scratch," in line for line in results) == 2 * TINY.bench_seeds  # one per backbone and seed
    # The README's promises: a transfer beats scratch, and the label-shuffled source is flagged.
    ranking = {e["source"]: e for e in bench["ranking"]}
    assert ranking["imagenet"]["beats_own_scratch"] is True, ranking
    assert bench["negative_transfer"] == ["shuffled-labels"], bench["negative_transfer"]
    assert ranking["imagenet"]["top1_mean"] > ranking["shuffled-labels"]["top1_mean"]

    # Into a second folder: byte-identical videos and the same numbers.
    other = tmp_path_factory.mktemp("b")
    run_demo(other, TINY)
    a, b = _hashes(tmp_path / "data"), _hashes(other / "data")
    assert len(a) == 6 * TINY.source_clips_per_class + 5 * TINY.target_clips_per_class + \
        6 * TINY.shuffled_clips_per_class and a == b
    assert _numbers(tmp_path) == _numbers(other)

    # A second run into the same folder reuses data, caches and finished runs: nothing is retrained.
    best = tmp_path / "target" / "train" / "scratch" / "best.pt"
    mtime = best.stat().st_mtime_ns
    run_demo(tmp_path, TINY)
    assert best.stat().st_mtime_ns == mtime
