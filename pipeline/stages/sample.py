"""``vtl sample``: decode each video once and cache its sampled clips.

Each worker decodes one video (decord, PyAV fallback), resizing while decoding,
and writes ``clips/<key>/<id>.npy`` atomically; a re-run samples only videos
without a file. Files that fail here are added to ``quarantine.csv`` and the
stage goes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data import decoders
from pipeline.data.cache import ClipCache
from pipeline.data.sampling import SamplingConfig
from pipeline.errors import UserError
from pipeline.parallel import TimedOut, run_pool
from pipeline.progress import echo
from pipeline.workspace import Workspace, read_csv, write_csv


def sample_video(job: dict[str, Any]) -> dict[str, Any]:
    """Worker: sample one manifest row into the cache. Returns {"bytes": n} or {"error": reason}."""
    cfg = SamplingConfig(**job["sampling"])
    cache = ClipCache(Path(job["cache"]))
    row = job["row"]
    if not Path(row["path"]).is_file():
        return {"error": "sample: file missing (moved or deleted since prepare?)"}
    try:
        if job["media"] == "image":
            clips = image_clip(Path(row["path"]), cfg.short_side)
        else:
            clips = video_clips(row, cfg, train=row["split"] == "train")
    except decoders.DecodeError as e:
        return {"error": f"sample: cannot decode: {e}"}
    except FileNotFoundError:
        return {"error": "sample: file missing (moved or deleted since prepare?)"}
    except OSError as e:
        return {"error": f"sample: unreadable: {e.strerror or e}"}
    cache.write(row["id"], clips)
    return {"bytes": int(clips.nbytes)}


def video_clips(row: dict[str, str], cfg: SamplingConfig, *, train: bool) -> np.ndarray:
    views = cfg.views(int(row["num_frames"]), train=train, video_id=row["id"])
    wanted = sorted({i for view in views for i in view})
    size = decoders.resized_size(int(row["height"]), int(row["width"]), cfg.short_side)
    frames = decoders.read(Path(row["path"]), wanted, size, backend=row.get("decoder") or "decord")
    position = {idx: k for k, idx in enumerate(wanted)}
    return np.stack([frames[[position[i] for i in view]] for view in views])


def image_clip(path: Path, short_side: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")  # CMYK, greyscale, palette and alpha all become RGB
        size = decoders.resized_size(rgb.height, rgb.width, short_side)
        if size is not None:
            rgb = rgb.resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)[None, None]


VIDEO_ONLY = ("frames", "sampling", "stride", "clips_per_video")


def sampling_for(ws: Workspace, given: dict[str, Any], defaults: dict[str, Any] | None = None) -> SamplingConfig:
    """The sampling of ``ws`` from the options the user set (``given``) over ``defaults``.

    An image workspace takes one frame per image at a short side of 256 unless told
    otherwise, and refuses video-only options.
    """
    if ws.media == "image":
        video_only = [k for k in VIDEO_ONLY if k in given]
        if video_only:
            raise UserError(f"--{video_only[0].replace('_', '-')} is a video option; {ws.root} holds images")
        return SamplingConfig(**{"short_side": 256, **given, "frames": 1, "clips_per_video": 1})
    return SamplingConfig(**{**(defaults or {}), **given})


def run_sample(ws: Workspace, cfg: SamplingConfig, *, workers: int = 2, timeout: float = 300.0,
               force: bool = False) -> dict[str, Any]:
    ws.require_prepared()
    media = ws.media
    if media == "image" and (cfg.frames != 1 or cfg.clips_per_video != 1):
        raise UserError(f"{ws.root} holds images: sample it with one frame and one view (see sampling_for)")
    rows = ws.manifest_rows()
    cache = ClipCache(ws.clips_dir(cfg.key))
    with ws.lock("sample"):
        if force and cache.root.exists():
            for p in cache.root.glob("*.npy"):
                p.unlink()
            (cache.root / "params.json").unlink(missing_ok=True)
        cache.init(cfg.to_dict())
        todo = [r for r in rows if not cache.has(r["id"])]
        if len(todo) < len(rows):
            echo(f"sample: {len(rows) - len(todo)} videos already cached, {len(todo)} to sample")
        jobs = [{"row": r, "sampling": cfg.to_dict(), "cache": str(cache.root), "media": media} for r in todo]
        failed = []
        for i, result in run_pool(sample_video, jobs, workers=workers, timeout=timeout, desc="sample",
                                  unit="video"):
            if isinstance(result, TimedOut):
                result = {"error": f"sample: timed out after {result.seconds:g}s"}
            if "error" in result:
                failed.append({"path": todo[i]["path"], "reason": result["error"]})
        if failed:
            quarantine = read_csv(ws.quarantine) if ws.quarantine.is_file() else []
            known = {(q["path"], q["reason"]) for q in quarantine}
            quarantine += [f for f in failed if (f["path"], f["reason"]) not in known]
            write_csv(ws.quarantine, ("path", "reason"), quarantine)
        samplings = [k for k in ws.info().get("samplings", []) if k != cfg.key] + [cfg.key]
        ws.update_info(samplings=samplings)
    cached = sum(cache.has(r["id"]) for r in rows)
    if todo and len(failed) == len(todo) and cached == 0:
        raise UserError(f"no video of {ws.root} could be sampled (first failure: {failed[0]['path']}: "
                        f"{failed[0]['reason']}); see {ws.quarantine}")
    return {"key": cfg.key, "videos": cached, "failed": len(failed), "bytes": cache.size_bytes(),
            "path": str(cache.root)}


def latest_sampling(ws: Workspace) -> str:
    samplings = ws.info().get("samplings", [])
    if not samplings:
        raise UserError(f"{ws.root} has no sampled clips yet: run `vtl sample {ws.root}` first")
    return samplings[-1]
