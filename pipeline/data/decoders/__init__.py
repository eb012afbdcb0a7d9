"""Video decoders behind one interface (``Decoder``), one module per backend.

``probe`` and ``read`` try a preferred backend and fall back to the other, so a
file one backend cannot handle is retried before it is quarantined. A folder
(of numbered images: a frame folder) has one backend, ``frames``, and no fallback.

Both prefer PyAV, so the reader that samples a file is the one that counted its
frames: PyAV numbers frames exactly as a sequential decode does, and its indexed
decode reads only the packets a clip needs (faster than decord on every
container of the real clips: ``scripts/bench_decode.py``, docs/performance.md).
decord 0.6.0 is the fallback: it lands on the wrong frame after some seeks and
counts frames an MP4 edit list discards.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.data.decoders.base import DecodeError, Decoder, VideoInfo, resized_size
from pipeline.data.decoders.decord_backend import DecordDecoder
from pipeline.data.decoders.frames_backend import FrameFolderDecoder
from pipeline.data.decoders.pyav_backend import PyAVDecoder
from pipeline.errors import UserError

__all__ = ["DecodeError", "Decoder", "VideoInfo", "BACKENDS", "get_decoder", "probe", "read", "resized_size"]

BACKENDS = {"decord": DecordDecoder, "pyav": PyAVDecoder, "frames": FrameFolderDecoder}
VIDEO_BACKENDS = ("decord", "pyav")


def get_decoder(name: str, num_threads: int = 1) -> Decoder:
    if name not in BACKENDS:
        raise UserError(f"unknown decoder {name!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name](num_threads=num_threads)


# decord 0.6.0 seeks inexactly in AVI files (MPEG-4 Part 2/DivX with packed B-frames):
# sparse get_batch can return frames several positions off (seen on HMDB51 originals),
# and it counts one frame too many. PyAV's sequential decode is exact there.
DECORD_INEXACT = frozenset({".avi"})


def _chain(backend: str, path: Path) -> list[str]:
    if path.is_dir():
        return ["frames"]
    if backend == "decord" and path.suffix.lower() in DECORD_INEXACT:
        backend = "pyav"
    return [backend] + [b for b in VIDEO_BACKENDS if b != backend]


def probe(path: Path, backend: str = "pyav") -> tuple[VideoInfo, str]:
    """Probe with ``backend`` then the others; returns the info and the backend that worked."""
    errors = []
    for name in _chain(backend, Path(path)):
        try:
            return get_decoder(name).probe(path), name
        except DecodeError as e:
            errors.append(str(e))
    raise DecodeError("; ".join(errors))


def read(path: Path, indices: Sequence[int], size: tuple[int, int] | None = None,
         backend: str = "pyav") -> np.ndarray:
    """Frames at ``indices`` as uint8 (T, H, W, 3), trying ``backend`` first."""
    errors = []
    for name in _chain(backend, Path(path)):
        try:
            frames = get_decoder(name).read(path, indices, size)
            if size is not None and frames.shape[1:3] != tuple(size):
                raise DecodeError(f"{name}: got {frames.shape[1:3]} instead of {size}")
            return frames
        except DecodeError as e:
            errors.append(str(e))
    raise DecodeError("; ".join(errors))
