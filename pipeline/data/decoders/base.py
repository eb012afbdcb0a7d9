"""The decoder interface every backend implements.

Decoders return uint8 ``(T, H, W, C)`` RGB numpy arrays with rotation metadata
applied, resized while decoding when a size is given (so a 4K file never
materialises full-size frames).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


class DecodeError(Exception):
    """A file could not be decoded by a backend (the caller may try another)."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    width: int  # as displayed, i.e. after rotation
    height: int

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


class Decoder(Protocol):
    name: str

    def probe(self, path: Path) -> VideoInfo:
        """Frame count, fps and displayed size; decodes the first, middle and
        last frames so a file that opens but cannot be decoded is caught here."""
        ...

    def read(self, path: Path, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as ``(T, H, W, 3)`` uint8.

        ``size`` is the output ``(height, width)``; ``None`` keeps the original.
        """
        ...


def resized_size(height: int, width: int, short_side: int | None) -> tuple[int, int] | None:
    """Output (h, w) with the short side scaled to ``short_side``, aspect kept, even sizes."""
    if not short_side or min(height, width) <= 0:
        return None
    scale = short_side / min(height, width)
    h = max(2, int(round(height * scale / 2)) * 2)
    w = max(2, int(round(width * scale / 2)) * 2)
    return h, w


def probe_indices(num_frames: int) -> list[int]:
    return sorted({0, num_frames // 2, max(0, num_frames - 1)})
