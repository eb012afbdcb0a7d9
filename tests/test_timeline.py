"""The pure functions behind `vtl predict --window`: windows, smoothing, merging into segments."""

from __future__ import annotations

import pytest

from pipeline.data.timeline import frame_range, merge_segments, sliding_windows, smooth_labels


def test_windows_cover_the_video_and_its_tail():
    assert sliding_windows(5.0, 2.0, 1.0) == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0), (3.0, 5.0)]
    # the strides leave a tail: one more window ending on the video's end
    assert sliding_windows(4.5, 2.0, 2.0) == [(0.0, 2.0), (2.0, 4.0), (2.5, 4.5)]
    assert sliding_windows(1.5, 2.0, 1.0) == [(0.0, 1.5)]  # shorter than a window: one window


def test_frame_range_takes_the_frames_on_screen():
    assert frame_range(1.0, 2.0, 30.0, 300) == (30, 60)
    assert frame_range(0.7, 0.71, 30.0, 300) == (21, 22)  # at least one frame (0.7 x 30 is 20.999…)
    assert frame_range(9.9, 10.5, 30.0, 300) == (297, 300)


def test_smoothing_is_a_centred_majority_vote():
    labels = ["a", "a", "b", "a", "a", "c", "c", "c"]
    assert smooth_labels(labels, 1) == labels
    assert smooth_labels(labels, 3) == ["a", "a", "a", "a", "a", "c", "c", "c"]


def test_segments_tile_the_video_at_the_midpoints_between_window_centres():
    windows = [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0), (3.0, 5.0)]
    segments = merge_segments(windows, ["a", "a", "b", "b"], [0.9, 0.7, 0.6, 0.8], 5.0)
    assert segments == [{"start": 0.0, "end": 2.5, "label": "a", "score": pytest.approx(0.8)},
                        {"start": 2.5, "end": 5.0, "label": "b", "score": pytest.approx(0.7)}]
