"""Official splits survive ``vtl prepare``: for every dataset format with official split files, no
official test video ends up in train or val, and val is carved from the official train list only
(or is the official validation list, where the dataset has one).

Each fixture is a small tree in the dataset's published layout whose media are real (tiny, distinct)
synthetic videos, so prepare probes and keeps every listed file; the split files list more videos
per class than the carve needs, so a wrong branch (a re-split of the whole pool, a carve from
test) would move some official test videos.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import invoke_vtl

from pipeline.data.synthetic import TARGET_CLASSES, make_target_dataset

CLASSES = ("Archery", "Biking")
PER_SPLIT = {"train": 6, "val": 2, "test": 3}  # videos per class in each official list


@dataclass
class Official:
    """A fixture: its prepare options and the official split of every video (by file name)."""

    args: list[str]
    split_of: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Enough distinct tiny videos for the largest fixture."""
    n = len(CLASSES) * sum(PER_SPLIT.values())
    root = make_target_dataset(tmp_path_factory.mktemp("media"), n, size=16, frames=4,
                               classes=TARGET_CLASSES[:1])
    return sorted(root.rglob("*.mp4"))


def _names(split: str, cls: str) -> list[tuple[int, str]]:
    start = {"train": 0, "val": PER_SPLIT["train"], "test": PER_SPLIT["train"] + PER_SPLIT["val"]}[split]
    return [(start + i, f"{cls}_{split}_{i}") for i in range(PER_SPLIT[split])]


def _place(media: list[Path], k: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(media[k], path)


def ucf101(root: Path, media: list[Path]) -> Official:
    lists = root / "ucfTrainTestlist"
    official = Official(["--format", "ucf101", "--root", str(root / "UCF-101"), "--splits", str(lists)])
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))
    train, test = [], []
    for c, cls in enumerate(CLASSES):
        for split in ("train", "val", "test"):  # UCF101 has no official val: "val" videos are train-list ones
            for k, _ in _names(split, cls):
                name = f"v_{cls}_g{k + 1:02d}_c01.avi"
                _place(media, c * 11 + k, root / "UCF-101" / cls / name)
                (test if split == "test" else train).append(f"{cls}/{name}" + ("" if split == "test" else f" {c + 1}"))
                official.split_of[name] = "test" if split == "test" else "train"
    (lists / "trainlist01.txt").write_text("\r\n".join(train) + "\r\n")
    (lists / "testlist01.txt").write_text("\r\n".join(test) + "\r\n")
    return official


def hmdb51(root: Path, media: list[Path]) -> Official:
    splits = root / "testTrainMulti_7030_splits"
    official = Official(["--format", "hmdb51", "--root", str(root / "hmdb51"), "--splits", str(splits)])
    splits.mkdir(parents=True)
    code = {"train": 1, "val": 1, "test": 2}  # 1 = train, 2 = test; HMDB51 has no official val
    for c, cls in enumerate(CLASSES):
        lines = []
        for split in ("train", "val", "test"):
            for k, stem in _names(split, cls):
                name = f"{stem.lower()}_h_nm_np1_fr_med_0.avi"
                _place(media, c * 11 + k, root / "hmdb51" / cls.lower() / name)
                lines.append(f"{name} {code[split]} ")
                official.split_of[name] = "test" if split == "test" else "train"
        unused = f"{cls.lower()}_unused_h_nm_np1_fr_med_0.avi"  # code 0: not in this fold at all
        _place(media, c * 11, root / "hmdb51" / cls.lower() / unused)
        lines.append(f"{unused} 0 ")
        (splits / f"{cls.lower()}_test_split1.txt").write_text("\n".join(lines) + "\n")
    return official


def kinetics(root: Path, media: list[Path]) -> Official:
    csv_file = root / "kinetics400_subset.csv"
    official = Official(["--format", "kinetics", "--root", str(root / "k400"), "--splits", str(csv_file)])
    published = {"train": "train", "val": "validate", "test": "test"}
    rows = ["label,youtube_id,time_start,time_end,split"]
    for c, cls in enumerate(CLASSES):
        label = cls.lower()
        for split in ("train", "val", "test"):
            for k, stem in _names(split, cls):
                ytid = f"{stem[:6]}{k:05d}"[:11].ljust(11, "x")
                name = f"{ytid}_{k:06d}_{k + 10:06d}.mp4"
                _place(media, c * 11 + k, root / "k400" / split / label / name)
                rows.append(f"{label},{ytid},{k},{k + 10},{published[split]}")
                official.split_of[name] = split
    csv_file.parent.mkdir(parents=True, exist_ok=True)
    csv_file.write_text("\n".join(rows) + "\n")
    return official


def ssv2(root: Path, media: list[Path]) -> Official:
    labels_dir = root / "labels"
    official = Official(["--format", "ssv2", "--root", str(root / "videos"), "--splits", str(labels_dir)])
    templates = {cls: f"Pretending to {cls.lower()} something" for cls in CLASSES}
    lists: dict[str, list[dict]] = {"train": [], "validation": []}
    for c, cls in enumerate(CLASSES):
        for split in ("train", "val", "test"):
            for k, _ in _names(split, cls):
                vid = str(100 * (c + 1) + k)
                _place(media, c * 11 + k, root / "videos" / f"{vid}.webm")
                entry = {"id": vid, "label": "x", "template": templates[cls].replace("something", "[something]"),
                         "placeholders": ["x"]}
                # SSv2's test labels are not public: its validation list is vtl's test split
                lists["validation" if split == "test" else "train"].append(entry)
                official.split_of[f"{vid}.webm"] = "test" if split == "test" else "train"
    labels_dir.mkdir(parents=True)
    (labels_dir / "labels.json").write_text(json.dumps({t: str(i) for i, t in enumerate(templates.values())}))
    for name, entries in lists.items():
        (labels_dir / f"{name}.json").write_text(json.dumps(entries))
    return official


@pytest.mark.parametrize("make", [ucf101, hmdb51, kinetics, ssv2], ids=lambda f: f.__name__)
def test_prepare_keeps_the_official_test_split_and_carves_val_from_train(
        make: Callable[[Path, list[Path]], Official], videos: list[Path], tmp_path: Path) -> None:
    official = make(tmp_path / "data", videos)
    ws = tmp_path / "ws"
    invoke_vtl("-q", "prepare", ws, *official.args, "--val-fraction", "0.3", "--test-fraction", "0.3",
               "--seed", "0", "--workers", "1")
    with open(ws / "manifest.csv", newline="") as f:
        got = {Path(r["path"]).name: r["split"] for r in csv.DictReader(f)}
    assert set(got) == set(official.split_of)  # every listed video kept (code-0 HMDB videos left out)
    for name, split in official.split_of.items():
        if split == "test":
            assert got[name] == "test", name  # official test videos stay in test, whatever the fractions
        elif split == "val":
            assert got[name] == "val", name  # an official validation list is kept as it is
        else:
            assert got[name] in ("train", "val"), name  # train-list videos never go to test
    assert {n for n, s in got.items() if s == "test"} == {n for n, s in official.split_of.items() if s == "test"}
    carved = {n for n, s in got.items() if s == "val" and official.split_of[n] == "train"}
    if "val" in official.split_of.values():
        assert not carved  # the dataset has its own val: nothing is carved from train
    else:
        per_class = (PER_SPLIT["train"] + PER_SPLIT["val"]) * 0.3
        assert len(carved) == len(CLASSES) * round(per_class)  # val carved from each class's train list
