"""The decode plan of PyAV's indexed reads: which packets produce a set of frames.

Hand-built GOPs with exact answers, then a property test on a reference model of MPEG-style
streams (I/P anchors, B-frames between them, open GOPs) checking that every wanted frame's
references are decoded before it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data.decoders.packet_index import PacketIndex, packets_to_decode, runs


def index(pts: list[int], keyframes: set[int]) -> PacketIndex:
    return PacketIndex(tuple(pts), tuple(d in keyframes for d in range(len(pts))))


def test_closed_gops_decode_from_the_keyframe_before_each_frame() -> None:
    ix = index(list(range(10)), {0, 5})
    assert packets_to_decode(ix, [7]) == [5, 6, 7]
    assert packets_to_decode(ix, [2]) == [0, 1, 2]
    assert packets_to_decode(ix, [2, 7, 7]) == [0, 1, 2, 5, 6, 7]
    assert packets_to_decode(ix, [5]) == [5]
    assert packets_to_decode(ix, []) == []


def test_b_frames_need_the_later_anchor_decoded_before_them() -> None:
    # decode order I0 P3 B1 B2 P6 B4 B5 (the numbers are presentation timestamps)
    ix = index([0, 3, 1, 2, 6, 4, 5], {0})
    assert ix.presentation_order() == [0, 2, 3, 1, 5, 6, 4]
    assert packets_to_decode(ix, [2]) == [0, 1, 2, 3]  # frame 2 is B2, decoded 4th, after P3
    assert packets_to_decode(ix, [3]) == [0, 1]
    assert not ix.in_presentation_order()


def test_open_gop_leading_b_frames_start_from_the_previous_keyframe() -> None:
    # decode order I0 P3 B1 B2 | I6 B4 B5 P9 B7 B8: B4 and B5 are shown before I6 and
    # reference P3, so a run for them must start at I0, not at I6.
    ix = index([0, 3, 1, 2, 6, 4, 5, 9, 7, 8], {0, 4})
    assert packets_to_decode(ix, [6]) == [4]
    assert packets_to_decode(ix, [4]) == [0, 1, 2, 3, 4, 5]
    assert packets_to_decode(ix, [8]) == [4, 5, 6, 7, 8, 9]


def test_frames_past_the_end_are_refused() -> None:
    with pytest.raises(IndexError):
        packets_to_decode(index([0, 1, 2], {0}), [3])


def test_runs_group_consecutive_positions() -> None:
    assert runs([0, 1, 2, 5, 6, 9]) == [(0, 2), (5, 6), (9, 9)]
    assert runs([]) == []


def test_timestamp_checks() -> None:
    assert index([0, 1, 2], {0}).in_presentation_order()
    assert not index([0, 2, 2], {0}).has_unique_timestamps()


@st.composite
def mpeg_streams(draw):
    """(PacketIndex, references per decode position) of a random I/P/B stream with open GOPs.

    Anchors (I or P) come every ``b + 1`` frames in presentation order; the B-frames between two
    anchors are decoded after the later one and reference both. A P-frame references the anchor
    before it; an I-frame nothing. Timestamps start at a random offset with a random step.
    """
    n_anchors = draw(st.integers(1, 12))
    b = draw(st.integers(0, 3))
    kinds = ["I"] + [draw(st.sampled_from("IPPP")) for _ in range(n_anchors - 1)]
    offset, step = draw(st.integers(-5, 5)), draw(st.integers(1, 3))
    decode: list[tuple[int, str, list[int]]] = []  # (presentation index, kind, referenced presentation indices)
    prev_anchor = None
    for a, kind in enumerate(kinds):
        shown = a * (b + 1)
        decode.append((shown, kind, [] if kind == "I" else [prev_anchor]))
        if prev_anchor is not None:
            decode += [(f, "B", [prev_anchor, shown]) for f in range(prev_anchor + 1, shown)]
        prev_anchor = shown
    position = {shown: d for d, (shown, _, _) in enumerate(decode)}
    ix = PacketIndex(tuple(offset + step * shown for shown, _, _ in decode),
                     tuple(kind == "I" for _, kind, _ in decode))
    refs = [[position[r] for r in rs] for _, _, rs in decode]
    return ix, refs


@settings(max_examples=300, deadline=None)
@given(stream=mpeg_streams(), data=st.data())
def test_every_wanted_frame_has_its_references_decoded_first(stream, data) -> None:
    ix, refs = stream
    n = len(ix)
    wanted = data.draw(st.lists(st.integers(0, n - 1), max_size=8))
    plan = packets_to_decode(ix, wanted)
    planned = set(plan)
    assert plan == sorted(planned)
    for first, _ in runs(plan):
        assert first == 0 or ix.keyframe[first], "a run must start at a keyframe"
    order = ix.presentation_order()

    def needs(d: int) -> set[int]:
        out, todo = set(), [d]
        while todo:
            for r in refs[todo.pop()]:
                if r not in out:
                    out.add(r)
                    todo.append(r)
        return out

    for frame in wanted:
        d = order[frame]
        assert d in planned
        # every packet it depends on is decoded, in the same run (no decoder reset in between)
        run = next((a, z) for a, z in runs(plan) if a <= d <= z)
        assert all(run[0] <= r <= d for r in needs(d)), (frame, d, run, needs(d))
