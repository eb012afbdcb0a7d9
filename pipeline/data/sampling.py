"""Frame-index samplers: which frames of a video make a clip.

All samplers are pure functions of (number of frames, parameters, rng), so
their arithmetic is tested exactly and fuzzed. Rules for short videos (fewer
frames than the clip needs) are part of the contract, documented in
``docs/data.md``:

* ``uniform`` (TSN segments): the video is cut into N equal segments of F/N
  frames and one frame is taken per segment — when training, a uniform draw
  among the whole frames of the segment (its float bounds rounded up), so
  training spans the whole video as evaluation does; when evaluating, the
  centre (or evenly spread offsets, one per test view). A video shorter than N frames repeats frames (segments shorter
  than one frame map onto the same frame), so the clip is a slowed-down copy.
* ``random``: a contiguous clip of N frames every ``stride`` frames; a random
  start when training, evenly spread starts for test views. A video shorter
  than the clip's span *loops* back to its first frame.
* ``dense``: every clip of the ``random`` shape, starting every ``step``
  frames (default: one clip span), plus one clip ending on the last frame
  when the steps leave a tail, so the whole video is covered.

``clip_seconds`` and ``target_fps`` sample by time instead of by frame count
(:mod:`pipeline.data.timeline`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.data.timeline import resample_map, seconds_views
from pipeline.errors import UserError
from pipeline.options import check_choices, option

SAMPLINGS = ("uniform", "random", "dense")
DEFAULT_STRIDE = 2  # the frame step of random/dense clips when --stride is not given


def uniform_indices(num_frames: int, n: int, *, train: bool, rng: np.random.Generator | None = None,
                    view: int = 0, num_views: int = 1) -> list[int]:
    """TSN segment sampling: one frame per each of ``n`` equal segments of ``num_frames / n`` frames."""
    _check(num_frames, n)
    seg = num_frames / n
    if train and num_frames >= n:
        # Segment i holds frames ceil(i*seg) .. ceil((i+1)*seg) - 1: the float segments rounded to whole
        # frames, so the n segments tile the whole video (training spans what evaluation spans, even when
        # seg is not a whole number) and each gives a distinct frame, drawn uniformly inside it.
        rng = rng or np.random.default_rng()
        bounds = np.ceil(np.arange(n + 1) * seg - 1e-9).astype(int)
        return (bounds[:-1] + np.floor(rng.random(n) * np.diff(bounds)).astype(int)).tolist()
    if train:
        rng = rng or np.random.default_rng()
        offsets = rng.uniform(0.0, seg, size=n)
    else:
        offsets = np.full(n, seg * (view + 0.5) / num_views)
    idx = np.floor(np.arange(n) * seg + offsets).astype(int)
    return np.clip(idx, 0, num_frames - 1).tolist()


def clip_span(n: int, stride: int) -> int:
    return (n - 1) * stride + 1


def contiguous_indices(num_frames: int, n: int, stride: int, start: int) -> list[int]:
    """``n`` frames from ``start`` every ``stride`` frames, looping past the end."""
    _check(num_frames, n)
    return [(start + i * stride) % num_frames for i in range(n)]


def random_indices(num_frames: int, n: int, stride: int, *, train: bool,
                   rng: np.random.Generator | None = None, view: int = 0, num_views: int = 1) -> list[int]:
    """A contiguous clip at ``stride``: random start in training, evenly spread starts for views."""
    _check(num_frames, n)
    room = max(0, num_frames - clip_span(n, stride))
    if train:
        rng = rng or np.random.default_rng()
        start = int(rng.integers(0, room + 1))
    elif num_views == 1:
        start = room // 2
    else:
        start = int(round(view * room / (num_views - 1)))
    return contiguous_indices(num_frames, n, stride, start)


def dense_indices(num_frames: int, n: int, stride: int, step: int | None = None) -> list[list[int]]:
    """Every contiguous clip starting every ``step`` frames (default: one clip span)."""
    _check(num_frames, n)
    span = clip_span(n, stride)
    step = step or span
    if step <= 0:
        raise UserError(f"dense step must be positive, got {step}")
    last_start = max(0, num_frames - span)
    starts = list(range(0, last_start + 1, step))
    if starts[-1] != last_start:  # one more clip, ending on the last frame, so the tail is covered
        starts.append(last_start)
    return [contiguous_indices(num_frames, n, stride, s) for s in starts]


def _check(num_frames: int, n: int) -> None:
    if num_frames <= 0:
        raise ValueError("a video with no frames cannot be sampled")
    if n <= 0:
        raise UserError(f"--frames must be positive, got {n}")


class NoFrameRate(ValueError):
    """Seconds-based sampling of a video whose fps is unknown (0 or missing)."""


@dataclass(frozen=True)
class SamplingConfig:
    """How a workspace's clips are sampled: the clip cache's key (:attr:`key`)."""

    frames: int = option(8, "Frames per clip.")
    sampling: str = option("uniform", "uniform (TSN segments), random (contiguous at --stride) or dense (all "
                                      "clips).", choices=SAMPLINGS)
    stride: int | None = option(None, f"Frame step of random/dense clips (default {DEFAULT_STRIDE}; not with "
                                      "--clip-seconds, which spaces the frames by time).")
    short_side: int = option(128, "Resize so the short side is this many pixels (images: 256 unless given).",
                             show_default="128; images 256")
    clips_per_video: int = option(1, "Views per video: random draws for train, test views for val/test.")
    seed: int = option(0, "Seed of the random draws (per video, whatever the order or worker count).")
    clip_seconds: float | None = option(None, "A clip covers this many seconds, whatever the video's fps (frames "
                                              "spaced evenly in time; docs/data.md).")
    target_fps: float | None = option(None, "Resample every video to this many frames per second before sampling "
                                            "(Kinetics backbones expect ~25-30 fps motion).")

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("frames", "stride", "short_side", "clips_per_video"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("clip_seconds", "target_fps"):
            value = getattr(self, name)
            if value is not None and not value > 0:  # also refuses NaN
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.clip_seconds is not None and self.stride is not None:
            raise UserError("--clip-seconds spaces the frames over the clip's seconds: drop --stride")

    @property
    def step(self) -> int:
        """The frame step of random/dense clips."""
        return self.stride or DEFAULT_STRIDE

    @property
    def timed(self) -> bool:
        """Sampled by time (needs each video's fps)."""
        return self.clip_seconds is not None or self.target_fps is not None

    @property
    def key(self) -> str:
        """Readable, unique folder name for this sampling (unchanged for frame-count sampling,
        so caches made before the seconds options existed stay valid)."""
        key = (f"{self.sampling}-t{self.frames}-s{self.step}-ss{self.short_side}"
               f"-v{self.clips_per_video}-seed{self.seed}")
        if self.clip_seconds is not None:
            key += f"-cs{self.clip_seconds:g}"
        if self.target_fps is not None:
            key += f"-fps{self.target_fps:g}"
        return key

    def to_dict(self) -> dict:
        """The cache's params.json entry: unset options left out, the frame step written out (as caches
        made before the seconds options existed have it), so older caches still match."""
        params = {k: v for k, v in asdict(self).items() if v is not None}
        if self.clip_seconds is None:
            params["stride"] = self.step
        return params

    def views(self, num_frames: int, *, train: bool, video_id: str, fps: float | None = None) -> list[list[int]]:
        """All clips (lists of frame indices) to cache for one video; ``fps`` is needed when timed."""
        rng = np.random.default_rng(_seed_for(self.seed, video_id))
        if not self.timed:
            return self._frame_views(num_frames, train=train, rng=rng)
        if not fps or fps <= 0:
            raise NoFrameRate("the video's frame rate is unknown: it cannot be sampled by --clip-seconds or "
                              "--target-fps")
        source = resample_map(num_frames, fps, self.target_fps) if self.target_fps else None
        frames, rate = (len(source), self.target_fps) if source is not None else (num_frames, fps)
        if self.clip_seconds is None:
            views = self._frame_views(frames, train=train, rng=rng)
        else:
            views = seconds_views(frames, rate, sampling=self.sampling, frames=self.frames,
                                  seconds=self.clip_seconds, train=train, rng=rng, num_views=self.clips_per_video)
        return views if source is None else [source[view].tolist() for view in views]

    def _frame_views(self, num_frames: int, *, train: bool, rng: np.random.Generator) -> list[list[int]]:
        v = self.clips_per_video
        if self.sampling == "uniform":
            return [uniform_indices(num_frames, self.frames, train=train, rng=rng, view=k, num_views=v)
                    for k in range(v)]
        if self.sampling == "random":
            return [random_indices(num_frames, self.frames, self.step, train=train, rng=rng, view=k,
                                   num_views=v) for k in range(v)]
        return dense_indices(num_frames, self.frames, self.step)


def _seed_for(seed: int, video_id: str) -> int:
    """A per-video seed that does not depend on processing order or worker count."""
    digest = hashlib.blake2b(f"{seed}:{video_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")
