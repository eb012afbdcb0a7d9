"""PyAV backend: sequential decode, converting only the frames we keep.

Slower than decord for sparse sampling of long files, but it decodes files
decord cannot and it is the reference the tests cross-check decord against.
Frames are counted in decode (presentation) order, which also sorts out files
whose packets come with out-of-order timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.data.decoders.base import DecodeError, VideoInfo, probe_indices


def _rotate(img: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (degrees, counter-clockwise positive as FFmpeg reports)."""
    quarter_turns = (int(round(rotation / 90.0))) % 4
    return np.ascontiguousarray(np.rot90(img, k=quarter_turns)) if quarter_turns else img


class PyAVDecoder:
    name = "pyav"

    def __init__(self, num_threads: int = 1):
        self.num_threads = num_threads

    def _open(self, path: Path):
        import av

        try:
            container = av.open(str(path))
        except Exception as e:
            raise DecodeError(f"pyav: {str(e)[:200] or type(e).__name__}") from None
        if not container.streams.video:
            container.close()
            raise DecodeError("pyav: no video stream")
        stream = container.streams.video[0]
        stream.thread_count = self.num_threads
        return container, stream

    def _decode(self, path: Path, wanted: set[int], size: tuple[int, int] | None) -> tuple[dict, int, float]:
        """Decode up to the largest wanted index; return {index: rgb}, frames seen, fps."""
        from av.video.reformatter import VideoReformatter

        container, stream = self._open(path)
        # One reformatter for the whole file: frame.to_ndarray(format=...) builds a new
        # swscale context per frame, which cost more than decoding (2.4 ms vs 0.7 ms a frame
        # resized, measured on UCF101 AVIs); the pixels are identical.
        reformatter = VideoReformatter()
        last = max(wanted) if wanted else -1
        out: dict[int, np.ndarray] = {}
        n = 0
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        try:
            for frame in container.decode(stream):
                if n in wanted:
                    out[n] = self._to_rgb(frame, size, reformatter)
                n += 1
                if n > last and last >= 0:
                    break
        except Exception as e:
            raise DecodeError(f"pyav: frame {n}: {str(e)[:200] or type(e).__name__}") from None
        finally:
            container.close()
        return out, n, fps

    @staticmethod
    def _to_rgb(frame, size: tuple[int, int] | None, reformatter) -> np.ndarray:
        rotation = int(getattr(frame, "rotation", 0) or 0)
        if size is not None:
            h, w = size
            if rotation % 180:  # resize in the stored orientation, then rotate
                h, w = w, h
            rgb = reformatter.reformat(frame, format="rgb24", width=w, height=h)
        else:
            rgb = reformatter.reformat(frame, format="rgb24")
        return _rotate(rgb.to_ndarray(), rotation)

    def frame_count(self, path: Path) -> int:
        """Exact number of decodable frames (decodes the whole file)."""
        _, n, _ = self._decode(path, set(), None)
        return n

    def probe(self, path: Path) -> VideoInfo:
        container, stream = self._open(path)
        declared = int(stream.frames or 0)
        container.close()
        if declared <= 0:
            declared = self.frame_count(path)
        if declared <= 0:
            raise DecodeError("pyav: no video frames")
        wanted = set(probe_indices(declared))
        out, n, fps = self._decode(path, wanted, None)
        if not out:
            raise DecodeError("pyav: no decodable frames")
        if len(out) < len(wanted):
            # The container over-declares its frames: keep what really decodes.
            declared = n
        first = out[min(out)]
        return VideoInfo(num_frames=declared, fps=fps, width=int(first.shape[1]), height=int(first.shape[0]))

    def read(self, path: Path, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        wanted = {int(i) for i in indices}
        out, _, _ = self._decode(path, wanted, size)
        if not out:
            raise DecodeError("pyav: no decodable frames")
        last = max(out)
        # Indices past the real end (a container that over-declares frames) repeat the last frame.
        return np.stack([out.get(int(i), out[last]) for i in indices])
