"""Which packets to decode for a set of frames: the plan behind PyAV's indexed reads.

Decoding every frame up to the last one a clip needs costs as much as decoding the whole file;
a 16-frame clip from a 300-frame video only needs, for each wanted frame, the packets from the
keyframe before it up to its own packet. This module computes that set from the packets'
timestamps and keyframe flags alone (no decoding), so it is a pure function the tests check
exhaustively; ``pyav_backend`` feeds only those packets to the decoder and verifies, frame by
frame, that what comes out is what the plan promised.

Frame ``i`` is the ``i``-th frame in presentation order, which is the order a sequential decode
outputs frames in: the same numbering as ``PyAVDecoder.frame_count`` and the samplers use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PacketIndex:
    """The video packets of one file in decode order (empty packets left out)."""

    pts: tuple[int, ...]
    keyframe: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.pts)

    def presentation_order(self) -> list[int]:
        """Decode position of each frame, in presentation order."""
        return sorted(range(len(self.pts)), key=self.pts.__getitem__)

    def has_unique_timestamps(self) -> bool:
        return len(set(self.pts)) == len(self.pts)

    def in_presentation_order(self) -> bool:
        """Timestamps rise with decode order (no B-frame reordering in the container)."""
        return all(a < b for a, b in zip(self.pts, self.pts[1:], strict=False))


def packets_to_decode(index: PacketIndex, wanted: Iterable[int]) -> list[int]:
    """Decode positions (sorted) that produce every wanted frame exactly.

    For a wanted frame at decode position ``d``: every packet from the last keyframe at or before
    ``d`` that is not displayed after it. The second condition handles open GOPs, where B-frames
    decoded after an I-frame are displayed before it and reference the previous GOP: for them the
    run starts one keyframe earlier. Raises ``IndexError`` for a frame past the end.
    """
    order = index.presentation_order()
    needed: set[int] = set()
    for frame in set(wanted):
        if not 0 <= frame < len(order):
            raise IndexError(f"frame {frame} of {len(order)}")
        d = order[frame]
        start = d
        while start > 0 and not (index.keyframe[start] and index.pts[start] <= index.pts[d]):
            start -= 1
        needed.update(range(start, d + 1))
    return sorted(needed)


def runs(positions: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive stretches of sorted positions as (first, last) pairs."""
    out: list[tuple[int, int]] = []
    for p in positions:
        if out and p == out[-1][1] + 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return out
