"""``vtl prepare``: dataset on disk → manifest.csv, classes.txt, quarantine.csv.

Every file is probed (frame count, fps, size, and a decode of its first,
middle and last frame) in a process pool with a per-file time limit. Probe
results are cached in the workspace keyed by (path, size, mtime), so a re-run
only probes new or changed files. Files that cannot be used go to
``quarantine.csv`` with the reason; the stage goes on.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data import decoders
from pipeline.data.duplicates import cross_split_duplicates, leak_warning
from pipeline.data.formats import FORMATS
from pipeline.data.formats.base import Row
from pipeline.errors import UserError
from pipeline.parallel import TimedOut, run_pool
from pipeline.progress import echo, warn
from pipeline.sharding import Shard, complete_shards
from pipeline.workspace import Workspace, atomic_write, read_csv, write_csv, write_text

MANIFEST_COLUMNS = ("id", "path", "label", "split", "num_frames", "fps", "width", "height", "duration", "decoder")


@dataclass(frozen=True)
class PrepareConfig:
    format: str
    root: Path
    splits: Path | None = None
    fold: int = 1
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    workers: int = 2
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UserError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise UserError(f"--{name.replace('_', '-')} must be in [0, 1), got {v}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise UserError("--val-fraction + --test-fraction must leave some data for training")


def video_id(path: Path) -> str:
    """A stable id for a file: the cache file name of its clips."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in path.stem)[:40]
    return f"{stem}-{hashlib.blake2b(str(path).encode(), digest_size=6).hexdigest()}"


# ----------------------------------------------------------------------------- probing


def probe_file(job: tuple[str, str]) -> dict[str, Any]:
    """Probe one file in a worker. Returns the manifest fields, or {"error": reason}."""
    path_str, media = job
    path = Path(path_str)
    try:
        size = path.stat().st_size
    except OSError as e:
        return {"error": f"unreadable: {e.strerror}"}
    if size == 0:
        return {"error": "empty file (0 bytes)"}
    if media == "image":
        return _probe_image(path)
    try:
        info, backend = decoders.probe(path)
    except decoders.DecodeError as e:
        return {"error": f"cannot decode: {e}"}
    if info.width <= 0 or info.height <= 0:
        return {"error": "no picture size"}
    return {"num_frames": info.num_frames, "fps": round(info.fps, 3), "width": info.width,
            "height": info.height, "duration": round(info.duration, 3), "decoder": backend}


def _probe_image(path: Path) -> dict[str, Any]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()  # a truncated file fails here, not at open
            width, height = img.size
    except Exception as e:
        return {"error": f"cannot decode image: {str(e)[:150] or type(e).__name__}"}
    return {"num_frames": 1, "fps": 0.0, "width": width, "height": height, "duration": 0.0, "decoder": "pillow"}


class ProbeCache:
    """Probe results keyed by path, reused while the file's size and mtime are unchanged."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict] = {}
        self.absorb(path)

    def absorb(self, path: Path) -> None:
        """Take in the entries of another cache file (a shard's), if it exists."""
        if not path.is_file():
            return
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
                self.entries[e["path"]] = e
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by a kill: just probe that file again

    @staticmethod
    def _key(path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def get(self, path: Path) -> dict | None:
        e = self.entries.get(str(path))
        key = self._key(path)
        return e["result"] if e and key and tuple(e["key"]) == key else None

    def put(self, path: Path, result: dict) -> None:
        key = self._key(path)
        if key is not None:
            self.entries[str(path)] = {"path": str(path), "key": list(key), "result": result}

    def save(self) -> None:
        with atomic_write(self.path) as f:
            for e in self.entries.values():
                f.write(json.dumps(e) + "\n")


def probe_rows(rows: list[Row], media: str, cache: ProbeCache, workers: int, timeout: float,
               known: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Probe results in ``rows`` order: ``known`` ones (by path), cached ones, then probed."""
    known = known or {}
    results: list[dict[str, Any] | None] = [known.get(str(r.path)) or cache.get(r.path) for r in rows]
    todo = [i for i, r in enumerate(results) if r is None]
    if len(todo) < len(rows):
        echo(f"prepare: {len(rows) - len(todo)} files already probed (cached), {len(todo)} to probe")
    jobs = [(str(rows[i].path), media) for i in todo]
    for done, (j, result) in enumerate(run_pool(probe_file, jobs, workers=workers, timeout=timeout, desc="probe"), 1):
        if isinstance(result, TimedOut):
            result = {"error": f"probe timed out after {result.seconds:g}s"}
        results[todo[j]] = result
        cache.put(rows[todo[j]].path, result)
        if done % 500 == 0:
            cache.save()  # keep progress if the stage is killed on a huge dataset
    cache.save()
    return results  # type: ignore[return-value]


# ----------------------------------------------------------------------------- splits


def assign_splits(rows: list[dict], val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Stratified, deterministic split of the rows that have none; returns warnings.

    Per class, after a seeded shuffle: ``round(n × test_fraction)`` to test and
    ``round(n × val_fraction)`` to val, at least one each when the fraction is
    positive and the class has 3+ files. A format's official train/test split
    is kept; its val is carved from train the same way. A class with fewer than
    3 usable files keeps them all in train (with a warning).
    """
    warnings = []
    need_split = [r for r in rows if not r["split"]]
    by_class: dict[str, list[dict]] = defaultdict(list)
    if need_split:
        for r in need_split:
            by_class[r["label"]].append(r)
        fractions = (val_fraction, test_fraction)
    else:
        if any(r["split"] == "val" for r in rows) or val_fraction == 0:
            return warnings
        for r in rows:
            if r["split"] == "train":
                by_class[r["label"]].append(r)
        fractions = (val_fraction, 0.0)
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda r: r["path"])
        rng = np.random.default_rng([seed, int(hashlib.md5(label.encode()).hexdigest()[:8], 16)])
        order = rng.permutation(len(members))
        n_val, n_test = (_count(len(members), f) for f in fractions)
        if len(members) < 3 and (n_val or n_test or any(fractions)):
            warnings.append(f"class {label!r} has only {len(members)} usable file(s): all kept in train")
            n_val = n_test = 0
        for rank, i in enumerate(order):
            members[i]["split"] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return warnings


def _count(n: int, fraction: float) -> int:
    if fraction <= 0 or n < 3:
        return 0
    return min(max(1, round(n * fraction)), n - 1)


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
    splits = cfg.splits.expanduser().resolve() if cfg.splits else None
    result = fmt.read(root, splits, cfg.fold)
    if not result.rows and not result.quarantined:
        raise UserError(f"no {fmt.media} files found under {cfg.root}")
    ws.root.mkdir(parents=True, exist_ok=True)
    if shard is not None:
        return _prepare_shard(ws, cfg, fmt.media, root, result.rows, shard)
    with ws.lock("prepare"):
        cache = ProbeCache(ws.probe_cache)
        known = _shard_results(ws, cache, result.rows) if merge else {}
        probes = probe_rows(result.rows, fmt.media, cache, cfg.workers, cfg.timeout, known)
        manifest, quarantine = _usable(result.rows, probes)
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
        warnings = assign_splits(manifest, cfg.val_fraction, cfg.test_fraction, cfg.seed)
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


def _usable(rows: list[Row], probes: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Split probed rows into manifest rows and quarantine rows, keeping their order."""
    manifest: list[dict] = []
    quarantine: list[dict] = []
    for row, probe in zip(rows, probes, strict=True):
        if "error" in probe:
            quarantine.append({"path": str(row.path), "reason": probe["error"]})
        else:
            manifest.append({"id": video_id(row.path), "path": str(row.path), "label": row.label,
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
        probes = probe_rows(mine, media, cache, cfg.workers, cfg.timeout, known)
        manifest, quarantine = _usable(mine, probes)
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


__all__ = ["PrepareConfig", "run_prepare", "shard_key", "assign_splits", "probe_file", "video_id", "format_summary",
           "MANIFEST_COLUMNS"]
