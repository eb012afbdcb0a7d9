"""The clips of one file, as ``vtl sample`` caches them: decode the frames the sampling picks (each
at most once), resize while decoding, and stack the views; images are one-frame clips. A frame
folder is read like a video file (``decoders`` picks its backend).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data import decoders
from pipeline.data.formats.base import IMAGE_EXTENSIONS
from pipeline.data.sampling import SamplingConfig
from pipeline.data.timeline import frame_range
from pipeline.errors import UserError


def video_clips(row: dict[str, str], cfg: SamplingConfig, *, train: bool) -> np.ndarray:
    """uint8 (views, T, H, W, 3) of one manifest row (a video file or a frame folder).

    The row's probed fps goes to the sampling: seconds-based options (``clip_seconds``,
    ``target_fps``) need it; frame-count sampling ignores it.
    """
    fps = float(row.get("fps") or 0.0)
    views = cfg.views(int(row["num_frames"]), train=train, video_id=row["id"], fps=fps)
    return decode_views(row, views, cfg.short_side)


def decode_views(row: dict[str, str], views: list[list[int]], short_side: int) -> np.ndarray:
    """uint8 (views, T, H, W, 3): the frames of ``views`` (index lists), each decoded once."""
    wanted = sorted({i for view in views for i in view})
    size = decoders.resized_size(int(row["height"]), int(row["width"]), short_side)
    frames = decoders.read(Path(row["path"]), wanted, size)
    position = {idx: k for k, idx in enumerate(wanted)}
    return np.stack([frames[[position[i] for i in view]] for view in views])


def window_views(row: dict[str, str], cfg: SamplingConfig, windows: list[tuple[float, float]]) -> np.ndarray:
    """uint8 (windows, views, T, H, W, 3): each window of seconds [start, end) sampled as a whole clip
    of that length would be for evaluation (its own views, the checkpoint's rule)."""
    fps = float(row["fps"])
    per_window = []
    for start, end in windows:
        first, stop = frame_range(start, end, fps, int(row["num_frames"]))
        views = cfg.views(stop - first, train=False, video_id=f"{row['id']}@{start:g}", fps=fps)
        per_window.append([[first + i for i in view] for view in views])
    flat = decode_views(row, [v for views in per_window for v in views], cfg.short_side)
    return flat.reshape(len(windows), -1, *flat.shape[1:])


def image_clip(path: Path, short_side: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")  # CMYK, greyscale, palette and alpha all become RGB
        size = decoders.resized_size(rgb.height, rgb.width, short_side)
        if size is not None:
            rgb = rgb.resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)[None, None]


def load_views(path: Path, sampling: SamplingConfig) -> np.ndarray:
    """uint8 (views, T, H, W, 3) for one file or frame folder, as `vtl sample` would cache it for
    evaluation."""
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        try:
            clip = image_clip(path, sampling.short_side)
        except Exception:
            raise UserError(f"{path} is not a readable image") from None
        return np.repeat(clip, sampling.frames, axis=1) if sampling.frames > 1 else clip
    row = probe_row(path)
    try:
        return video_clips(row, sampling, train=False)
    except decoders.DecodeError as e:
        raise UserError(f"cannot decode {path}: {e}") from None


def probe_row(path: Path) -> dict:
    """The manifest row ``vtl prepare`` would write for one video file or frame folder."""
    if not path.exists():
        raise UserError(f"{path} does not exist")
    try:
        info, backend = decoders.probe(path)
    except decoders.DecodeError:
        what = "frame folder" if path.is_dir() else "video or image"
        raise UserError(f"{path} is not a readable {what}") from None
    return {"id": path.name, "path": str(path), "num_frames": info.num_frames, "fps": info.fps,
            "width": info.width, "height": info.height, "decoder": backend}
