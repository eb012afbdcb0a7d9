"""``--fraction f`` trains on a seeded, stratified ``ceil(n_c × f)`` videos of every class ``c``, and the
run records (``train_split.json``, read by the benchmark's ``examples_per_class``) exactly what it used."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

import pytest
from conftest import invoke_vtl

from pipeline.data.synthetic import TARGET_CLASSES, make_target_dataset
from pipeline.workspace import Workspace

pytestmark = pytest.mark.slow

PER_CLASS = (11, 7, 4)  # unequal classes: a fraction of the whole split would not be stratified


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fraction")
    data = make_target_dataset(root / "data", max(PER_CLASS), size=32, frames=4, classes=TARGET_CLASSES[:3])
    for cls, keep in zip(TARGET_CLASSES, PER_CLASS, strict=False):
        for extra in sorted((data / cls.name).glob("*.mp4"))[keep:]:
            extra.unlink()
    ws = root / "ws"
    invoke_vtl("-q", "prepare", ws, "--format", "folder", "--root", data, "--val-fraction", "0.2",
               "--test-fraction", "0.2", "--workers", "1")
    invoke_vtl("-q", "sample", ws, "--frames", "2", "--short-side", "32", "--clips-per-video", "2", "--workers", "1")
    return ws


def _train(ws: Path, fraction: float, seed: int) -> dict:
    name = f"f{fraction:g}-s{seed}"
    invoke_vtl("-q", "train", ws, "--backbone", "efficientnet_lite0", "--strategy", "linear", "--input-size", "32",
               "--epochs", "2", "--fraction", fraction, "--seed", seed, "--name", name)
    run = Workspace(ws).run(name)
    return {"split": run.train_split(), "history": run.history(), "per_class": run.examples_per_class()}


def test_fraction_keeps_ceil_n_f_of_every_class_and_records_what_trained(ws: Path) -> None:
    with open(ws / "manifest.csv", newline="") as f:
        train = {r["id"]: r["label"] for r in csv.DictReader(f) if r["split"] == "train"}
    n = Counter(train.values())
    assert len(set(n.values())) == 3  # three different class sizes
    f = 0.3
    assert any(math.ceil(k * f) != round(k * f) for k in n.values())  # ceil, not rounding, is what is checked
    runs = {seed: _train(ws, f, seed) for seed in (0, 1)}
    for seed, run in runs.items():
        split = run["split"]
        assert split["videos_per_class"] == {c: math.ceil(n[c] * f) for c in n}, seed
        assert Counter(train[i] for i in split["ids"]) == Counter(split["videos_per_class"])  # ids of those classes
        assert len(set(split["ids"])) == len(split["ids"])
        # one view of each kept video per epoch: the head saw exactly those videos
        assert [h["train_clips"] for h in run["history"]] == [len(split["ids"])] * 2
        assert run["per_class"] == pytest.approx(sum(split["videos_per_class"].values()) / 3, abs=0.01)
    assert runs[0]["split"]["ids"] != runs[1]["split"]["ids"]  # seeded: another seed, other videos
    again = _train(ws, f, 0)  # the finished run is not retrained: same record
    assert again["split"] == runs[0]["split"]
    full = _train(ws, 1.0, 0)
    assert sorted(full["split"]["ids"]) == sorted(train) and full["split"]["videos_per_class"] == dict(n)
