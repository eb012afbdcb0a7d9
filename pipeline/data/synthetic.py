"""Synthetic action videos, written as real video files with PyAV.

Used by ``vtl demo`` (the embedded default, no download) and by the tests.
A clip shows one object moving over a background; its class is defined by the
*motion* (and, in the target domain, also by the object's shape), so a model
must look at time as well as appearance.

Two domains make a transfer problem:

* **source**: solid bright objects of any shape on a plain dark background;
  the label is the motion only (6 motions).
* **target**: striped objects in other hues on textured, cluttered
  backgrounds; each class is one motion done (mostly) by one shape in one colour, so
  appearance is a strong but imperfect cue and motion settles the rest.

``shuffle_labels=True`` writes a source whose labels are random: pretraining
on it teaches nothing useful, the demo's example of a source that transfers
badly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MOTIONS = ("right", "left", "up", "down", "grow", "shrink")
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (230, 50, 50), "green": (50, 210, 60), "blue": (60, 80, 240), "yellow": (235, 220, 40)}


@dataclass(frozen=True)
class TargetClass:
    name: str
    motion: str
    shape: str
    hue: tuple[int, int, int]  # the class's usual colour (appearance cue)


TARGET_CLASSES = (
    TargetClass("slide_right", "right", "circle", (230, 60, 60)),
    TargetClass("slide_left", "left", "square", (60, 200, 60)),
    TargetClass("rise", "up", "triangle", (70, 90, 240)),
    TargetClass("fall", "down", "cross", (240, 220, 40)),
    TargetClass("inflate", "grow", "circle", (230, 60, 230)),
)


# Fixed encoder settings: one encoder thread (a frame-threaded x264 encodes differently on machines
# with other core counts, and its output is then not reproducible), fixed preset and quality, and no
# macroblock-tree rate control (mbtree=0): with it, about one encode in ten of the same 64 px frames
# came out different, even on one thread. With the same package versions the files are byte-identical
# run to run.
ENCODER_OPTIONS = {"threads": "1"}
X264_OPTIONS = {"preset": "medium", "crf": "23",
                "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:mbtree=0"}


def write_video(path: Path, frames: np.ndarray, fps: int = 16, codec: str = "libx264",
                **options: str) -> None:
    """Write uint8 ``(T, H, W, 3)`` frames to ``path`` (even H and W for yuv420p codecs), single-threaded
    with fixed encoder options (:data:`ENCODER_OPTIONS`) so that the same frames give the same bytes."""
    import av

    fixed = {**ENCODER_OPTIONS, **(X264_OPTIONS if codec.startswith("libx264") else {})}

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = {"libx264rgb": "rgb24", "png": "rgb24", "ffv1": "bgr0"}.get(codec, "yuv420p")
        stream.options = {**fixed, **options}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _mask(shape: str, size: int, cy: float, cx: float, r: float, angle: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if shape == "triangle":
        return (dy <= r * 0.7) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    # cross
    return ((np.abs(dy) <= r * 0.3) & (np.abs(dx) <= r)) | ((np.abs(dx) <= r * 0.3) & (np.abs(dy) <= r))


def _trajectory(motion: str, t: np.ndarray, size: int, rng: np.random.Generator):
    """Centre (y, x) and radius over normalised time t in [0, 1]."""
    r0 = size * rng.uniform(0.14, 0.2)
    travel = size * rng.uniform(0.45, 0.6)
    lo, hi = size * 0.25, size * 0.75
    cy, cx = rng.uniform(lo, hi), rng.uniform(lo, hi)
    y, x, r = np.full_like(t, cy), np.full_like(t, cx), np.full_like(t, r0)
    if motion in ("right", "left"):
        x = size / 2 + (t - 0.5) * travel * (1 if motion == "right" else -1)
    elif motion in ("up", "down"):
        y = size / 2 + (t - 0.5) * travel * (-1 if motion == "up" else 1)
    elif motion == "grow":
        r = r0 * (0.5 + 1.3 * t)
    elif motion == "shrink":
        r = r0 * (1.8 - 1.3 * t)
    return y, x, r


def _background(domain: str, size: int, rng: np.random.Generator) -> np.ndarray:
    if domain == "source":
        base = rng.uniform(0, 40, size=3)
        return np.broadcast_to(base, (size, size, 3)).astype(np.float32).copy()
    # target: a random stripe/checker texture in muted colours
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(6, 14)
    theta = rng.uniform(0, np.pi)
    wave = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
    c1 = rng.uniform(70, 130, size=3)
    c2 = c1 + rng.uniform(-25, 25, size=3)
    return (c1 + (c2 - c1) * (wave[..., None] > 0)).astype(np.float32)


def make_clip(motion: str, shape: str, domain: str, rng: np.random.Generator, *, size: int = 64,
              frames: int = 16, hue: tuple[int, int, int] | None = None) -> np.ndarray:
    """One clip as uint8 ``(frames, size, size, 3)``."""
    t = np.linspace(0.0, 1.0, frames, dtype=np.float32)
    ys, xs, rs = _trajectory(motion, t, size, rng)
    bg = _background(domain, size, rng)
    if domain == "source":
        colour = rng.uniform(150, 255, size=3) if hue is None else \
            np.clip(np.asarray(hue, dtype=np.float32) + rng.normal(0, 15, size=3), 0, 255)
        fill = np.broadcast_to(colour, (size, size, 3))
    else:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        stripes = (np.sin((xx + yy) * 2 * np.pi / rng.uniform(4, 7)) > 0)[..., None]
        c1 = np.asarray(hue if hue is not None else rng.uniform(0, 255, size=3), dtype=np.float32)
        c1 = np.clip(c1 + rng.normal(0, 15, size=3), 0, 255)
        fill = np.where(stripes, c1, c1 * 0.6)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        m = _mask(shape, size, ys[i], xs[i], rs[i])[..., None]
        img = np.where(m, fill, bg) + rng.normal(0, 6, size=(size, size, 3))
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def make_source_dataset(root: Path, clips_per_class: int, *, seed: int = 0, size: int = 64, frames: int = 16,
                        motions: Sequence[str] = MOTIONS, shuffle_labels: bool = False,
                        label_by: str = "motion", shapes: Sequence[str] = SHAPES, domain: str = "source",
                        colours: Sequence[str] = ()) -> Path:
    """``root/<label>/<n>.mp4``, ``clips_per_class`` per motion: by default the label is the motion,
    done by any of ``shapes``. ``label_by="shape"`` or ``"colour"`` labels the same kind of clips by
    the object's shape or by its colour (one of ``colours``, names of :data:`COLOURS`; without
    them the colour is random) instead. ``domain="target"`` draws the clips in the target's style
    (striped objects on textures). Returns ``root``."""
    if label_by not in ("motion", "shape", "colour") or (label_by == "colour" and not colours):
        raise ValueError(f"label_by must be 'motion', 'shape' or 'colour' (with colours), got {label_by!r}")
    rng = np.random.default_rng(seed)
    labels = {"motion": motions, "shape": shapes, "colour": colours}[label_by]
    for motion in motions:
        for n in range(clips_per_class):
            shape = shapes[rng.integers(len(shapes))]
            colour = colours[rng.integers(len(colours))] if colours else None
            clip = make_clip(motion, shape, domain, rng, size=size, frames=frames,
                             hue=COLOURS[colour] if colour else None)
            truth = {"motion": motion, "shape": shape, "colour": colour}[label_by]
            label = labels[rng.integers(len(labels))] if shuffle_labels else truth
            write_video(root / str(label) / f"{motion}_{n:03d}.mp4", clip)
    return root


def make_target_dataset(root: Path, clips_per_class: int, *, seed: int = 1, size: int = 64, frames: int = 16,
                        classes: Sequence[TargetClass] = TARGET_CLASSES, shape_consistency: float = 0.8) -> Path:
    """``root/<class>/<n>.mp4``: the class's motion, done by its shape with probability
    ``shape_consistency`` (else by another shape, so appearance alone is not enough)."""
    rng = np.random.default_rng(seed)
    for cls in classes:
        for n in range(clips_per_class):
            typical = rng.random() < shape_consistency
            shape = cls.shape if typical else SHAPES[rng.integers(len(SHAPES))]
            hue = cls.hue if typical else tuple(int(c) for c in rng.integers(0, 255, size=3))
            clip = make_clip(cls.motion, shape, "target", rng, size=size, frames=frames, hue=hue)
            write_video(root / cls.name / f"{cls.name}_{n:03d}.mp4", clip)
    return root
