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


# ----------------------------------------------------------------------------- long videos (`vtl predict --window`)

BACKGROUND = "background"  # the label of a window whose top-1 probability is below --min-score


def frame_range(start: float, end: float, fps: float, num_frames: int) -> tuple[int, int]:
    """``[first, stop)``: the frames on screen from ``start`` to ``end`` seconds (at least one)."""
    first = min(num_frames - 1, max(0, math.floor(start * fps + EPS)))
    stop = min(num_frames, max(first + 1, math.floor(end * fps + EPS)))
    return first, stop


def sliding_windows(duration: float, window: float, stride: float) -> list[tuple[float, float]]:
    """``(start, end)`` seconds of every window: one every ``stride`` seconds, plus one ending on the
    video's end when the strides leave a tail uncovered; a video shorter than ``window`` is one window."""
    if duration <= window + EPS:
        return [(0.0, duration)]
    room = duration - window
    starts = [k * stride for k in range(int(math.floor(room / stride + EPS)) + 1)]
    if room - starts[-1] > EPS:
        starts.append(room)
    return [(s, s + window) for s in starts]


def smooth_labels(labels: list[str], k: int) -> list[str]:
    """Majority vote over ``k`` consecutive windows centred on each (ties: the window's own label)."""
    if k <= 1:
        return list(labels)
    half = k // 2
    out = []
    for i, own in enumerate(labels):
        near = labels[max(0, i - half): i + half + 1]
        counts = {label: near.count(label) for label in near}
        best = max(counts.values())
        out.append(own if counts[own] == best else next(lb for lb in near if counts[lb] == best))
    return out


def merge_segments(windows: list[tuple[float, float]], labels: list[str], scores: list[float],
                   duration: float) -> list[dict]:
    """Consecutive windows with one label as ``{start, end, label, score}`` (score: their mean top-1
    probability). Each window stands for the time nearer its centre than its neighbours', so
    overlapping windows give segments that tile ``[0, duration]`` without overlap."""
    centres = [(s + e) / 2 for s, e in windows]
    cuts = [0.0] + [(a + b) / 2 for a, b in zip(centres, centres[1:], strict=False)] + [duration]
    segments: list[dict] = []
    for i, label in enumerate(labels):
        if segments and segments[-1]["label"] == label:
            segments[-1]["end"], segments[-1]["_scores"] = cuts[i + 1], segments[-1]["_scores"] + [scores[i]]
        else:
            segments.append({"start": cuts[i], "end": cuts[i + 1], "label": label, "_scores": [scores[i]]})
    return [{"start": round(s["start"], 3), "end": round(s["end"], 3), "label": s["label"],
             "score": round(sum(s["_scores"]) / len(s["_scores"]), 6)} for s in segments]
