"""Seconds-based sampling: ``--target-fps`` and ``--clip-seconds`` (docs/data.md, "Sampling in seconds").

Frame-count sampling makes a 60 fps clip of 16 frames cover half the time of a 30 fps one, so a
model sees a different speed of motion for each frame rate. These rules sample by time instead,
from the video's probed fps (the manifest's ``fps`` column). Both are pure functions of (frame
count, fps, parameters, rng), like the frame samplers.

* ``target_fps`` F: a video of ``n`` frames at ``r`` fps is read as a video of
  ``m = ceil(n·F/r)`` frames at F fps whose frame ``j`` (time ``j/F``) is source frame
  ``floor(j·r/F)``, the frame on screen at that time. Any sampling then runs on those ``m``
  frames (``--stride`` counts them) and its indices are mapped back.
* ``clip_seconds`` S (at the video's fps, or at F when both are set): a clip is a window of S
  seconds starting at ``t0``, and its N frames are shown at ``t0 + (k + o_k)·S/N``,
  ``k = 0..N−1``; time ``t`` is frame ``floor(t·rate)``. ``random`` and ``dense`` space the
  frames evenly (``o_k = 0``: a stride of S/N seconds); ``uniform`` takes TSN segments of the
  window (``o_k`` random in [0, 1) when training, 0.5 otherwise). With ``room = duration − S``:
  ``t0`` is random in ``[0, room]`` when training, ``room/2`` for one test view, evenly spread
  over ``[0, room]`` for K views; ``dense`` starts a window every S seconds plus one ending on
  the video's end. A video shorter than S loops, so the clip keeps its speed.
"""

from __future__ import annotations

import math

import numpy as np

# Frame times like 0.7 s × 30 fps come out as 20.999999999999996: a tolerance far below one
# frame keeps the floor on the frame that is exactly on screen.
EPS = 1e-6


def resample_map(num_frames: int, fps: float, target_fps: float) -> np.ndarray:
    """Source frame of each frame of the video resampled to ``target_fps``."""
    m = max(1, math.ceil(num_frames * target_fps / fps - EPS))
    return np.minimum(np.floor(np.arange(m) * fps / target_fps + EPS).astype(int), num_frames - 1)


def window_starts(duration: float, seconds: float, *, sampling: str, train: bool,
                  rng: np.random.Generator, num_views: int) -> list[float]:
    """Start times (seconds) of the clip windows of one video."""
    room = max(0.0, duration - seconds)
    if sampling == "dense":
        starts = [k * seconds for k in range(int(math.floor(room / seconds + EPS)) + 1)]
        if room - starts[-1] > EPS:  # one more window, ending on the last frame, so the tail is covered
            starts.append(room)
        return starts
    if train:
        return [float(rng.uniform(0.0, room)) for _ in range(num_views)]
    if num_views == 1:
        return [room / 2]
    return [k * room / (num_views - 1) for k in range(num_views)]


def seconds_views(num_frames: int, rate: float, *, sampling: str, frames: int, seconds: float, train: bool,
                  rng: np.random.Generator, num_views: int) -> list[list[int]]:
    """The clips (frame indices) of a video of ``num_frames`` at ``rate`` fps, each covering ``seconds``."""
    duration = num_frames / rate
    step = seconds / frames
    views = []
    for t0 in window_starts(duration, seconds, sampling=sampling, train=train, rng=rng, num_views=num_views):
        if sampling == "uniform":
            offsets = rng.uniform(0.0, 1.0, size=frames) if train else np.full(frames, 0.5)
        else:
            offsets = np.zeros(frames)
        times = t0 + (np.arange(frames) + offsets) * step
        idx = np.floor(times * rate + EPS).astype(int)
        # Shorter than a window: loop. Otherwise every time is inside the video; the clamp only
        # absorbs the tolerance at its very end.
        idx = idx % num_frames if duration < seconds else np.minimum(idx, num_frames - 1)
        views.append(idx.tolist())
    return views
