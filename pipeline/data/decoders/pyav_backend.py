"""PyAV backend: exact frames, decoding only the packets a clip needs when the file allows it.

``read`` first demuxes the video packets (cheap: about 5 % of decoding them) and, when their
timestamps number the frames exactly, decodes only the runs from a keyframe to each wanted frame
(see ``packet_index``), skipping reference-free frames nobody asked for. Otherwise, or as soon as
the decoder's output disagrees with the plan, it decodes sequentially up to the last wanted frame.
Both paths return the frames a sequential decode numbers ``0, 1, 2, …``: it is the reference the
tests cross-check decord against. Counting in decode output (presentation) order also sorts out
files whose packets come with out-of-order timestamps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.decoders.base import DecodeError, VideoInfo, probe_indices
from pipeline.data.decoders.packet_index import PacketIndex, packets_to_decode, runs

# Containers whose packets carry real presentation timestamps (ISO-BMFF and Matroska). AVI has
# none: FFmpeg derives them from the packet count, which is wrong once B-frames are packed or
# reordered (UCF101's DivX files), so there frames are numbered by decode output only.
TIMESTAMPED_FORMATS = frozenset({"mov", "mp4", "matroska", "webm"})

# Compressed packets kept in memory between demuxing and decoding. A larger stream (a feature
# film) is demuxed a second time instead of being held: rereading costs far less than decoding.
PACKET_MEMORY_LIMIT = 64 * 2**20


class _PlanBroken(Exception):
    """The decoder's output disagreed with the plan: decode sequentially instead."""


def _rotate(img: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (degrees, counter-clockwise positive as FFmpeg reports)."""
    quarter_turns = (int(round(rotation / 90.0))) % 4
    return np.ascontiguousarray(np.rot90(img, k=quarter_turns)) if quarter_turns else img


class PyAVDecoder:
    name = "pyav"

    def __init__(self, num_threads: int = 1, indexed: bool = True):
        self.num_threads = num_threads
        self.indexed = indexed  # False: always decode sequentially (the reference the tests use)

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

    # ------------------------------------------------------------------ sequential decoding

    def _decode(self, path: Path, frames: _Frames) -> tuple[int, float]:
        """Decode up to the largest wanted frame; return the frames seen and the fps."""
        container, stream = self._open(path)
        try:
            n = self._decode_sequential(stream, container.demux(stream), frames)
        finally:
            container.close()
        return n, _fps(stream)

    @staticmethod
    def _decode_sequential(stream, packets: Iterable, frames: _Frames) -> int:
        ctx = stream.codec_context
        last = max(frames.wanted) if frames.wanted else -1
        n = 0
        try:
            for packet in _then_flush(packets):
                for frame in ctx.decode(packet):
                    if n in frames.wanted:
                        frames.put(n, frame)
                    n += 1
                if 0 <= last < n:
                    break
        except Exception as e:
            raise DecodeError(f"pyav: frame {n}: {str(e)[:200] or type(e).__name__}") from None
        return n

    # ------------------------------------------------------------------ indexed decoding

    def _decode_indexed(self, demuxed: _Demuxed, frames: _Frames) -> bool:
        """Decode ``frames`` through the plan; False (``frames`` left empty) when the index can't
        number them or the decoder's output disagreed with the plan."""
        if not demuxed.numbered:
            return False
        try:
            plan = packets_to_decode(demuxed.index, frames.wanted)
        except IndexError:
            return False  # frames past the packet count: the sequential path repeats the last
        stream, packets = demuxed.start()
        try:
            self._decode_plan(stream, packets, demuxed.index, plan, frames, demuxed.timestamped)
            return True
        except _PlanBroken:
            frames.clear()
            return False

    def _decode_plan(self, stream, packets: Iterable, index: PacketIndex, plan: list[int], frames: _Frames,
                     timestamped: bool) -> None:
        """Feed only the planned packets; check every frame that comes out against the plan."""
        ctx = stream.codec_context
        if self.num_threads > 1:
            stream.thread_type = "SLICE"  # frame threads delay output and ignore skip_frame changes
        frame_of_pts = {pts: i for i, pts in enumerate(index.pts[d] for d in index.presentation_order())}

        def take(decoded) -> None:
            for frame in decoded:
                i = frame_of_pts.get(frame.pts)
                if i is None:
                    raise _PlanBroken
                if i in frames.wanted:
                    frames.put(i, frame)

        run_starts = {first for first, _ in runs(plan)}
        planned = set(plan)
        try:
            for d, packet in enumerate(packets):
                if d > plan[-1]:
                    break
                if d not in planned:
                    continue
                if d in run_starts and d != plan[0]:
                    take(ctx.decode(None))  # drain the frames the last run still holds back
                    ctx.flush_buffers()
                if timestamped:
                    # A frame nobody wants is skipped if nothing references it (B-frames).
                    skip = "DEFAULT" if frame_of_pts[index.pts[d]] in frames.wanted else "NONREF"
                    if ctx.skip_frame != skip:
                        ctx.skip_frame = skip
                decoded = ctx.decode(packet)
                if not timestamped and (len(decoded) != 1 or decoded[0].pts != index.pts[d]):
                    raise _PlanBroken  # AVI: one frame per packet, at once, or the numbering is a guess
                take(decoded)
            take(ctx.decode(None))
        except _PlanBroken:
            raise
        except Exception as e:
            raise DecodeError(f"pyav: {str(e)[:200] or type(e).__name__}") from None
        if frames.missing():
            raise _PlanBroken

    # ------------------------------------------------------------------ the Decoder interface

    def frame_count(self, path: Path) -> int:
        """Exact number of decodable frames (decodes the whole file)."""
        n, _ = self._decode(path, _Frames([], None))
        return n

    def probe(self, path: Path) -> VideoInfo:
        """Frame count, fps and displayed size, numbering frames as ``read`` does.

        With trustworthy timestamps (see ``read``) the count is the number of packets and the
        first, middle and last frames are decoded through the plan; otherwise the container's
        declared count, checked by decoding sequentially up to its last frame."""
        with _Demuxed(self, path) as demuxed:
            declared = int(demuxed.stream.frames or 0)
            n = len(demuxed.index)
            if self.indexed and demuxed.timestamped and n:
                frames = _Frames(probe_indices(n), None)
                if self._decode_indexed(demuxed, frames):
                    height, width = frames.frame_shape()
                    return VideoInfo(num_frames=n, fps=_fps(demuxed.stream), width=width, height=height)
        if declared <= 0:
            declared = self.frame_count(path)
        if declared <= 0:
            raise DecodeError("pyav: no video frames")
        frames = _Frames(probe_indices(declared), None)
        n, fps = self._decode(path, frames)
        if not frames.got:
            raise DecodeError("pyav: no decodable frames")
        if frames.missing():
            # The container over-declares its frames (or counts frames an edit list discards):
            # keep what really decodes.
            declared = n
        height, width = frames.frame_shape()
        return VideoInfo(num_frames=declared, fps=fps, width=width, height=height)

    def read(self, path: Path, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        frames = _Frames(indices, size)
        if self.indexed and frames.wanted:
            with _Demuxed(self, path) as demuxed:
                if not self._decode_indexed(demuxed, frames):
                    self._decode_sequential(*demuxed.start(), frames)
        else:
            self._decode(path, frames)
        if not frames.got:
            raise DecodeError("pyav: no decodable frames")
        return frames.array()


class _Demuxed:
    """An open file whose video packets have been read once: their index, and the packets
    themselves up to ``PACKET_MEMORY_LIMIT`` of compressed data."""

    def __init__(self, decoder: PyAVDecoder, path: Path):
        self._decoder, self._path = decoder, path
        self.container, self.stream = decoder._open(path)
        self.timestamped = not TIMESTAMPED_FORMATS.isdisjoint(self.container.format.name.split(","))
        self._packets, self.index, exact = _demux(self.container, self.stream)
        # Frame numbers follow from the index: every packet timed, none discarded, no repeated
        # timestamp, and (without real timestamps) no reordering in the container.
        self.numbered = exact and self.index.has_unique_timestamps() and (
            self.timestamped or self.index.in_presentation_order())
        self._started = False

    def __enter__(self) -> _Demuxed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()

    def start(self) -> tuple[Any, Iterable]:
        """A decoder in its initial state and the packets from the first one: from memory, else
        demuxed again. Reopens the file when the decoder has been used or the packets must be
        read again."""
        if self._started or self._packets is None:
            self.container.close()
            self.container, self.stream = self._decoder._open(self._path)
        self._started = True
        packets = self._packets if self._packets is not None else _nonempty(self.container.demux(self.stream))
        return self.stream, packets


class _Frames:
    """The clip being read: converts each wanted frame once, straight into the output array.

    Copying each frame into its slots at once (rather than keeping the decoder's RGB buffers
    and stacking them at the end) lets FFmpeg reuse one buffer per frame size: stacking fresh
    buffers cost as much as converting them (page faults), measured on 432×240 AVIs.
    """

    def __init__(self, indices: Sequence[int], size: tuple[int, int] | None):
        from av.video.reformatter import VideoReformatter

        self.indices = [int(i) for i in indices]
        self.wanted = set(self.indices)
        self._slots: dict[int, list[int]] = {}
        for k, i in enumerate(self.indices):
            self._slots.setdefault(i, []).append(k)
        self.size = size
        self.got: set[int] = set()
        self._out: np.ndarray | None = None
        self._reformatter = VideoReformatter()

    def put(self, i: int, frame) -> None:
        if i in self.got:
            return
        rgb = _to_rgb(frame, self.size, self._reformatter)
        if self._out is None:
            self._out = np.empty((len(self.indices), *rgb.shape), np.uint8)
        for k in self._slots[i]:
            self._out[k] = rgb
        self.got.add(i)

    def missing(self) -> bool:
        return self.got != self.wanted

    def clear(self) -> None:
        self.got.clear()

    def frame_shape(self) -> tuple[int, int]:
        assert self._out is not None
        return int(self._out.shape[1]), int(self._out.shape[2])

    def array(self) -> np.ndarray:
        """The clip; indices past the real end (a container that over-declares frames) repeat
        the last frame that decoded."""
        assert self._out is not None
        if self.missing():
            last = self._slots[max(self.got)][0]
            for i in self.wanted - self.got:
                for k in self._slots[i]:
                    self._out[k] = self._out[last]
        return self._out


def _to_rgb(frame, size: tuple[int, int] | None, reformatter) -> np.ndarray:
    """RGB ndarray of ``frame``, resized to ``size`` (height, width) as displayed.

    One reformatter per file: ``frame.to_ndarray(format=...)`` builds a new swscale context
    per frame, which cost more than decoding (2.4 ms vs 0.7 ms a frame resized, UCF101 AVIs).
    One swscale thread: with its default (one per core) every call paid a thread hand-off, and
    the workers already use the cores. The pixels are the same either way.
    """
    rotation = int(getattr(frame, "rotation", 0) or 0)
    if size is not None:
        h, w = size
        if rotation % 180:  # resize in the stored orientation, then rotate
            h, w = w, h
        rgb = reformatter.reformat(frame, format="rgb24", width=w, height=h, threads=1)
    else:
        rgb = reformatter.reformat(frame, format="rgb24", threads=1)
    return _rotate(rgb.to_ndarray(), rotation)


def _then_flush(packets: Iterable) -> Iterable:
    """The non-empty packets, then ``None`` to drain the decoder's delayed frames."""
    yield from _nonempty(packets)
    yield None


def _nonempty(packets: Iterable) -> Iterable:
    return (p for p in packets if p.size > 0)


def _fps(stream) -> float:
    return float(stream.average_rate or stream.guessed_rate or 0.0)


def _demux(container, stream) -> tuple[list | None, PacketIndex, bool]:
    """Read the video packets: (the packets, or None past the memory limit), their index, and
    whether every packet is timestamped and none is marked for discarding."""
    kept: list | None = []
    pts: list[int] = []
    keyframe: list[bool] = []
    exact = True
    total = 0
    try:
        for packet in _nonempty(container.demux(stream)):
            if packet.pts is None or packet.is_discard:
                exact = False  # edit-list trims and untimed packets: frames the index can't number
            pts.append(packet.pts if packet.pts is not None else -1)
            keyframe.append(bool(packet.is_keyframe))
            total += packet.size
            if kept is not None:
                kept.append(packet)
                if total > PACKET_MEMORY_LIMIT:
                    kept = None
    except Exception:
        exact = False  # a damaged container: the sequential path reports where it breaks
    return kept, PacketIndex(tuple(pts), tuple(keyframe)), exact
