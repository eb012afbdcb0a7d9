"""Dataset-format readers: small fixture trees of empty files (readers never decode)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pipeline.data.formats import FORMATS, FormatOptions, hmdb51, kinetics, ssv2, ucf101
from pipeline.errors import UserError


def touch(root: Path, *rels: str) -> None:
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def write_lines(file: Path, lines: list[str], crlf: bool = False, bom: bool = False) -> Path:
    """Write a list file the way the official archives do (CRLF, trailing blank line)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    eol = "\r\n" if crlf else "\n"
    text = eol.join(lines) + eol + eol
    file.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return file


def summary(result) -> set[tuple[str, str, str]]:
    return {(row.path.name, row.label, row.split) for row in result.rows}


def test_registry_lists_every_format() -> None:
    for name in ("folder", "ucf101", "hmdb51", "kinetics", "ssv2"):
        assert FORMATS[name].name == name
        assert FORMATS[name].media == "video"


@pytest.mark.parametrize("module", [ucf101, hmdb51, kinetics, ssv2])
def test_missing_root_is_a_user_error(tmp_path: Path, module) -> None:
    with pytest.raises(UserError, match="does not exist"):
        module.read(FormatOptions(tmp_path / "nope", tmp_path))


# -- UCF101 -------------------------------------------------------------------------------


def make_ucf_splits(folder: Path) -> Path:
    write_lines(folder / "classInd.txt", ["1 ApplyEyeMakeup", "2 HandstandPushups"], crlf=True, bom=True)
    write_lines(
        folder / "trainlist01.txt",
        [
            "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1",
            " HandstandPushups/v_HandStandPushups_g08_c01.avi \t 2 ",  # stray whitespace is fine
        ],
        crlf=True,
    )
    write_lines(folder / "testlist01.txt", ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"], crlf=True)
    write_lines(folder / "trainlist02.txt", ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1"], crlf=True)
    write_lines(
        folder / "testlist02.txt",
        ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "HandstandPushups/v_HandStandPushups_g08_c01.avi"],
        crlf=True,
    )
    write_lines(folder / "trainlist03.txt", [])  # empty lists parse to no rows
    write_lines(folder / "testlist03.txt", [])
    return folder


@pytest.mark.parametrize("hsp_folder", ["HandstandPushups", "HandStandPushups"])
def test_ucf101_reads_fold_with_case_insensitive_paths(tmp_path: Path, hsp_folder: str) -> None:
    root = tmp_path / "UCF-101"
    touch(
        root,
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
        f"{hsp_folder}/v_HandStandPushups_g08_c01.avi",
    )
    splits = make_ucf_splits(tmp_path / "ucfTrainTestlist")

    result = ucf101.read(FormatOptions(root, splits, fold=1))

    assert summary(result) == {
        ("v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup", "train"),
        ("v_HandStandPushups_g08_c01.avi", "HandstandPushups", "train"),  # classInd spelling
        ("v_ApplyEyeMakeup_g01_c01.avi", "ApplyEyeMakeup", "test"),
    }
    assert all(row.path.is_file() for row in result.rows)  # the real on-disk path, not the listed one
    assert result.quarantined == []


def test_ucf101_fold_selects_the_lists(tmp_path: Path) -> None:
    root = tmp_path / "UCF-101"
    touch(root, "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi")
    splits = make_ucf_splits(tmp_path / "ucfTrainTestlist")

    result = ucf101.read(FormatOptions(root, splits, fold=2))

    assert summary(result) == {
        ("v_ApplyEyeMakeup_g01_c01.avi", "ApplyEyeMakeup", "train"),
        ("v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup", "test"),
    }
    assert result.quarantined == [
        (str(root / "HandstandPushups/v_HandStandPushups_g08_c01.avi"), ucf101.MISSING)
    ]
    assert ucf101.read(FormatOptions(root, splits, fold=3)).rows == []


@pytest.mark.parametrize("fold", [0, 4])
def test_ucf101_rejects_unknown_fold(tmp_path: Path, fold: int) -> None:
    splits = make_ucf_splits(tmp_path / "ucfTrainTestlist")
    (tmp_path / "root").mkdir()
    with pytest.raises(UserError, match="--fold"):
        ucf101.read(FormatOptions(tmp_path / "root", splits, fold=fold))


def test_ucf101_finds_split_folder_inside_or_beside_root(tmp_path: Path) -> None:
    root = tmp_path / "UCF-101"
    touch(root, "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi")
    make_ucf_splits(root / "ucfTrainTestlist")
    assert len(ucf101.read(FormatOptions(root)).rows) == 1

    other = tmp_path / "other"
    make_ucf_splits(other / "ucfTrainTestlist")
    touch(other / "UCF-101", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi")
    assert len(ucf101.read(FormatOptions(other / "UCF-101")).rows) == 1
    # --splits may name the folder above ucfTrainTestlist too.
    assert len(ucf101.read(FormatOptions(other / "UCF-101", other)).rows) == 1


def test_ucf101_without_split_folder_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "UCF-101").mkdir()
    with pytest.raises(UserError, match="ucfTrainTestlist"):
        ucf101.read(FormatOptions(tmp_path / "UCF-101"))
    with pytest.raises(UserError, match="classInd.txt"):
        ucf101.read(FormatOptions(tmp_path / "UCF-101", tmp_path))


def test_ucf101_missing_list_file_is_a_user_error(tmp_path: Path) -> None:
    splits = make_ucf_splits(tmp_path / "ucfTrainTestlist")
    (splits / "testlist01.txt").unlink()
    (tmp_path / "root").mkdir()
    with pytest.raises(UserError, match="testlist01.txt does not exist"):
        ucf101.read(FormatOptions(tmp_path / "root", splits))


def test_ucf101_unparseable_line_names_file_and_line(tmp_path: Path) -> None:
    splits = make_ucf_splits(tmp_path / "ucfTrainTestlist")
    lines = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1", "oops"]
    write_lines(splits / "trainlist01.txt", lines, crlf=True)
    (tmp_path / "root").mkdir()
    with pytest.raises(UserError, match=r"trainlist01\.txt:2: expected '<path> <label index>'"):
        ucf101.read(FormatOptions(tmp_path / "root", splits))


def test_ucf101_unknown_label_index_is_a_user_error(tmp_path: Path) -> None:
    splits = make_ucf_splits(tmp_path / "ucfTrainTestlist")
    write_lines(splits / "trainlist01.txt", ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 7"])
    (tmp_path / "root").mkdir()
    with pytest.raises(UserError, match=r"trainlist01\.txt:1: label index '7'"):
        ucf101.read(FormatOptions(tmp_path / "root", splits))


@pytest.mark.shared
def test_ucf101_official_lists(shared_data: Path, tmp_path: Path) -> None:
    splits = shared_data / "videos" / "ucf101_splits" / "ucfTrainTestlist"
    train = [ln.split()[0] for ln in (splits / "trainlist01.txt").read_text().splitlines() if ln.strip()]
    test = [ln.split()[0] for ln in (splits / "testlist01.txt").read_text().splitlines() if ln.strip()]
    assert (len(train), len(test)) == (9537, 3783)
    handstand = next(rel for rel in train if "v_HandStandPushups_" in rel)
    present = {train[0]: "train", handstand: "train", test[0]: "test", test[-1]: "test"}
    root = tmp_path / "UCF-101"
    touch(root, *present)  # empty files named as the official lists name them

    result = ucf101.read(FormatOptions(root, splits, fold=1))

    assert {row.path.relative_to(root).as_posix(): row.split for row in result.rows} == present
    assert {row.label for row in result.rows if "HandStand" in row.path.name} == {"HandstandPushups"}
    assert len(result.rows) + len(result.quarantined) == 9537 + 3783
    assert Counter(reason for _, reason in result.quarantined) == {ucf101.MISSING: 9537 + 3783 - 4}


# -- HMDB51 -------------------------------------------------------------------------------


def make_hmdb_splits(folder: Path) -> Path:
    write_lines(
        folder / "brush_hair_test_split1.txt",
        [
            "a_brush_hair_0.avi 1 ",
            "b_brush_hair_0.avi 2 ",
            "c_brush_hair_0.avi 0 ",
            "gone_brush_hair_0.avi 1",
        ],
        crlf=True,
    )
    write_lines(folder / "brush_hair_test_split2.txt", ["a_brush_hair_0.avi 2", "b_brush_hair_0.avi 0"])
    write_lines(folder / "cartwheel_test_split1.txt", ["x_cartwheel_0.avi 1", "y_cartwheel_0.avi 0"])
    return folder


def test_hmdb51_codes_classes_and_quarantine(tmp_path: Path) -> None:
    root = tmp_path / "hmdb51"
    # Re-encoded copies keep the stem: b_... listed as .avi is found as .mp4.
    touch(root, "brush_hair/a_brush_hair_0.avi", "brush_hair/b_brush_hair_0.mp4")
    touch(root, "brush_hair/c_brush_hair_0.avi")
    splits = make_hmdb_splits(tmp_path / "testTrainMulti_7030_splits")

    result = hmdb51.read(FormatOptions(root, splits, fold=1))

    assert summary(result) == {
        ("a_brush_hair_0.avi", "brush_hair", "train"),
        ("b_brush_hair_0.mp4", "brush_hair", "test"),
    }  # code 0 (c_...) is not used in this fold
    assert sorted(result.quarantined) == [
        (str(root / "brush_hair/gone_brush_hair_0.avi"), hmdb51.MISSING),
        (str(root / "cartwheel/x_cartwheel_0.avi"), "class folder missing"),
    ]


def test_hmdb51_fold_selects_split_files(tmp_path: Path) -> None:
    root = tmp_path / "hmdb51"
    touch(root, "Brush_Hair/a_brush_hair_0.avi")  # class folder matched case-insensitively
    make_hmdb_splits(root / "testTrainMulti_7030_splits")  # found inside root without --splits

    result = hmdb51.read(FormatOptions(root, fold=2))

    assert summary(result) == {("a_brush_hair_0.avi", "brush_hair", "test")}
    assert result.quarantined == []


def test_hmdb51_bad_code_names_file_and_line(tmp_path: Path) -> None:
    splits = make_hmdb_splits(tmp_path / "splits")
    write_lines(splits / "cartwheel_test_split1.txt", ["x_cartwheel_0.avi 1", "y_cartwheel_0.avi 3"])
    (tmp_path / "root").mkdir()
    with pytest.raises(UserError, match=r"cartwheel_test_split1\.txt:2: expected '<video name> <0\|1\|2>'"):
        hmdb51.read(FormatOptions(tmp_path / "root", splits))


def test_hmdb51_without_split_files_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="testTrainMulti_7030_splits"):
        hmdb51.read(FormatOptions(tmp_path / "root"))
    with pytest.raises(UserError, match="_test_split"):
        hmdb51.read(FormatOptions(tmp_path / "root", tmp_path / "empty"))


# -- Kinetics -----------------------------------------------------------------------------

KINETICS_CSV = [
    "label,youtube_id,time_start,time_end,split",
    "abseiling,--07WQ2iBlw,1,11,train",
    '"passing American football (in game)",Abc_DEF-123,14.0,24.0,validate',
    "abseiling,zzzzzzzzzzz,5,15,test",
    "abseiling,missing0000,0,10,train",
    "   ",
]


def test_kinetics_namings_split_mapping_and_quarantine(tmp_path: Path) -> None:
    root = tmp_path / "k400"
    touch(
        root,
        "train/abseiling/--07WQ2iBlw_000001_000011.mp4",  # downloader naming under root/<split>/<label>/
        "passing_American_football_(in_game)/Abc_DEF-123.mkv",  # plain <ytid> under root/<label>/
        "test/abseiling/zzzzzzzzzzz_000005_000015.webm",
        "train/abseiling/abc_def-123.mp4",  # YouTube ids are case-sensitive: not a match
    )
    csv_file = write_lines(tmp_path / "kinetics400.csv", KINETICS_CSV, crlf=True, bom=True)

    result = kinetics.read(FormatOptions(root, csv_file))

    assert summary(result) == {
        ("--07WQ2iBlw_000001_000011.mp4", "abseiling", "train"),
        ("Abc_DEF-123.mkv", "passing American football (in game)", "val"),
        ("zzzzzzzzzzz_000005_000015.webm", "abseiling", "test"),
    }
    assert result.quarantined == [
        (str(root / "train/abseiling/missing0000_000000_000010.mp4"), "listed in CSV but missing on disk")
    ]


def test_kinetics_reads_a_folder_of_csvs_and_prefers_the_label_folder(tmp_path: Path) -> None:
    root = tmp_path / "k400"
    touch(root, "archery/same_id.mp4", "abseiling/same_id.mp4")
    folder = tmp_path / "annotations"
    write_lines(
        folder / "train.csv",
        ["label,youtube_id,time_start,time_end,split,is_cc", "abseiling,same_id,0,10,train,0"],
    )
    write_lines(
        folder / "validate.csv", ["youtube_id,label,split,time_start,time_end", "same_id,archery,val,3,13"]
    )

    result = kinetics.read(FormatOptions(root, folder))

    assert {(row.path.parent.name, row.label, row.split) for row in result.rows} == {
        ("abseiling", "abseiling", "train"),
        ("archery", "archery", "val"),
    }


def test_kinetics_needs_splits(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--splits"):
        kinetics.read(FormatOptions(tmp_path))
    with pytest.raises(UserError, match="not a Kinetics annotation CSV"):
        kinetics.read(FormatOptions(tmp_path, tmp_path / "nope.csv"))


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("abseiling,xyz,1,11", r":3: expected 5 comma-separated fields"),
        ("abseiling,xyz,1,11,holdout", r":3: split 'holdout'"),
        ("abseiling,xyz,start,11,train", r":3: time_start/time_end"),
    ],
)
def test_kinetics_bad_row_names_file_and_line(tmp_path: Path, bad_line: str, message: str) -> None:
    csv_file = write_lines(tmp_path / "k.csv", KINETICS_CSV[:2] + [bad_line])
    with pytest.raises(UserError, match=r"k\.csv" + message):
        kinetics.read(FormatOptions(tmp_path, csv_file))


def test_kinetics_bad_header_is_a_user_error(tmp_path: Path) -> None:
    csv_file = write_lines(tmp_path / "k.csv", ["youtube_id,start,end", "abc,1,2"])
    with pytest.raises(UserError, match=r"k\.csv:1: header lacks label"):
        kinetics.read(FormatOptions(tmp_path, csv_file))


# -- Something-Something v2 ---------------------------------------------------------------


def make_ssv2_annotations(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    labels = {"Putting something on a surface": "0", "Putting something onto something": "1"}
    train = [
        {
            "id": "1",
            "label": "putting a cup on a table",
            "template": "Putting [something] on a surface",
            "placeholders": ["a cup"],
        },
        {
            "id": "2",
            "label": "putting a pen onto a book",
            "template": "Putting [something] onto [something]",
            "placeholders": ["a pen", "a book"],
        },
    ]
    validation = [
        {"id": "3", "label": "x", "template": "putting [something]  onto [something]", "placeholders": []},
        {"id": "4", "label": "y", "template": "Putting [something] on a surface", "placeholders": []},
    ]
    (folder / "labels.json").write_text(json.dumps(labels))
    (folder / "train.json").write_text(json.dumps(train, indent=1))
    (folder / "validation.json").write_text(json.dumps(validation, indent=1))
    (folder / "test.json").write_text("not even json")  # ignored: test labels are not public
    return folder


def test_ssv2_labels_and_splits(tmp_path: Path) -> None:
    root = tmp_path / "20bn-something-something-v2"
    touch(root, "1.webm", "2.webm", "3.mp4")
    annotations = make_ssv2_annotations(tmp_path / "labels")  # found beside root without --splits

    result = ssv2.read(FormatOptions(root))

    assert summary(result) == {
        ("1.webm", "Putting something on a surface", "train"),
        ("2.webm", "Putting something onto something", "train"),
        ("3.mp4", "Putting something onto something", "test"),  # validation.json -> test
    }
    assert result.quarantined == [(str(root / "4.webm"), "listed in annotations but missing on disk")]
    assert summary(ssv2.read(FormatOptions(root, annotations))) == summary(result)


def test_ssv2_unknown_template_is_a_user_error(tmp_path: Path) -> None:
    folder = make_ssv2_annotations(tmp_path / "labels")
    (folder / "train.json").write_text(json.dumps([{"id": "9", "template": "Dropping [something]"}]))
    with pytest.raises(UserError, match=r"train\.json: entry 0 \(id 9\): template 'Dropping \[something\]'"):
        ssv2.read(FormatOptions(tmp_path, folder))


def test_ssv2_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    folder = make_ssv2_annotations(tmp_path / "labels")
    (folder / "validation.json").write_text('[\n{"id": "3",\n "template": }\n]')
    with pytest.raises(UserError, match=r"validation\.json:3: not valid JSON"):
        ssv2.read(FormatOptions(tmp_path, folder))


def test_ssv2_missing_annotations_is_a_user_error(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    root.mkdir()
    with pytest.raises(UserError, match="labels.json"):
        ssv2.read(FormatOptions(root))
    folder = make_ssv2_annotations(tmp_path / "ann")
    (folder / "validation.json").unlink()
    with pytest.raises(UserError, match="validation.json does not exist"):
        ssv2.read(FormatOptions(root, folder))
