"""Frame folders: a folder of numbered images that stands for one video (MMAction2's "rawframes").

The rule for which images are the frames, and in what order, lives here so the dataset readers
(which folders are videos) and the frame-folder decoder (which file is frame *i*) agree.

* A frame is an image (any extension of ``IMAGE_EXTENSIONS``) whose name ends in a number
  before the extension: ``img_00001.jpg``, ``00001.png``, ``frame-7.jpg``.
* Frames are ordered by that number, not by name: ``img_2.jpg`` comes before ``img_10.jpg``.
  Gaps are allowed (frame *i* is the *i*-th image in that order).
* One folder may hold several series, told apart by the part before the number and the
  extension. MMAction2 keeps optical flow beside the RGB frames (``img_00001.jpg``,
  ``flow_x_00001.jpg``, ``flow_y_00001.jpg``; older tools wrote ``x_00001.jpg``): flow series are
  taken only when there is nothing else. Among the rest, the series with the most frames wins,
  then the alphabetically first prefix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from pipeline.data.formats.base import IMAGE_EXTENSIONS

_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def _split(name: str) -> tuple[str, int, str] | None:
    """``(prefix, number, extension)`` of a frame's file name, or ``None`` if it is not one."""
    stem, ext = os.path.splitext(name)
    if name.startswith(".") or ext.lower() not in IMAGE_EXTENSIONS:
        return None
    m = _NUMBERED.match(stem)
    return (m.group(1), int(m.group(2)), ext.lower()) if m else None


def is_frame_name(name: str) -> bool:
    return _split(name) is not None


def _is_flow(prefix: str) -> bool:
    p = prefix.lower().strip("_-. ")
    return p.startswith("flow") or p in ("x", "y", "u", "v")


def frame_series(names: Iterable[str]) -> list[str]:
    """The names among ``names`` that are the folder's frames, in frame order (see the module doc)."""
    series: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for name in names:
        parts = _split(name)
        if parts is not None:
            prefix, number, ext = parts
            series.setdefault((prefix, ext), []).append((number, name))
    if not series:
        return []
    best = min(series, key=lambda k: (_is_flow(k[0]), -len(series[k]), k))
    return [name for _, name in sorted(series[best])]


def list_frames(folder: Path) -> list[Path]:
    """The frame files of ``folder`` in frame order (OSError if it cannot be listed)."""
    with os.scandir(folder) as it:
        names = [e.name for e in it if e.is_file()]
    return [folder / name for name in frame_series(names)]
