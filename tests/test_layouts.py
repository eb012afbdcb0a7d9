"""Users' own layouts (issue 14): split folders, CSV / list annotations, frame folders.

Each layout is built in ``tmp_path`` from the synthetic ``tiny_dataset`` clips or from real
clips copied out of ``../shared/data``, prepared through ``run_prepare`` and checked against the
exact classes and split counts the rules in docs/data.md give.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.data import decoders
from pipeline.data.cache import ClipCache
from pipeline.data.formats import FormatOptions, csvlist, folder
from pipeline.data.formats.frames import frame_series
from pipeline.data.sampling import SamplingConfig
from pipeline.errors import UserError
from pipeline.files import read_csv
from pipeline.stages.prepare import PrepareConfig, run_prepare
from pipeline.stages.sample import SampleConfig, run_sample
from pipeline.workspace import Workspace

CLASSES = ["rise", "slide_left", "slide_right"]  # tiny_dataset's


def clips(tiny: Path, label: str) -> list[Path]:
    return sorted((tiny / label).glob("*.mp4"))


def place(files: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, folder / f.name)


def prepare(root: Path, tmp_path: Path, **options) -> tuple[Workspace, dict]:
    ws = Workspace(tmp_path / "ws")
    return ws, run_prepare(ws, PrepareConfig(**{"format": "folder", "root": root, "workers": 0, **options}))


def manifest(ws: Workspace) -> list[dict[str, str]]:
    return read_csv(ws.manifest)


def splits(ws: Workspace) -> dict[str, int]:
    return dict(Counter(r["split"] for r in manifest(ws)))


def quarantine(ws: Workspace) -> dict[str, str]:
    return {Path(q["path"]).name: q["reason"] for q in read_csv(ws.quarantine)}


# ----------------------------------------------------------------------------- split folders


@pytest.mark.parametrize(("folders", "expected"), [
    # per class: 4 train + 1 val + 1 test files, nothing carved
    ({"train": (0, 4), "val": (4, 5), "test": (5, 6)}, {"train": 12, "val": 3, "test": 3}),
    # aliases in any case; no val folder: round(5 x 0.15) = 1 val per class carved from train
    ({"Training": (0, 5), "TESTING": (5, 6)}, {"train": 12, "val": 3, "test": 3}),
    # no test folder: 1 test per class carved from train, val kept as given
    ({"train": (0, 5), "validation": (5, 6)}, {"train": 12, "val": 3, "test": 3}),
    # train only: val and test carved, as for class folders
    ({"train": (0, 6)}, {"train": 12, "val": 3, "test": 3}),
])
def test_split_folders(tiny_dataset: Path, tmp_path: Path, capsys, folders, expected) -> None:
    root = tmp_path / "data"
    for name, (a, b) in folders.items():
        for label in CLASSES:
            place(clips(tiny_dataset, label)[a:b], root / name / label)
    ws, summary = prepare(root, tmp_path)
    assert ws.classes() == CLASSES
    assert splits(ws) == expected
    assert "layout: split folders" in capsys.readouterr().err
    for name, (a, b) in folders.items():  # a split given by a folder keeps exactly its files
        if name.lower() in ("val", "validation", "test", "testing"):
            split = "val" if name.lower().startswith("val") else "test"
            listed = {r["path"] for r in manifest(ws) if r["split"] == split}
            assert listed == {str((root / name / c / f.name).resolve()) for c in CLASSES
                              for f in clips(tiny_dataset, c)[a:b]}


def test_class_folders_still_carve_val_and_test(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    ws, _ = prepare(tiny_dataset, tmp_path)
    assert ws.classes() == CLASSES and splits(ws) == {"train": 12, "val": 3, "test": 3}
    assert "layout: class folders" in capsys.readouterr().err


def test_split_folders_of_real_clips(shared_data: Path, tmp_path: Path) -> None:
    """UCF101/HMDB51 clips in root/{train,test}/<class>/ (no val: carved, but 2 files per class
    are too few, so val stays empty and a warning says so)."""
    tv = shared_data / "videos" / "torchvision_assets"
    root = tmp_path / "UCF101_subset"
    place([tv / "RATRACE_wave_f_nm_np1_fr_goo_37.avi", tv / "SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi"],
          root / "train" / "wave")
    place([tv / "TrumanShow_wave_f_nm_np1_fr_med_26.avi"], root / "test" / "wave")
    place([tv / "v_SoccerJuggling_g23_c01.avi", tv / "reencoded_by_video_reader_benchmark" / "h264" /
           "v_SoccerJuggling_g24_c01.avi.mp4"], root / "train" / "SoccerJuggling")
    place([tv / "v_SoccerJuggling_g24_c01.avi"], root / "test" / "SoccerJuggling")
    ws, summary = prepare(root, tmp_path, workers=2)
    assert ws.classes() == ["SoccerJuggling", "wave"]
    assert splits(ws) == {"train": 4, "test": 2}
    assert summary["quarantined"] == 0


def test_split_folders_of_real_images(shared_data: Path, tmp_path: Path) -> None:
    """Stanford Dogs photos as root/{train,validation,test}/<breed>/ read by --format images."""
    src = shared_data / "images" / "dogs_stanford_original_size"
    root = tmp_path / "dogs"
    for split in ("train", "validation", "test"):
        for breed in sorted(p.name for p in (src / split).iterdir()):
            place(sorted((src / split / breed).glob("*.jpg"))[:2], root / split / breed)
    ws, _ = prepare(root, tmp_path, format="images")
    assert ws.classes() == ["beagle", "siberian_husky", "toy_poodle"]
    assert splits(ws) == {"train": 6, "val": 6, "test": 6}


@pytest.mark.parametrize(("dirs", "message"), [
    (["train/cat", "test/cat", "dog"], "mixes split folders (test, train) and class folders (dog)"),
    (["val/cat", "validation/cat", "train/cat"], "two val folders"),
    (["val/cat", "test/cat"], "no train folder"),
    (["train/cat", "test/cat", "test/dog"], "class 'dog' is in the test folder but has no files in"),
    (["train", "test/cat"], "train has no class folders"),
])
def test_bad_split_layouts_are_one_line_errors(tmp_path: Path, dirs: list[str], message: str) -> None:
    for d in dirs:
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        (tmp_path / d / "clip.mp4").write_bytes(b"x")
    with pytest.raises(UserError, match=re.escape(message)) as err:
        folder.read(FormatOptions(tmp_path))
    assert "\n" not in str(err.value)
    if "mixes" in message:  # the message shows both layouts
        assert "<split>/<class>/<file>" in str(err.value) and "/<class>/<file>" in str(err.value)


def test_imbalanced_classes_name_the_train_options(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    for k in range(10):
        place([clips(tiny_dataset, "rise")[k % 6]], root / "rise" / f"copy{k}")  # group folders
    place(clips(tiny_dataset, "slide_left")[:2], root / "slide_left")
    ws, _ = prepare(root, tmp_path, val_fraction=0.0, test_fraction=0.0)
    assert splits(ws) == {"train": 12}
    err = capsys.readouterr().err
    assert "warning: classes are imbalanced: 'rise' has 10 train files, 'slide_left' 2 (5.0x)" in err
    assert "--class-weights auto" in err and "--sampler balanced" in err


# ----------------------------------------------------------------------------- CSV / list annotations


def test_csv_with_header(tiny_dataset: Path, tmp_path: Path) -> None:
    """Columns in any order, an extra column, a quoted path with a comma; rows without a split
    join train, and val (named by no row) is carved from the train pool."""
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    odd = root / "rise" / "a, b.mp4"
    clips(root, "rise")[0].rename(odd)
    lines = ["label,path,notes,split"]
    for label in CLASSES:
        for k, f in enumerate(clips(root, label)):
            split = "train" if k < 4 else "" if k == 4 else "Test"
            lines.append(f'{label},"{f.relative_to(root).as_posix()}",n{k},{split}')
    (tmp_path / "ann.csv").write_text("\n".join(lines) + "\n")
    ws, _ = prepare(root, tmp_path, format="csv", annotations=(str(tmp_path / "ann.csv"),))
    assert ws.classes() == CLASSES
    assert splits(ws) == {"train": 12, "val": 3, "test": 3}
    assert str(odd) in {r["path"] for r in manifest(ws)}


def test_whitespace_lists_with_split_prefixes(tiny_dataset: Path, tmp_path: Path) -> None:
    """MMAction2-style ``path label`` lists, one per split: train and test given, val carved."""
    train = [f"{label}/{f.name} {label}" for label in CLASSES for f in clips(tiny_dataset, label)[:5]]
    test = [f"  {label}/{f.name}\t{label}  " for label in CLASSES for f in clips(tiny_dataset, label)[5:]]
    (tmp_path / "train.txt").write_bytes(("\ufeff" + "\r\n".join(train) + "\r\n\r\n").encode())
    (tmp_path / "test.txt").write_text("\n".join(test))
    ws, _ = prepare(tiny_dataset, tmp_path, format="csv",
                    annotations=(f"train={tmp_path / 'train.txt'}", f"TEST={tmp_path / 'test.txt'}"))
    assert ws.classes() == CLASSES
    assert splits(ws) == {"train": 12, "val": 3, "test": 3}


def test_integer_labels_through_a_class_file(tiny_dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")  # line 1 is label 0
    rows = [f"{label}/{f.name} {CLASSES.index(label)}" for label in CLASSES for f in clips(tiny_dataset, label)]
    (tmp_path / "all.txt").write_text("\n".join(rows))
    ws, _ = prepare(tiny_dataset, tmp_path, format="csv", annotations=(str(tmp_path / "all.txt"),),
                    classes=tmp_path / "classes.txt")
    assert ws.classes() == CLASSES
    assert splits(ws) == {"train": 12, "val": 3, "test": 3}
    assert {(Path(r["path"]).parent.name, r["label"]) for r in manifest(ws)} == {(c, c) for c in CLASSES}
    # numbers without a class file, or outside it, are one-line errors naming the line
    with pytest.raises(UserError, match="the labels are numbers .*pass --classes"):
        csvlist.read(FormatOptions(tiny_dataset, annotations=(str(tmp_path / "all.txt"),)))
    (tmp_path / "bad.txt").write_text(rows[0] + "\nrise/x.mp4 7\n")
    with pytest.raises(UserError, match=r"bad.txt:2: label '7' is not in --classes"):
        csvlist.read(FormatOptions(tiny_dataset, annotations=(str(tmp_path / "bad.txt"),),
                                   classes=tmp_path / "classes.txt"))


def test_ucf101_official_list_with_class_index(shared_data: Path, tmp_path: Path) -> None:
    """UCF101's own trainlist (``<path> <1-based index>``) and classInd.txt (``<index> <name>``)
    read as a list: the clips on disk are found, the rest quarantined as missing."""
    lists = shared_data / "videos" / "ucf101_splits" / "ucfTrainTestlist"
    tv = shared_data / "videos" / "torchvision_assets"
    root = tmp_path / "UCF-101"
    place([tv / "v_SoccerJuggling_g23_c01.avi", tv / "v_SoccerJuggling_g24_c01.avi"], root / "SoccerJuggling")
    shutil.copy(tv / "reencoded_by_video_reader_benchmark" / "xvid" / "v_SoccerJuggling_g23_c01.avi",
                root / "SoccerJuggling" / "v_SoccerJuggling_g01_c01.avi")
    (tmp_path / "test.txt").write_text("SoccerJuggling/v_SoccerJuggling_g01_c01.avi 84\n")
    ws, summary = prepare(root, tmp_path, format="csv", classes=lists / "classInd.txt",
                          annotations=(f"train={lists / 'trainlist01.txt'}", f"test={tmp_path / 'test.txt'}"))
    assert ws.classes() == ["SoccerJuggling"]
    assert splits(ws) == {"train": 2, "test": 1}
    listed = sum(1 for line in (lists / "trainlist01.txt").read_text().splitlines() if line.strip())
    assert summary["quarantined_by_reason"] == {"listed in annotations but missing on disk": listed - 2}


def test_rows_escaping_the_root_are_quarantined_and_never_opened(tiny_dataset: Path, tmp_path: Path) -> None:
    """The outside file is a FIFO: opening it would block until the probe's time limit, so a
    reason other than "outside --root" (or an entry in the probe cache) would show it was opened."""
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("trap.mp4", "trap2.mp4", "trap3.mp4"):
        os.mkfifo(outside / name)
    rows = [f"{label}/{f.name},{label}" for label in CLASSES for f in clips(root, label)]
    os.symlink(outside / "trap3.mp4", root / "rise" / "link.mp4")
    rows += ["../outside/trap.mp4,rise", f"{outside / 'trap2.mp4'},rise", "rise/link.mp4,rise"]
    (tmp_path / "ann.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    ws, _ = prepare(root, tmp_path, format="csv", annotations=(str(tmp_path / "ann.csv"),), workers=1, timeout=30)
    reasons = [q["reason"] for q in read_csv(ws.quarantine)]
    assert reasons == ["outside --root: '..' leads out of it",
                       "outside --root: an absolute path (paths must be relative to --root)",
                       f"outside --root: a symlink leads to {(outside / 'trap3.mp4').resolve()}"]
    assert splits(ws) == {"train": 12, "val": 3, "test": 3}
    probed = ws.probe_cache.read_text()
    assert "trap" not in probed and "link.mp4" not in probed


def test_duplicate_paths_are_an_error_naming_the_lines(tiny_dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("rise/rise_000.mp4 rise\nrise/rise_001.mp4 rise\n")
    (tmp_path / "b.csv").write_text("path,label,split\n./rise//rise_001.mp4,rise,test\n")
    with pytest.raises(UserError, match=r"listed twice: .*a.txt:2 and .*b.csv:2") as err:
        csvlist.read(FormatOptions(tiny_dataset, annotations=(str(tmp_path / "a.txt"), str(tmp_path / "b.csv"))))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("text", "message"), [
    ("path,split\na.mp4,train\n", "needs both a 'path' and a 'label' column"),
    ("path;label;split\nrise/rise_000.mp4;rise;nope\n", "ann:2: split 'nope' is not train, val or test"),
    ("label,youtube_id,time_start,time_end,split\n", "needs both a 'path' and a 'label' column"),
    ("path,label,split\nrise/rise_000.mp4,rise,holdout\n", "ann:2: split 'holdout' is not train, val or test"),
    ("rise/rise_000.mp4 rise extra words\n", "ann:1: expected '<path> <label>'"),
    ("path,label\nrise/rise_000.mp4,\n", "ann:2: empty label"),
    ("\n\n", "ann: no entries"),
])
def test_bad_annotations_are_one_line_errors(tiny_dataset: Path, tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "ann").write_text(text)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        csvlist.read(FormatOptions(tiny_dataset, annotations=(str(tmp_path / "ann"),)))
    assert "\n" not in str(err.value)


def test_class_listed_only_for_test_is_an_error(tiny_dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("path,label,split\nrise/rise_000.mp4,rise,train\nrise/rise_001.mp4,fall,test\n")
    with pytest.raises(UserError, match=r"class 'fall' is listed for test \(.*a.csv:3\) but never for train"):
        csvlist.read(FormatOptions(tiny_dataset, annotations=(str(tmp_path / "a.csv"),)))


def test_prepare_config_checks_the_csv_options(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--format csv needs --annotations"):
        PrepareConfig(format="csv", root=tmp_path)
    with pytest.raises(UserError, match="--annotations is read by --format csv only"):
        PrepareConfig(format="folder", root=tmp_path, annotations=("a.csv",))
    with pytest.raises(UserError, match="--fps must be positive"):
        PrepareConfig(format="folder", root=tmp_path, fps=0)
    assert PrepareConfig(format="csv", root=tmp_path, annotations="a.csv").annotations == ("a.csv",)


def test_config_file_paths_of_annotations_are_relative_to_it(tmp_path: Path) -> None:
    from pipeline.stages.run import load_plan

    (tmp_path / "run.yaml").write_text("workspace: ws\nprepare:\n  format: csv\n  root: data\n"
                                       "  annotations: [train=lists/a.txt, b.csv]\n  classes: names.txt\n")
    plan = load_plan(tmp_path / "run.yaml")
    assert plan.prepare.annotations == (f"train={tmp_path / 'lists/a.txt'}", str(tmp_path / "b.csv"))
    assert plan.prepare.classes == tmp_path / "names.txt"


@settings(max_examples=60, deadline=None, database=None)
@given(data=st.one_of(st.text(max_size=200).map(str.encode), st.binary(max_size=120)),
       header=st.sampled_from(["", "path,label,split\n", "label\tpath\n"]))
def test_fuzz_annotation_files(data: bytes, header: str) -> None:
    """Any bytes: rows, quarantine entries or a one-line UserError, never a crash."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "ann").write_bytes(header.encode() + data)
        try:
            csvlist.read(FormatOptions(Path(d), annotations=(str(Path(d) / "ann"),)))
        except UserError as e:
            assert str(e) and "\n" not in str(e)


# ----------------------------------------------------------------------------- frame folders


def write_frames(folder: Path, count: int, name: str, *, size: tuple[int, int] = (24, 32)) -> None:
    """``count`` flat frames whose grey level is 10 x (frame number), numbered from 1."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        Image.fromarray(np.full((*size, 3), 10 * i, np.uint8)).save(folder / name.format(i))


def test_frame_series_sort_numerically_and_skip_flow() -> None:
    names = ["img_10.jpg", "img_2.jpg", "img_1.jpg", "flow_x_00001.jpg", "flow_x_00002.jpg", "flow_y_00001.jpg",
             "flow_y_00002.jpg", "flow_x_00003.jpg", "cover.jpg", "notes.txt"]
    assert frame_series(names) == ["img_1.jpg", "img_2.jpg", "img_10.jpg"]
    assert frame_series(["x_00002.jpg", "x_00001.jpg"]) == ["x_00001.jpg", "x_00002.jpg"]  # only flow: taken
    assert frame_series(["cover.jpg", "a.txt"]) == []


def test_decoders_read_a_frame_folder(tmp_path: Path) -> None:
    write_frames(tmp_path / "v", 12, "img_{}.jpg")
    info, backend = decoders.probe(tmp_path / "v")
    assert (backend, info.num_frames, info.width, info.height, info.fps) == ("frames", 12, 32, 24, 30.0)
    got = decoders.read(tmp_path / "v", [11, 0, 1, 0], (12, 16))
    assert got.shape == (4, 12, 16, 3) and got.dtype == np.uint8
    assert np.abs(got.mean(axis=(1, 2, 3)) - [120, 10, 20, 10]).max() < 3  # numeric, not lexical, order
    with pytest.raises(decoders.DecodeError, match="frame folder: has 12 frames"):
        decoders.read(tmp_path / "v", [12])


def test_frame_folders_in_the_folder_layout(tmp_path: Path, tiny_dataset: Path) -> None:
    """JPEG (img_1.jpg, unpadded) and PNG (00001.png) frame folders next to a group folder of
    videos; an empty folder and one with a broken frame are quarantined with their reason."""
    root = tmp_path / "data"
    for k in range(3):
        write_frames(root / "jpeg" / f"video{k}", 12, "img_{}.jpg")
        write_frames(root / "png" / f"video{k}", 12, "{:05d}.png")
    write_frames(root / "jpeg" / "video0", 3, "flow_x_{:05d}.jpg")  # MMAction2's flow beside the frames
    place(clips(tiny_dataset, "rise")[:1], root / "jpeg" / "group1")  # a group folder: its video is an entry
    (root / "png" / "empty").mkdir()
    write_frames(root / "png" / "broken", 4, "{:05d}.png")
    (root / "png" / "broken" / "00003.png").write_bytes(b"not a png")
    ws, summary = prepare(root, tmp_path, fps=12.5, workers=1)
    assert ws.classes() == ["jpeg", "png"]
    # jpeg: 4 entries → 1 val, 1 test; png: 3 usable → 1 val, 1 test
    assert splits(ws) == {"train": 3, "val": 2, "test": 2}
    rows = {Path(r["path"]).name: r for r in manifest(ws)}
    assert {n: (r["num_frames"], r["fps"], r["decoder"]) for n, r in rows.items() if n.startswith("video")} == \
        {f"video{k}": ("12", "12.5", "frames") for k in range(3)}
    assert rows["rise_000.mp4"]["decoder"] == "pyav"
    reasons = quarantine(ws)
    assert reasons["empty"] == "frame folder: empty"
    assert reasons["broken"].startswith("frame folder: cannot read 00003.png")
    cfg = SamplingConfig(frames=4, short_side=24)
    run_sample(ws, cfg, SampleConfig(workers=0))
    cache = ClipCache(ws.clips_dir(cfg.key))
    for r in manifest(ws):
        if r["decoder"] == "frames" and r["split"] != "train":  # centre of 4 segments: frames 1, 4, 7, 10
            levels = np.asarray(cache.read(r["id"])[0]).mean(axis=(1, 2, 3))
            assert np.abs(levels - [20, 50, 80, 110]).max() < 3


def test_frame_folders_in_a_rawframe_list(tmp_path: Path) -> None:
    """MMAction2's rawframe annotation (``<frame folder> <frame count> <label>``)."""
    root = tmp_path / "rawframes"
    lines = []
    for label in ("a", "b"):
        for k in range(3):
            write_frames(root / label / f"v{k}", 6, "img_{:05d}.jpg", size=(8, 8))
            lines.append(f"{label}/v{k} 6 {label}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\nb/missing 6 b\n")
    ws, summary = prepare(root, tmp_path, format="csv", annotations=(str(tmp_path / "list.txt"),))
    assert ws.classes() == ["a", "b"]
    assert splits(ws) == {"train": 2, "val": 2, "test": 2}
    assert {r["decoder"] for r in manifest(ws)} == {"frames"} and {r["fps"] for r in manifest(ws)} == {"30.0"}
    assert quarantine(ws) == {"missing": "listed in annotations but missing on disk"}
