"""Something-Something v2 with its official JSON annotations.

``--splits`` is the annotation folder with ``labels.json`` (``{"<template>": "<index>"}``),
``train.json`` and ``validation.json`` (lists of ``{"id", "label", "template",
"placeholders"}``). Without ``--splits`` the reader looks for ``labels.json`` in
``root/labels``, ``root/../labels``, ``root`` and ``root/..``.

The label is the template with its brackets removed (``Putting [something] on
[something]`` → ``Putting something on something``), matched against the keys of
``labels.json`` after the same normalisation (and ignoring case and extra spaces);
the ``labels.json`` spelling is the label string.

Split mapping: ``train.json`` → train, ``validation.json`` → **test**. The labels of
the official test set are not public, so the validation set is what everybody
reports on; the prepare stage carves a val split from train. ``test.json`` is ignored.

Videos are ``root/<id>.webm`` (any video extension, any depth below root), found by
stem from one scan of the root.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.data.formats.base import FormatOptions, FormatResult, Row
from pipeline.data.formats.common import require_root
from pipeline.data.formats.kinetics import index_videos_by_stem
from pipeline.errors import UserError

ANNOTATIONS = (("train.json", "train"), ("validation.json", "test"))
MISSING = "listed in annotations but missing on disk"


def read(opts: FormatOptions) -> FormatResult:
    """Rows of ``train.json`` (train) and ``validation.json`` (test); ``opts.fold`` is unused."""
    root, splits = Path(opts.root), opts.splits
    require_root(root)
    folder = _find_annotations(root, Path(splits) if splits else None)
    labels = _read_labels(folder / "labels.json")
    videos = index_videos_by_stem(root)
    result = FormatResult(carve=("val",))
    for name, split in ANNOTATIONS:
        for video_id, label in _read_annotations(folder / name, labels):
            found = videos.get(video_id)
            if found:
                result.rows.append(Row(path=found[0], label=label, split=split))
            else:
                result.quarantined.append((str(root / f"{video_id}.webm"), MISSING))
    return result


def strip_brackets(template: str) -> str:
    """``"Putting [something] on  [something]"`` → ``"Putting something on something"``."""
    return " ".join(template.replace("[", "").replace("]", "").split())


def _key(template: str) -> str:
    # labels.json spells templates without brackets, the lists with them; case and
    # spacing are ignored as well so that hand-edited annotation files still match.
    return strip_brackets(template).casefold()


def _find_annotations(root: Path, splits: Path | None) -> Path:
    beside = [root / "labels", root.parent / "labels", root, root.parent]
    candidates = [splits] if splits is not None else beside
    for folder in candidates:
        if (folder / "labels.json").is_file():
            return folder
    if splits is not None:
        raise UserError(f"--splits {splits} has no labels.json (expected the SSv2 annotation folder)")
    raise UserError(f"no SSv2 labels.json found in or beside {root}; pass --splits <annotation folder>")


def _read_labels(file: Path) -> dict[str, str]:
    """Match key → label as spelled in ``labels.json`` (brackets removed)."""
    data = _load_json(file)
    if not isinstance(data, dict) or not data:
        raise UserError(f'{file}: expected a JSON object {{"<template>": "<index>"}}')
    return {_key(template): strip_brackets(template) for template in data}


def _read_annotations(file: Path, labels: dict[str, str]) -> list[tuple[str, str]]:
    """``(video id, label)`` of every entry of one annotation list."""
    data = _load_json(file)
    if not isinstance(data, list):
        raise UserError(f'{file}: expected a JSON list of {{"id", "template", ...}} entries')
    return [_parse_entry(entry, labels, f"{file}: entry {i}") for i, entry in enumerate(data)]


def _parse_entry(entry: Any, labels: dict[str, str], at: str) -> tuple[str, str]:
    if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("template"), str):
        raise UserError(f'{at}: expected an object with "id" and "template"')
    label = labels.get(_key(entry["template"]))
    if label is None:
        raise UserError(f"{at} (id {entry['id']}): template {entry['template']!r} is not in labels.json")
    return str(entry["id"]).strip(), label


def _load_json(file: Path) -> Any:
    if not file.is_file():
        raise UserError(f"annotation file {file} does not exist")
    try:
        return json.loads(file.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        raise UserError(f"{file}: not a UTF-8 text file ({err.reason} at byte {err.start})") from err
    except json.JSONDecodeError as err:
        raise UserError(f"{file}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from err
