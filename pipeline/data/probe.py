"""Media probing: frame count, fps, size, and a decode of the first, middle and last frame of
every file (or frame folder), in a process pool with a per-file time limit, with a cache keyed
by (path, size, mtime) so a re-run probes only new or changed files. A frame folder's key is
the folder's own size and mtime, which change when frames are added or removed (not when one
is rewritten in place).

A file that cannot be used yields ``{"error": reason}`` (quarantined by ``vtl prepare``), never an
exception.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from pipeline.data import decoders
from pipeline.data.decoders.frames_backend import DEFAULT_FPS
from pipeline.data.formats.base import Row
from pipeline.files import atomic_write
from pipeline.parallel import TimedOut, run_pool
from pipeline.progress import echo


def probe_file(job: tuple[str, str]) -> dict[str, Any]:
    """Probe one file in a worker. Returns the manifest fields, or {"error": reason}."""
    path_str, media = job
    path = Path(path_str)
    try:
        st = path.stat()
    except OSError as e:
        return {"error": f"unreadable: {e.strerror}"}
    is_dir = stat.S_ISDIR(st.st_mode)
    if is_dir and media == "image":
        return {"error": "a folder, not an image"}
    if not is_dir and st.st_size == 0:
        return {"error": "empty file (0 bytes)"}
    if media == "image":
        return _probe_image(path)
    try:
        info, backend = decoders.probe(path)
    except decoders.DecodeError as e:
        # A frame folder's reasons already say "frame folder: ..."
        return {"error": str(e) if is_dir else f"cannot decode: {e}"}
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
               known: dict[str, dict[str, Any]] | None = None,
               frame_fps: float = DEFAULT_FPS) -> list[dict[str, Any]]:
    """Probe results in ``rows`` order: ``known`` ones (by path), cached ones, then probed.

    Frame folders carry no timing: their fps is ``frame_fps`` (``vtl prepare --fps``), set here
    rather than in the probe so that a re-run with another ``--fps`` needs no new probe.
    """
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
    return [_with_fps(r, frame_fps) for r in results]  # type: ignore[arg-type]


def _with_fps(result: dict[str, Any], fps: float) -> dict[str, Any]:
    if result.get("decoder") != "frames":
        return result
    return {**result, "fps": round(float(fps), 3), "duration": round(result["num_frames"] / fps, 3)}
