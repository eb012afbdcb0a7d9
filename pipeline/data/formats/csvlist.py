"""``--format csv``: a dataset described by annotation files, paths relative to ``--root``.

Each ``--annotations`` value is ``[SPLIT=]FILE`` (repeat the option for several files):

* a CSV whose first line is a header with ``path`` and ``label`` columns and optionally
  ``split`` (comma-, tab- or semicolon-separated, any column order, other columns ignored); or
* a headerless list, one ``<path> <label>`` per line (MMAction2's video lists), or
  ``<frame folder> <frame count> <label>`` (MMAction2's rawframe lists; the count is ignored:
  every entry is probed).

``SPLIT=`` (``train=``, ``val=``, ``test=`` and the folder aliases) gives every row of that file
its split; a row's own ``split`` value must then agree. Rows with no split join the train pool, and
the splits no row names are carved from that pool by prepare (stratified), so ``train=a.txt
test=b.txt`` carves only val, and a lone unsplit list carves val and test.

Labels are class names, or integers when ``--classes FILE`` maps them: one name per line
(line 1 is label 0), or ``<index> <name>`` lines (UCF101's ``classInd.txt``).

A path that leaves the root (absolute, ``..``, or a symlink out of it) is quarantined with the
reason and never opened. A path listed twice is an error naming both lines.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.formats.base import SPLIT_ALIASES, FormatOptions, FormatResult, Row
from pipeline.data.formats.common import require_root
from pipeline.errors import UserError

MISSING = "listed in annotations but missing on disk"
_PREFIX = re.compile(r"^([A-Za-z]+)=(.+)$")
_INDEXED = re.compile(r"^(\d+)[\s,]+(\S.*)$")


@dataclass(frozen=True)
class Entry:
    """One annotation row as written, with where it was written (``file:line``)."""

    path: str
    label: str
    split: str
    where: str


def parse_spec(spec: str) -> tuple[str, Path]:
    """``"train=a.csv"`` → ``("train", Path("a.csv"))``; ``"a.csv"`` → ``("", Path("a.csv"))``."""
    m = _PREFIX.match(spec)
    if m and m.group(1).lower() in SPLIT_ALIASES:
        return SPLIT_ALIASES[m.group(1).lower()], Path(m.group(2)).expanduser()
    return "", Path(spec).expanduser()


def _read_text(file: Path, what: str) -> list[str]:
    if not file.is_file():
        raise UserError(f"{what} {file} does not exist")
    try:
        return file.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise UserError(f"{file}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None


def _split_value(value: str, where: str) -> str:
    value = value.strip()
    if value and value.lower() not in SPLIT_ALIASES:
        raise UserError(f"{where}: split {value!r} is not train, val or test")
    return SPLIT_ALIASES.get(value.lower(), "")


def read_annotations(file: Path, split: str = "") -> list[Entry]:
    """The entries of one annotation file (CSV with a header, or a whitespace list)."""
    lines = _read_text(file, "annotation file")
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise UserError(f"{file}: no entries")
    header, delimiter = _header(numbered[0][1])
    if "path" in header and "label" in header:
        entries = _read_csv(file, numbered[1:], header, delimiter)
    elif "path" in header or "label" in header:
        raise UserError(f"{file}:{numbered[0][0]}: the header needs both a 'path' and a 'label' column "
                        f"(got {', '.join(c for c in header if c)})")
    else:
        entries = _read_list(file, numbered)
    if not entries:  # a header and nothing else
        raise UserError(f"{file}: no entries below the header")
    if split:  # the SPLIT= prefix: every row is in that split
        for e in entries:
            if e.split and e.split != split:
                raise UserError(f"{e.where}: split {e.split!r} contradicts {split}={file}")
        entries = [Entry(e.path, e.label, split, e.where) for e in entries]
    return entries


def _header(first: str) -> tuple[list[str], str]:
    """The first line's cells (lower-cased) and delimiter: comma, tab or semicolon (spreadsheets in many
    locales), the one that makes a header with ``path`` and ``label`` (ties: comma)."""
    headers = {d: [c.strip().lower() for c in next(csv.reader([first], delimiter=d))] for d in (",", "\t", ";")}
    delimiter = max(headers, key=lambda d: ("path" in headers[d]) + ("label" in headers[d]))
    return headers[delimiter], delimiter


def read_paths(file: Path) -> list[Path]:
    """The inputs a list file names (``vtl predict``): a CSV with a ``path`` column (other columns
    ignored), or one entry per line whose first field is the path (so annotation lists work as they
    are). Relative paths start from the list file's folder."""
    numbered = [(n, line) for n, line in enumerate(_read_text(file, "input list"), start=1) if line.strip()]
    if not numbered:
        raise UserError(f"{file}: no entries")
    header, delimiter = _header(numbered[0][1])
    if "path" in header:
        column = header.index("path")
        rows = [next(csv.reader([line], delimiter=delimiter)) for _, line in numbered[1:]]
        paths = [row[column].strip() for row in rows if len(row) > column and row[column].strip()]
    else:
        paths = [line.split()[0] for _, line in numbered]
    return [file.parent / Path(p).expanduser() for p in paths]


def _read_csv(file: Path, numbered: list[tuple[int, str]], header: list[str], delimiter: str) -> list[Entry]:
    col = {name: header.index(name) for name in ("path", "label", "split") if name in header}
    entries = []
    for lineno, line in numbered:
        where = f"{file}:{lineno}"
        try:
            fields = next(csv.reader([line], delimiter=delimiter))
        except csv.Error as e:
            raise UserError(f"{where}: not a CSV row ({e})") from None
        if len(fields) <= max(col["path"], col["label"]):
            raise UserError(f"{where}: expected {len(header)} columns ({', '.join(header)}), got {len(fields)}")
        path, label = fields[col["path"]].strip(), fields[col["label"]].strip()
        if not path or not label:
            raise UserError(f"{where}: empty {'path' if not path else 'label'}")
        split = _split_value(fields[col["split"]], where) if "split" in col and col["split"] < len(fields) else ""
        entries.append(Entry(path, label, split, where))
    return entries


def _read_list(file: Path, numbered: list[tuple[int, str]]) -> list[Entry]:
    entries = []
    for lineno, line in numbered:
        fields = line.split()
        if len(fields) == 3 and fields[1].isdigit():  # MMAction2 rawframes: <dir> <frames> <label>
            fields = [fields[0], fields[2]]
        if len(fields) != 2:
            raise UserError(f"{file}:{lineno}: expected '<path> <label>' or '<frame folder> <frame count> <label>' "
                            f"(or a CSV with a header row path,label[,split]), got {line.strip()!r}")
        entries.append(Entry(fields[0], fields[1], "", f"{file}:{lineno}"))
    return entries


def read_classes(file: Path) -> dict[int, str]:
    """Label index → class name from ``--classes``: plain names (0-based) or ``<index> <name>`` lines."""
    lines = [(n, line.strip()) for n, line in enumerate(_read_text(file, "--classes file"), start=1) if line.strip()]
    if not lines:
        raise UserError(f"{file}: no class names")
    indexed = all(_INDEXED.match(line) for _, line in lines)
    classes: dict[int, str] = {}
    for k, (lineno, line) in enumerate(lines):
        m = _INDEXED.match(line) if indexed else None
        index, name = (int(m.group(1)), m.group(2).strip()) if m else (k, line)
        if index in classes:
            raise UserError(f"{file}:{lineno}: label {index} is listed twice")
        if name in classes.values():
            raise UserError(f"{file}:{lineno}: class {name!r} is listed twice")
        classes[index] = name
    return classes


def _labels(entries: list[Entry], classes_file: Path | None) -> list[str]:
    """Each entry's class name: as written, or its integer mapped through ``--classes``."""
    if classes_file is None:
        if all(e.label.lstrip("-").isdigit() for e in entries):
            raise UserError(f"the labels are numbers ({entries[0].where}: {entries[0].label}): pass --classes FILE "
                            "with one class name per line (line 1 is label 0)")
        return [e.label for e in entries]
    classes = read_classes(classes_file)
    names = set(classes.values())
    out = []
    for e in entries:
        if e.label.lstrip("-").isdigit() and int(e.label) in classes:
            out.append(classes[int(e.label)])
        elif e.label in names:
            out.append(e.label)
        else:
            raise UserError(f"{e.where}: label {e.label!r} is not in --classes {classes_file} "
                            f"(labels {min(classes)}..{max(classes)} or a listed name)")
    return out


def _inside(root: str, rel: str) -> tuple[str, str]:
    """``(normalised path, "")`` for a path inside ``root``, else ``(path, why it is outside)``.

    Decided from the path string and the links along it (``realpath`` reads links, never
    opens the file), so an escaping entry is never read.
    """
    if os.path.isabs(rel) or rel.startswith("~"):
        return rel, "outside --root: an absolute path (paths must be relative to --root)"
    full = os.path.normpath(os.path.join(root, rel))
    if os.path.commonpath([root, full]) != root:
        return full, "outside --root: '..' leads out of it"
    real = os.path.realpath(full)
    if os.path.commonpath([os.path.realpath(root), real]) != os.path.realpath(root):
        return full, f"outside --root: a symlink leads to {real}"
    return full, ""


def read(opts: FormatOptions) -> FormatResult:
    """Rows of every ``--annotations`` file; see the module doc for the rules."""
    root = Path(opts.root)
    require_root(root)
    if not opts.annotations:
        raise UserError("format csv needs --annotations FILE (a path,label[,split] CSV or '<path> <label>' lines)")
    entries: list[Entry] = []
    for spec in opts.annotations:
        split, file = parse_spec(spec)
        entries += read_annotations(file, split)
    labels = _labels(entries, opts.classes)
    result = FormatResult()
    first_seen: dict[str, str] = {}
    root_str = os.path.normpath(str(root))
    for entry, label in zip(entries, labels, strict=True):
        full, outside = _inside(root_str, entry.path)
        if full in first_seen:
            raise UserError(f"{entry.path} is listed twice: {first_seen[full]} and {entry.where}")
        first_seen[full] = entry.where
        if outside:
            result.quarantined.append((full, outside))
        elif not os.path.exists(full):
            result.quarantined.append((full, MISSING))
        else:
            result.rows.append(Row(path=Path(full), label=label, split=entry.split))
    _check_train_has_every_class(entries, labels)
    named = {e.split for e in entries}
    result.carve = tuple(s for s in ("val", "test") if s not in named)
    given = ", ".join(s for s in ("train", "val", "test") if s in named) or "none"
    carved = f"; {' and '.join(result.carve)} carved from train and unsplit rows" if result.carve else ""
    result.layout = (f"annotations ({len(entries)} rows in {len(opts.annotations)} file(s)): "
                     f"splits given: {given}{carved}")
    return result


def _check_train_has_every_class(entries: list[Entry], labels: list[str]) -> None:
    """A class listed only for val/test could never be learned: say which row names it."""
    trained = {label for e, label in zip(entries, labels, strict=True) if e.split in ("", "train")}
    for e, label in zip(entries, labels, strict=True):
        if label not in trained:
            raise UserError(f"class {label!r} is listed for {e.split} ({e.where}) but never for train: "
                            "every class needs training examples")
