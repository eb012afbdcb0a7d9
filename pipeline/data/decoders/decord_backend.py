"""decord backend: random access by frame index, resize inside the decoder.

decord 0.6.0 has known problems we work around here: its reader leaks memory
if kept alive across many files (we open one reader per call and drop it), and
it raises its own ``DECORDError`` (turned into :class:`DecodeError`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.data.decoders.base import DecodeError, VideoInfo, probe_indices


class DecordDecoder:
    name = "decord"

    def __init__(self, num_threads: int = 1):
        # One thread per worker by default: the process pool gives parallelism,
        # and decoder threads on top of it only oversubscribe the cores.
        self.num_threads = num_threads

    def _reader(self, path: Path, size: tuple[int, int] | None = None):
        import decord

        kwargs = {"num_threads": self.num_threads}
        if size is not None:
            kwargs.update(height=size[0], width=size[1])
        try:
            return decord.VideoReader(str(path), ctx=decord.cpu(0), **kwargs)
        except Exception as e:  # decord raises DECORDError/RuntimeError with C++ traces
            raise DecodeError(_short(e)) from None

    def probe(self, path: Path) -> VideoInfo:
        vr = self._reader(path)
        n = len(vr)
        if n <= 0:
            raise DecodeError("no video frames")
        try:
            frames = vr.get_batch(probe_indices(n)).asnumpy()
            fps = float(vr.get_avg_fps())
        except Exception as e:
            raise DecodeError(_short(e)) from None
        finally:
            del vr
        return VideoInfo(num_frames=n, fps=fps, width=int(frames.shape[2]), height=int(frames.shape[1]))

    def read(self, path: Path, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        vr = self._reader(path, size)
        try:
            n = len(vr)
            # decord refuses out-of-range indices; a count that disagrees with the
            # probe (seen on some AVIs) must not crash sampling: clamp to the last frame.
            safe = [min(max(int(i), 0), n - 1) for i in indices]
            return vr.get_batch(safe).asnumpy()
        except DecodeError:
            raise
        except Exception as e:
            raise DecodeError(_short(e)) from None
        finally:
            del vr


def _short(e: Exception) -> str:
    """decord's messages carry C++ file names and timestamps; keep the useful tail."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    # Drop "[hh:mm:ss] /path/to/file.cc:123: " prefixes (there may be several).
    text = re.sub(r"^(\s*(\[[\d:]+\]\s*)?\S+\.(cc|h):\d+:\s*)+", "", text)
    return f"decord: {text[:200]}"
