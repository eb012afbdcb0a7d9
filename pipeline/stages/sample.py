"""``vtl sample``: decode each video once and cache its sampled clips.

Each worker decodes one video (PyAV's indexed decode, decord fallback), resizing while decoding,
and writes ``clips/<key>/<id>.npy`` atomically; a re-run samples only videos
without a file. Files that fail here are added to ``quarantine.csv`` and the
stage goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.data import decoders
from pipeline.data.cache import ClipCache
from pipeline.data.clips import image_clip, video_clips
from pipeline.data.sampling import NoFrameRate, SamplingConfig
from pipeline.errors import UserError
from pipeline.files import read_csv, write_csv
from pipeline.options import option
from pipeline.parallel import DEFAULT_WORKERS, TimedOut, run_pool
from pipeline.progress import echo
from pipeline.sharding import Shard, complete_shards
from pipeline.workspace import Workspace


@dataclass
class SampleConfig:
    """How ``vtl sample`` runs (the clips themselves are set by :class:`SamplingConfig`)."""

    workers: int = option(DEFAULT_WORKERS, "Decode processes.")
    timeout: float = option(300.0, "Seconds allowed to sample one file (then it is quarantined).")

    def __post_init__(self) -> None:
        if self.workers < 0 or self.timeout <= 0:
            raise UserError("--workers must be >= 0 and --timeout positive")


def sample_video(job: dict[str, Any]) -> dict[str, Any]:
    """Worker: sample one manifest row into the cache. Returns {"bytes": n} or {"error": reason}."""
    cfg = SamplingConfig(**job["sampling"])
    cache = ClipCache(Path(job["cache"]))
    row = job["row"]
    if not Path(row["path"]).exists():  # a file, or a frame folder
        return {"error": "sample: file missing (moved or deleted since prepare?)"}
    try:
        if job["media"] == "image":
            clips = image_clip(Path(row["path"]), cfg.short_side)
        else:
            clips = video_clips(row, cfg, train=row["split"] == "train")
    except decoders.DecodeError as e:
        return {"error": f"sample: cannot decode: {e}"}
    except NoFrameRate as e:
        return {"error": f"sample: {e}"}
    except FileNotFoundError:
        return {"error": "sample: file missing (moved or deleted since prepare?)"}
    except OSError as e:
        return {"error": f"sample: unreadable: {e.strerror or e}"}
    cache.write(row["id"], clips)
    return {"bytes": int(clips.nbytes)}




VIDEO_ONLY = ("frames", "sampling", "stride", "clips_per_video", "clip_seconds", "target_fps")


def sampling_for(ws: Workspace, given: dict[str, Any]) -> SamplingConfig:
    """The sampling of ``ws`` from the options the user set (``given``) over :class:`SamplingConfig`'s defaults.

    An image workspace takes one frame per image at a short side of 256 unless told
    otherwise, and refuses video-only options.
    """
    if ws.media == "image":
        video_only = [k for k in VIDEO_ONLY if k in given]
        if video_only:
            raise UserError(f"--{video_only[0].replace('_', '-')} is a video option; {ws.root} holds images")
        return SamplingConfig(**{"short_side": 256, **given, "frames": 1, "clips_per_video": 1})
    return SamplingConfig(**given)


def run_sample(ws: Workspace, cfg: SamplingConfig, run: SampleConfig | None = None, *, force: bool = False,
               shard: Shard | None = None, merge: bool = False) -> dict[str, Any]:
    """Sample every video of ``ws`` not cached yet; with ``shard``, only that shard's videos.

    Shards write only their own ``.npy`` files and a list of their failures, so
    they can share one cache folder at the same time. ``merge`` (or a plain
    re-run) then records the failures in ``quarantine.csv`` and the sampling in
    ``workspace.json``, as an unsharded run does.

    The manifest is streamed (read once to count, once to sample) rather than
    held: memory stays flat however many videos there are.
    """
    run = run or SampleConfig()
    if shard is not None and merge:
        raise UserError("--merge combines the shards' results: run it once, without --shard "
                        "(and without RANK/WORLD_SIZE set)")
    if merge and force:
        raise UserError("--merge keeps the shards' clips: it cannot be combined with --force")
    ws.require_prepared()
    media = ws.media
    if media == "image" and (cfg.frames != 1 or cfg.clips_per_video != 1):
        raise UserError(f"{ws.root} holds images: sample it with one frame and one view (see sampling_for)")
    cache = ClipCache(ws.clips_dir(cfg.key))
    if shard is not None:
        return _sample_shard(ws, cfg, cache, shard, run, force=force)
    with ws.lock("sample"):
        if force and cache.root.exists():
            for p in cache.root.glob("*.npy"):
                p.unlink()
            (cache.root / "params.json").unlink(missing_ok=True)
        cache.init(cfg.to_dict())
        failed = _merge_shard_failures(ws, cfg.key) if merge else []
        tried = {f["path"] for f in failed}  # failed in a shard: not retried by the merge

        def todo() -> Iterator[dict[str, str]]:
            return (r for r in ws.iter_manifest() if not cache.has(r["id"]) and r["path"] not in tried)

        total, count = sum(1 for _ in ws.iter_manifest()), sum(1 for _ in todo())
        if count < total:
            echo(f"sample: {total - count} videos already cached, {count} to sample")
        failed += _sample_rows(todo(), count, cfg, cache, media, run)
        if failed:
            _add_to_quarantine(ws, _in_manifest_order(ws, failed))
        ws.add_sampling(cfg.key)
        if merge:  # consumed: the failures are in quarantine.csv now
            for p in ws.sample_shard_files(cfg.key):
                p.unlink()
    cached = sum(cache.has(r["id"]) for r in ws.iter_manifest())
    if total and len(failed) == total and cached == 0:
        raise UserError(f"no video of {ws.root} could be sampled (first failure: {failed[0]['path']}: "
                        f"{failed[0]['reason']}); see {ws.quarantine}")
    return {"key": cfg.key, "videos": cached, "failed": len(failed), "bytes": cache.size_bytes(),
            "path": str(cache.root)}


def _sample_rows(rows: Iterable[dict[str, str]], count: int, cfg: SamplingConfig, cache: ClipCache, media: str,
                 run: SampleConfig) -> list[dict[str, str]]:
    """Sample the ``count`` ``rows`` into ``cache`` in a pool; returns the failures (path, reason) in order.

    Rows are read as the pool submits them and workers return only a byte
    count (clips go straight from a worker to disk), so only the rows in
    flight and the failures are held here.
    """
    common = {"sampling": cfg.to_dict(), "cache": str(cache.root), "media": media}
    in_flight: dict[int, str] = {}  # index → path of the rows submitted and not finished

    def jobs() -> Iterator[dict[str, Any]]:
        for i, row in enumerate(rows):
            in_flight[i] = row["path"]
            yield {"row": row, **common}

    failed: dict[int, dict[str, str]] = {}
    for i, result in run_pool(sample_video, jobs(), workers=run.workers, timeout=run.timeout, desc="sample",
                              unit="video", total=count):
        path = in_flight.pop(i)
        if isinstance(result, TimedOut):
            result = {"error": f"sample: timed out after {result.seconds:g}s"}
        if "error" in result:
            failed[i] = {"path": path, "reason": result["error"]}
    return [failed[i] for i in sorted(failed)]  # completion order would depend on timing


def _in_manifest_order(ws: Workspace, failed: list[dict[str, str]]) -> list[dict[str, str]]:
    """Failures sorted as the manifest lists their videos, however they were collected."""
    paths = {f["path"] for f in failed}
    order = {r["path"]: i for i, r in enumerate(ws.iter_manifest()) if r["path"] in paths}
    return sorted(failed, key=lambda f: order.get(f["path"], len(order)))


def _add_to_quarantine(ws: Workspace, failed: list[dict[str, str]]) -> None:
    quarantine = read_csv(ws.quarantine) if ws.quarantine.is_file() else []
    known = {(q["path"], q["reason"]) for q in quarantine}
    quarantine += [f for f in failed if (f["path"], f["reason"]) not in known]
    write_csv(ws.quarantine, ("path", "reason"), quarantine)


def _sample_shard(ws: Workspace, cfg: SamplingConfig, cache: ClipCache, shard: Shard, run: SampleConfig, *,
                  force: bool) -> dict[str, Any]:
    """Sample this shard's videos (by video id); record its failures in its own file, written last."""
    def mine() -> Iterator[dict[str, str]]:
        return (r for r in ws.iter_manifest() if shard.owns(r["id"]))

    with ws.lock("sample", shard):
        if force:  # only this shard's files: the others may be sampling into the same folder
            for r in mine():
                cache.path(r["id"]).unlink(missing_ok=True)
        cache.init(cfg.to_dict(), remove_temp=False)
        total, owned = sum(1 for _ in ws.iter_manifest()), sum(1 for _ in mine())
        count = sum(1 for r in mine() if not cache.has(r["id"]))
        echo(f"sample: shard {shard} has {owned} of {total} videos; {owned - count} already cached, "
             f"{count} to sample")
        todo = (r for r in mine() if not cache.has(r["id"]))
        failed = _sample_rows(todo, count, cfg, cache, ws.media, run)
        write_csv(ws.sample_shard_failures(cfg.key, shard), ("path", "reason"), failed)
    return {"key": cfg.key, "shard": str(shard), "videos": sum(cache.has(r["id"]) for r in mine()),
            "of": owned, "failed": len(failed), "path": str(cache.root)}


def _merge_shard_failures(ws: Workspace, key: str) -> list[dict[str, str]]:
    """The failures every sample shard recorded; a one-line error if a shard has not finished."""
    count = complete_shards(ws.sample_shard_files(key), lambda s: ws.sample_shard_failures(key, s),
                            f"`vtl sample {ws.root} ... --shard {{shard}}` (same sampling options)")
    return [f for i in range(count) for f in read_csv(ws.sample_shard_failures(key, Shard(i, count)))]
