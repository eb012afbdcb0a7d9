"""Kinetics (400/600/700) with its official annotation CSV.

``--splits`` is the CSV (``label,youtube_id,time_start,time_end,split`` with a header
row; extra columns such as ``is_cc`` are ignored), or a folder whose ``*.csv`` files are
all read (the official release ships ``train.csv``, ``validate.csv``, ``test.csv``).
Split values ``train``/``val``/``validate``/``test`` map to train/val/val/test.

Clips may be named ``<ytid>_<start:06d>_<end:06d>.<ext>`` (the usual downloader) or
plain ``<ytid>.<ext>``, with any video extension, in ``root/<split>/<label>/``,
``root/<label>/`` or anywhere else below root: files are found by stem from one scan
of the root, since a stat per row is slow at 300k rows. Stems are matched exactly
because YouTube ids are case-sensitive.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from pipeline.data.formats.base import FormatOptions, FormatResult, Row
from pipeline.data.formats.common import require_root, walk_videos
from pipeline.errors import UserError

COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
SPLIT_NAMES = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}
MISSING = "listed in CSV but missing on disk"


class Clip(NamedTuple):
    label: str
    youtube_id: str
    start: int
    end: int
    split: str

    @property
    def stem(self) -> str:
        return f"{self.youtube_id}_{self.start:06d}_{self.end:06d}"


def read(opts: FormatOptions) -> FormatResult:
    """Rows for every clip of the CSV(s) in ``opts.splits``; ``opts.fold`` is unused."""
    root, splits = Path(opts.root), opts.splits
    require_root(root)
    if splits is None:
        raise UserError("format kinetics needs --splits <annotation CSV or folder of CSVs>")
    csv_files = _csv_files(Path(splits))
    videos = index_videos_by_stem(root)
    result = FormatResult()
    listed: set[str] = set()
    for file in csv_files:
        for clip in read_csv(file):
            listed.add(clip.split)
            stem = clip.stem
            path = _pick(videos.get(stem) or videos.get(clip.youtube_id) or [], clip)
            if path is None:
                # Plain string join: building Path objects for ~300k missing clips costs seconds.
                where = os.path.join(root, clip.split, clip.label, f"{stem}.mp4")
                result.quarantined.append((where, MISSING))
            else:
                result.rows.append(Row(path=path, label=clip.label, split=clip.split))
    # The CSVs given define their splits (even if every file of one is missing); only val
    # is ever carved (a lone train.csv), as the test split of Kinetics is its own download.
    result.carve = () if "val" in listed else ("val",)
    return result


def index_videos_by_stem(root: Path) -> dict[str, list[Path]]:
    """Every video file below ``root`` keyed by its file stem (one scan, no per-row stat)."""
    videos: dict[str, list[Path]] = {}
    for path in walk_videos(root):
        videos.setdefault(path.stem, []).append(path)
    return videos


def read_csv(file: Path) -> Iterator[Clip]:
    """Parse one annotation CSV; a malformed line is a :class:`UserError` naming it."""
    try:
        with open(file, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = [cell.strip().lower() for cell in next(reader, [])]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise UserError(f"{file}:1: header lacks {', '.join(missing)} (expected {','.join(COLUMNS)})")
            where = tuple(header.index(c) for c in COLUMNS)
            for cells in reader:
                if len(cells) > 1 or (cells and cells[0].strip()):  # skip blank / whitespace-only lines
                    yield _parse_row(cells, where, len(header), file, reader.line_num)
    except UnicodeDecodeError as err:
        raise UserError(f"{file}: not a UTF-8 text file ({err.reason} at byte {err.start})") from err
    except csv.Error as err:
        raise UserError(f"{file}: not a valid CSV file ({err})") from err


def _parse_row(cells: list[str], where: tuple[int, ...], width: int, file: Path, lineno: int) -> Clip:
    # Runs ~300k times for Kinetics-700: plain indexing, error text built only on failure.
    if len(cells) != width:
        raise UserError(f"{file}:{lineno}: expected {width} comma-separated fields like the header")
    label, ytid, time_start, time_end, split_name = (cells[i].strip() for i in where)
    split = SPLIT_NAMES.get(split_name.lower())
    if split is None:
        raise UserError(f"{file}:{lineno}: split {split_name!r} is not one of {', '.join(SPLIT_NAMES)}")
    if not label or not ytid:
        raise UserError(f"{file}:{lineno}: empty label or youtube_id")
    try:
        # Some CSV versions write times as floats ("14.0"); file names use whole seconds.
        return Clip(label, ytid, int(float(time_start)), int(float(time_end)), split)
    except ValueError:
        raise UserError(f"{file}:{lineno}: time_start/time_end must be numbers") from None


def _csv_files(splits: Path) -> list[Path]:
    if splits.is_file():
        return [splits]
    files = sorted(splits.glob("*.csv")) if splits.is_dir() else []
    if not files:
        raise UserError(f"--splits {splits} is not a Kinetics annotation CSV or a folder of them")
    return files


def _pick(candidates: list[Path], clip: Clip) -> Path | None:
    """The candidate whose folders agree best with the clip's label and split.

    Only matters when one stem occurs twice, e.g. a plain ``<ytid>.mp4`` in two splits.
    """
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    label = _folder_key(clip.label)

    def score(path: Path) -> int:
        folders = [_folder_key(p.name) for p in path.parents]
        return 2 * (label in folders) + any(SPLIT_NAMES.get(f) == clip.split for f in folders)

    return max(candidates, key=score)


def _folder_key(name: str) -> str:
    # Downloaders write "playing guitar" as "playing guitar" or "playing_guitar".
    return name.replace("_", " ").strip().casefold()
