"""``vtl prepare``: dataset on disk → manifest.csv, classes.txt, quarantine.csv.

Every file is probed (frame count, fps, size, and a decode of its first,
middle and last frame) in a process pool with a per-file time limit. Probe
results are cached in the workspace keyed by (path, size, mtime), so a re-run
only probes new or changed files. Files that cannot be used go to
``quarantine.csv`` with the reason; the stage goes on.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.data.decoders.frames_backend import DEFAULT_FPS
from pipeline.data.duplicates import cross_split_duplicates, leak_warning
from pipeline.data.formats import FORMATS
from pipeline.data.formats.base import FormatOptions, Row
from pipeline.data.probe import ProbeCache, probe_rows
from pipeline.data.splits import assign_splits
from pipeline.errors import UserError
from pipeline.files import read_csv, write_csv, write_text
from pipeline.options import check_choices, option
from pipeline.parallel import DEFAULT_WORKERS
from pipeline.progress import echo, warn
from pipeline.sharding import Shard, complete_shards
from pipeline.workspace import Workspace

MANIFEST_COLUMNS = ("id", "path", "label", "split", "num_frames", "fps", "width", "height", "duration", "decoder")


@dataclass(frozen=True)
class PrepareConfig:
    root: Path = option(help="Folder holding the dataset's files.")
    format: str = option("folder", "Dataset layout (see docs/data.md).", choices=tuple(FORMATS))
    splits: Path | None = option(None, "Official split files (UCF101/HMDB51 folder, Kinetics CSV, SSv2 folder).")
    fold: int = option(1, "Official split number (UCF101/HMDB51: 1-3).")
    val_fraction: float = option(0.15, "Share of each class for validation.")
    test_fraction: float = option(0.15, "Share of each class for test (formats without an official test split).")
    seed: int = option(0, "Seed of the stratified split.")
    workers: int = option(DEFAULT_WORKERS, "Probe processes.")
    timeout: float = option(60.0, "Seconds allowed to probe one file (then it is quarantined).")
    annotations: tuple[str, ...] = option(
        (), "csv: an annotation file, [SPLIT=]FILE: a path,label[,split] CSV or '<path> <label>' lines, paths "
            "relative to --root; repeat it for several files (docs/data.md).", multiple=True, metavar="[SPLIT=]FILE")
    classes: Path | None = option(None, "csv: class names for integer labels, one per line (line 1 is label 0), "
                                        "or '<index> <name>' lines (UCF101's classInd.txt).")
    fps: float = option(DEFAULT_FPS, "Frame rate recorded for frame folders (numbered images carry no timing).")

    def __post_init__(self) -> None:
        check_choices(self)
        # One file may come as a plain string (YAML `annotations: a.csv`); keep a tuple of strings.
        given = self.annotations
        object.__setattr__(self, "annotations", (str(given),) if isinstance(given, (str, Path))
                           else tuple(str(a) for a in given))
        if self.format == "csv" and not self.annotations:
            raise UserError("--format csv needs --annotations FILE (a path,label[,split] CSV or '<path> <label>' "
                            "lines; repeat it for several files)")
        for name in ("annotations", "classes"):
            if self.format != "csv" and getattr(self, name):
                raise UserError(f"--{name} is read by --format csv only (this is --format {self.format})")
        if not self.fps > 0:
            raise UserError(f"--fps must be positive, got {self.fps}")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise UserError(f"--{name.replace('_', '-')} must be in [0, 1), got {v}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise UserError("--val-fraction + --test-fraction must leave some data for training")


def video_id(path: Path, root: Path) -> str:
    """A stable id for a file: the cache file name of its clips, and what seeds its clip sampling.
    It hashes the path below the dataset root (:func:`shard_key`), not the absolute path, so the same
    dataset at another place (another machine, a second `vtl demo` folder) samples the same clips."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in path.stem)[:40]
    return f"{stem}-{hashlib.blake2b(shard_key(path, root).encode(), digest_size=6).hexdigest()}"


# ----------------------------------------------------------------------------- the stage


def run_prepare(ws: Workspace, cfg: PrepareConfig, *, shard: Shard | None = None,
                merge: bool = False) -> dict[str, Any]:
    """Prepare ``ws``; with ``shard``, only probe that shard's files; with ``merge``, take the shards' probes.

    Every shard lists the whole dataset (cheap) but probes only its share.
    Splits, quarantine and the class checks need every file's probe, so they
    happen once, at the merge, by the same code as an unsharded run: the two
    give byte-identical files.
    """
    if shard is not None and merge:
        raise UserError("--merge combines the shards' results: run it once, without --shard "
                        "(and without RANK/WORLD_SIZE set)")
    fmt = FORMATS[cfg.format]
    # Absolute paths in the manifest: later stages may run from another directory.
    root = cfg.root.expanduser().resolve()
    result = fmt.read(_format_options(cfg, root))
    if result.layout:
        echo(f"prepare: layout: {result.layout}")
    if not result.rows and not result.quarantined:
        raise UserError(f"no {fmt.media} files found under {cfg.root}")
    ws.root.mkdir(parents=True, exist_ok=True)
    if shard is not None:
        return _prepare_shard(ws, cfg, fmt.media, root, result.rows, shard)
    with ws.lock("prepare"):
        cache = ProbeCache(ws.probe_cache)
        known = _shard_results(ws, cache, result.rows) if merge else {}
        probes = probe_rows(result.rows, fmt.media, cache, cfg.workers, cfg.timeout, known, cfg.fps)
        manifest, quarantine = _usable(result.rows, probes, root)
        quarantine = [{"path": p, "reason": reason} for p, reason in result.quarantined] + quarantine
        write_csv(ws.quarantine, ("path", "reason"), quarantine)
        labels_seen = {r.label for r in result.rows}
        usable = {r["label"] for r in manifest}
        empty = sorted(labels_seen - usable)
        if not manifest:
            raise UserError(f"no usable {fmt.media} under {cfg.root}: all {len(quarantine)} files quarantined "
                            f"(see {ws.quarantine})")
        if empty:
            raise UserError(f"class {empty[0]!r} has no usable {fmt.media}" +
                            (f" (nor {len(empty) - 1} other classes)" if len(empty) > 1 else "") +
                            f"; see {ws.quarantine}")
        warnings = assign_splits(manifest, cfg.val_fraction, cfg.test_fraction, cfg.seed, result.carve)
        warnings += _check_train_classes(manifest, usable, ws)
        leaked = cross_split_duplicates(manifest)
        if leaked:
            warnings.append(leak_warning(leaked))
        classes = sorted(usable)
        manifest.sort(key=lambda r: (r["split"], r["label"], r["path"]))
        write_csv(ws.manifest, MANIFEST_COLUMNS, manifest)
        write_text(ws.classes_file, "".join(c + "\n" for c in classes))
        ws.write_info(media=fmt.media, format=cfg.format, root=str(root),
                      prepare={k: str(v) if isinstance(v, Path) else v for k, v in cfg.__dict__.items()})
        if merge:  # consumed: the merged probes now live in the workspace's probe cache
            for p in ws.prepare_shard_files():
                p.unlink()
    summary = {**_summary(manifest, quarantine, classes), "train_test_duplicates": len(leaked)}
    for w in warnings:
        warn(w)
    return summary


def _format_options(cfg: PrepareConfig, root: Path) -> FormatOptions:
    def absolute(p: Path | None) -> Path | None:
        return p.expanduser().resolve() if p else None

    return FormatOptions(root=root, splits=absolute(cfg.splits), fold=cfg.fold, annotations=cfg.annotations,
                         classes=absolute(cfg.classes))


IMBALANCE = 5  # largest / smallest class in train at which prepare suggests compensating


def _check_train_classes(manifest: list[dict], classes: set[str], ws: Workspace) -> list[str]:
    """Every class needs train files (an error otherwise); a warning when train is imbalanced."""
    counts = Counter(r["label"] for r in manifest if r["split"] == "train")
    untrained = sorted(classes - set(counts))
    if untrained:
        raise UserError(f"class {untrained[0]!r} has no usable train file" +
                        (f" (nor {len(untrained) - 1} other classes)" if len(untrained) > 1 else "") +
                        f": every class needs training examples; see {ws.quarantine}")
    ordered = sorted(counts.items())
    (big, n_big), (small, n_small) = max(ordered, key=lambda kv: kv[1]), min(ordered, key=lambda kv: kv[1])
    if n_big >= IMBALANCE * n_small:
        return [f"classes are imbalanced: {big!r} has {n_big} train files, {small!r} {n_small} "
                f"({n_big / n_small:.1f}x); `vtl train --class-weights auto` or `--sampler balanced` compensates"]
    return []


def _usable(rows: list[Row], probes: list[dict[str, Any]], root: Path) -> tuple[list[dict], list[dict]]:
    """Split probed rows into manifest rows and quarantine rows, keeping their order."""
    manifest: list[dict] = []
    quarantine: list[dict] = []
    for row, probe in zip(rows, probes, strict=True):
        if "error" in probe:
            quarantine.append({"path": str(row.path), "reason": probe["error"]})
        else:
            manifest.append({"id": video_id(row.path, root), "path": str(row.path), "label": row.label,
                             "split": row.split, **probe})
    return manifest, quarantine


# ----------------------------------------------------------------------------- sharding


def shard_key(path: Path, root: Path) -> str:
    """What decides a file's shard: its path below the dataset root (the same on every machine)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _prepare_shard(ws: Workspace, cfg: PrepareConfig, media: str, root: Path, rows: list[Row],
                   shard: Shard) -> dict[str, Any]:
    """Probe this shard's files; write its probes as ``manifest``/``quarantine.shard-I-of-N.csv``."""
    mine = [r for r in rows if shard.owns(shard_key(r.path, root))]
    with ws.lock("prepare", shard):
        # Each shard keeps its own probe cache (shards must not rewrite one file side by side),
        # and reuses the workspace's, filled by an earlier unsharded run or merge.
        cache = ProbeCache(ws.shard_probe_cache(shard))
        merged = ProbeCache(ws.probe_cache)
        known = {str(r.path): hit for r in mine if (hit := merged.get(r.path)) is not None}
        probes = probe_rows(mine, media, cache, cfg.workers, cfg.timeout, known, cfg.fps)
        manifest, quarantine = _usable(mine, probes, root)
        write_csv(ws.shard_manifest(shard), MANIFEST_COLUMNS, manifest)
        write_csv(ws.shard_quarantine(shard), ("path", "reason"), quarantine)  # last: the shard is done
    return {"shard": str(shard), "listed": len(rows), "probed": len(mine), "files": len(manifest),
            "quarantined": len(quarantine), "manifest": str(ws.shard_manifest(shard))}


_PROBE_TYPES = {"num_frames": int, "fps": float, "width": int, "height": int, "duration": float, "decoder": str}


def _shard_results(ws: Workspace, cache: ProbeCache, rows: list[Row]) -> dict[str, dict[str, Any]]:
    """Every shard's probe results by path; a one-line error if a shard has not finished."""
    rerun = f"`vtl prepare {ws.root} ... --shard {{shard}}`"
    count = complete_shards(ws.root.glob("quarantine.shard-*-of-*.csv"), ws.shard_quarantine, rerun)
    known: dict[str, dict[str, Any]] = {}
    for i in range(count):
        shard = Shard(i, count)
        if not ws.shard_manifest(shard).is_file():
            raise UserError(f"shard {shard} is incomplete: no {ws.shard_manifest(shard)}; "
                            f"run {rerun.format(shard=shard)} and merge again")
        for r in read_csv(ws.shard_manifest(shard)):
            known[r["path"]] = {k: cast(r[k]) for k, cast in _PROBE_TYPES.items()}
        for q in read_csv(ws.shard_quarantine(shard)):
            known[q["path"]] = {"error": q["reason"]}
        cache.absorb(ws.shard_probe_cache(shard))
    missed = sum(str(r.path) not in known for r in rows)
    if missed:
        warn(f"{missed} of {len(rows)} files are in no shard's results (added since the shards ran?): "
             "probing them now")
    return known


def _summary(manifest: list[dict], quarantine: list[dict], classes: list[str]) -> dict[str, Any]:
    reasons = Counter(q["reason"].split(":")[0] for q in quarantine)
    hours = sum(float(r["duration"]) for r in manifest) / 3600
    return {"files": len(manifest), "classes": len(classes), "hours": round(hours, 3),
            "splits": dict(Counter(r["split"] for r in manifest)), "quarantined": len(quarantine),
            "quarantined_by_reason": dict(reasons)}


def format_summary(s: dict[str, Any]) -> str:
    splits = ", ".join(f"{k} {v}" for k, v in sorted(s["splits"].items()))
    text = (f"{s['files']} files in {s['classes']} classes ({s['hours']:.2f} h of video; {splits}); "
            f"{s['quarantined']} quarantined")
    if s["quarantined_by_reason"]:
        text += " (" + ", ".join(f"{k}: {v}" for k, v in s["quarantined_by_reason"].items()) + ")"
    if s.get("train_test_duplicates"):
        text += f"; {s['train_test_duplicates']} test files duplicate train files"
    return text


__all__ = ["PrepareConfig", "run_prepare", "shard_key", "video_id", "format_summary",
           "MANIFEST_COLUMNS"]
