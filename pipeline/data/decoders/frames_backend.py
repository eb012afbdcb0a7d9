"""Frame-folder backend: a folder of numbered images read as a video (MMAction2 "rawframes").

Which images are the frames, and their order, is decided by :mod:`pipeline.data.formats.frames`.
A frame folder carries no timing, so its fps is whatever the caller says (``vtl prepare --fps``,
default :data:`DEFAULT_FPS`). Each wanted frame is one image decoded with Pillow, resized while
loading when a size is given (a JPEG is decoded at a reduced scale first: ``Image.draft``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.data.decoders.base import DecodeError, VideoInfo, probe_indices
from pipeline.data.formats.frames import list_frames

DEFAULT_FPS = 30.0


class FrameFolderDecoder:
    name = "frames"

    def __init__(self, num_threads: int = 1, fps: float = DEFAULT_FPS):
        self.fps = fps  # num_threads is part of the Decoder interface; one image at a time here

    def _frames(self, path: Path) -> list[Path]:
        try:
            frames = list_frames(Path(path))
        except OSError as e:
            raise DecodeError(f"frame folder: cannot be listed: {e.strerror or e}") from None
        if not frames:
            raise DecodeError(f"frame folder: {_contents(Path(path))}")
        return frames

    def probe(self, path: Path) -> VideoInfo:
        frames = self._frames(path)
        shapes = [_load(frames[i], None).shape for i in probe_indices(len(frames))]
        height, width = shapes[0][:2]  # read() brings every frame to one size
        return VideoInfo(num_frames=len(frames), fps=self.fps, width=int(width), height=int(height))

    def read(self, path: Path, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        frames = self._frames(path)
        wanted = sorted(set(int(i) for i in indices))
        if wanted and (wanted[0] < 0 or wanted[-1] >= len(frames)):
            raise DecodeError(f"frame folder: has {len(frames)} frames, frame {wanted[-1]} was asked for "
                              "(changed since prepare?)")
        loaded: dict[int, np.ndarray] = {}
        for i in wanted:
            # Without a size, every frame takes the first wanted frame's size (stackable).
            img = _load(frames[i], size if size is not None else _shape(loaded))
            loaded[i] = img
        return np.stack([loaded[int(i)] for i in indices]) if indices else np.zeros((0, 1, 1, 3), np.uint8)


def _shape(loaded: dict[int, np.ndarray]) -> tuple[int, int] | None:
    first = next(iter(loaded.values()), None)
    return None if first is None else (first.shape[0], first.shape[1])


def _load(file: Path, size: tuple[int, int] | None) -> np.ndarray:
    """One frame as uint8 (H, W, 3); ``size`` is (height, width)."""
    from PIL import Image

    try:
        with Image.open(file) as img:
            if size is not None:
                img.draft("RGB", (size[1], size[0]))  # JPEG: decode at the nearest scale above size
            rgb = img.convert("RGB")
            if size is not None and rgb.size != (size[1], size[0]):
                rgb = rgb.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except Exception as e:  # Pillow raises many types (UnidentifiedImageError, OSError, SyntaxError...)
        raise DecodeError(f"frame folder: cannot read {file.name}: {str(e)[:150] or type(e).__name__}") from None


def _contents(folder: Path) -> str:
    """Why a folder has no frames, for the quarantine list."""
    try:
        names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        return f"cannot be listed: {e.strerror or e}"
    if not names:
        return "empty"
    return f"no numbered images ({len(names)} other entr{'y' if len(names) == 1 else 'ies'}, e.g. {names[0]})"
