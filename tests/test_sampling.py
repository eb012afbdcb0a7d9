"""Frame-index samplers: exact indices for the documented rules (docs/data.md), then properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data.sampling import (
    SamplingConfig,
    clip_span,
    contiguous_indices,
    dense_indices,
    random_indices,
    uniform_indices,
)
from pipeline.errors import UserError

# ----------------------------------------------------------------------------- uniform (TSN segments)


def test_uniform_eval_takes_segment_centres() -> None:
    # 100 frames, 4 segments of 25: centres at 12.5, 37.5, 62.5, 87.5 -> floor
    assert uniform_indices(100, 4, train=False) == [12, 37, 62, 87]


def test_uniform_eval_views_spread_inside_segments() -> None:
    # view k of K takes offset 25 * (k + 0.5) / K inside each segment of 25 frames:
    # K = 3: offsets 4.17, 12.5, 20.83
    views = [uniform_indices(100, 4, train=False, view=k, num_views=3) for k in range(3)]
    assert views == [[4, 29, 54, 79], [12, 37, 62, 87], [20, 45, 70, 95]]


def test_uniform_train_one_random_frame_per_segment() -> None:
    # 100 frames, 4 segments of 25 whole frames: frame k*25 + floor(u * 25), u uniform in [0, 1)
    u = np.random.default_rng(7).random(4)
    expected = [int(k * 25 + np.floor(u[k] * 25)) for k in range(4)]
    assert uniform_indices(100, 4, train=True, rng=np.random.default_rng(7)) == expected
    for seed in range(50):
        idx = uniform_indices(100, 4, train=True, rng=np.random.default_rng(seed))
        assert all(25 * k <= i < 25 * (k + 1) for k, i in enumerate(idx)), idx
    draws = {tuple(uniform_indices(100, 4, train=True, rng=np.random.default_rng(s))) for s in range(20)}
    assert len(draws) > 1  # training really is random across seeds


def test_uniform_train_segments_are_the_float_segments_rounded_to_frames() -> None:
    # 31 frames, 16 segments of 1.9375: segment i holds frames ceil(1.9375 i) .. ceil(1.9375 (i+1)) - 1,
    # so segment 0 is {0, 1}, segment 1 {2, 3}, ..., segment 15 (29.06 .. 31) is {30}
    bounds = [int(np.ceil(i * 31 / 16)) for i in range(17)]
    assert bounds[:3] == [0, 2, 4] and bounds[-2:] == [30, 31]
    for seed in range(200):
        idx = uniform_indices(31, 16, train=True, rng=np.random.default_rng(seed))
        assert all(bounds[k] <= i < bounds[k + 1] for k, i in enumerate(idx)), idx


@pytest.mark.parametrize(("frames", "n"), [(31, 16), (16, 16), (17, 16), (47, 16), (100, 8), (9, 4), (250, 32)])
def test_uniform_training_spans_what_evaluation_spans(frames: int, n: int) -> None:
    # The documented rule (docs/data.md): over many seeds, training draws cover every frame of the video,
    # so every frame a test view takes (first to last) is a frame training can see; each draw has n
    # distinct frames in order. (TSN's integer segments of F // N frames trained on frames 0..15 only
    # for F = 31, N = 16, while evaluation reached frame 30.)
    seen: set[int] = set()
    for seed in range(300):
        idx = uniform_indices(frames, n, train=True, rng=np.random.default_rng(seed))
        assert len(idx) == n and idx == sorted(set(idx)), idx
        seen.update(idx)
    assert seen == set(range(frames))
    evaluated = {i for k in range(3) for i in uniform_indices(frames, n, train=False, view=k, num_views=3)}
    assert evaluated <= seen and max(evaluated) > frames - 1 - frames / n


def test_uniform_short_video_repeats_frames() -> None:
    # 3 frames, 8 segments of 0.375 frame; centres k * 0.375 + 0.1875:
    # 0.19 0.56 0.94 1.31 1.69 2.06 2.44 2.81 -> 0 0 0 1 1 2 2 2 (a slowed-down copy)
    assert uniform_indices(3, 8, train=False) == [0, 0, 0, 1, 1, 2, 2, 2]
    idx = uniform_indices(3, 8, train=True, rng=np.random.default_rng(0))
    assert len(idx) == 8 and idx == sorted(idx) and set(idx) <= {0, 1, 2}
    assert uniform_indices(1, 4, train=False) == [0, 0, 0, 0]


# ----------------------------------------------------------------------------- random (contiguous, strided)


def test_clip_span() -> None:
    assert clip_span(8, 2) == 15  # frames 0, 2, ..., 14
    assert clip_span(1, 5) == 1


def test_random_eval_single_view_is_centred() -> None:
    # 100 frames, 8 at stride 2 span 15: room = 85, centred start 85 // 2 = 42
    assert random_indices(100, 8, 2, train=False) == list(range(42, 57, 2))


def test_random_eval_views_spread_from_first_to_last_start() -> None:
    # starts round(k * 85 / 2) for k = 0, 1, 2: 0, 42 (round half to even), 85; the last ends at frame 99
    views = [random_indices(100, 8, 2, train=False, view=k, num_views=3) for k in range(3)]
    assert views == [list(range(0, 15, 2)), list(range(42, 57, 2)), list(range(85, 100, 2))]


def test_random_train_start_range() -> None:
    starts = set()
    for seed in range(200):
        idx = random_indices(100, 8, 2, train=True, rng=np.random.default_rng(seed))
        start = idx[0]
        assert 0 <= start <= 85  # room = 100 - 15
        assert idx == list(range(start, start + 15, 2))
        starts.add(start)
    assert len(starts) > 20
    # exactly a draw of integers(0, room + 1) from the generator
    start = int(np.random.default_rng(3).integers(0, 86))
    assert random_indices(100, 8, 2, train=True, rng=np.random.default_rng(3))[0] == start


def test_random_short_video_loops() -> None:
    # 5 frames, 4 at stride 2 span 7 > 5: room 0, start 0, indices 0 2 4 6 -> 6 % 5 = 1
    assert random_indices(5, 4, 2, train=False) == [0, 2, 4, 1]
    assert random_indices(5, 4, 2, train=True, rng=np.random.default_rng(0)) == [0, 2, 4, 1]
    assert contiguous_indices(3, 7, 1, 0) == [0, 1, 2, 0, 1, 2, 0]


def test_random_exact_fit_has_one_start() -> None:
    # 15 frames, span 15: room 0, the only clip is 0..14
    for train in (True, False):
        assert random_indices(15, 8, 2, train=train, rng=np.random.default_rng(1)) == list(range(0, 15, 2))


# ----------------------------------------------------------------------------- dense


def test_dense_starts_every_span() -> None:
    # 21 frames, span 7: starts 0, 7, 14 (last start 21 - 7 = 14)
    assert dense_indices(21, 4, 2) == [[0, 2, 4, 6], [7, 9, 11, 13], [14, 16, 18, 20]]
    # explicit step 3 over 20 frames: starts 0 3 6 9 12, plus 13 so the clip ends on the last frame
    assert [c[0] for c in dense_indices(20, 4, 2, step=3)] == [0, 3, 6, 9, 12, 13]


def test_dense_short_video_loops() -> None:
    assert dense_indices(5, 4, 2) == [[0, 2, 4, 1]]


def test_dense_covers_the_whole_video() -> None:
    covered = {i for clip in dense_indices(20, 4, 2) for i in range(clip[0], clip[-1] + 1)}
    assert covered == set(range(20))


def test_dense_rejects_a_non_positive_step() -> None:
    with pytest.raises(UserError):
        dense_indices(20, 4, 2, step=-1)


# ----------------------------------------------------------------------------- config and per-video views


def test_sampling_config_validates() -> None:
    with pytest.raises(UserError, match="unknown --sampling .bogus."):
        SamplingConfig(sampling="bogus")
    for name in ("frames", "stride", "short_side", "clips_per_video"):
        with pytest.raises(UserError, match=f"--{name.replace('_', '-')} must be positive"):
            SamplingConfig(**{name: 0})
    assert SamplingConfig(frames=16, stride=2).key == "uniform-t16-s2-ss128-v1-seed0"


def test_views_are_per_video_and_deterministic() -> None:
    cfg = SamplingConfig(sampling="uniform", frames=8, clips_per_video=3, seed=5)
    a = cfg.views(200, train=True, video_id="a")
    assert a == cfg.views(200, train=True, video_id="a")  # same seed and video: same draws
    assert len(a) == 3 and all(len(v) == 8 for v in a)
    assert a != cfg.views(200, train=True, video_id="b")  # another video: other draws
    assert a != SamplingConfig(sampling="uniform", frames=8, clips_per_video=3, seed=6).views(
        200, train=True, video_id="a")
    # evaluation views do not depend on the seed or the video
    ev = cfg.views(200, train=False, video_id="a")
    assert ev == [uniform_indices(200, 8, train=False, view=k, num_views=3) for k in range(3)]
    assert ev == SamplingConfig(frames=8, clips_per_video=3, seed=9).views(200, train=False, video_id="z")


def test_dense_config_caches_every_clip() -> None:
    cfg = SamplingConfig(sampling="dense", frames=4, stride=2, clips_per_video=1)
    assert cfg.views(21, train=True, video_id="x") == dense_indices(21, 4, 2)


# ----------------------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None, database=None)
@given(num_frames=st.integers(1, 400), n=st.integers(1, 32), stride=st.integers(1, 8), views=st.integers(1, 5),
       sampling=st.sampled_from(["uniform", "random", "dense"]), train=st.booleans(),
       seed=st.integers(0, 2**32 - 1), video_id=st.text(min_size=1, max_size=12))
def test_views_always_valid(num_frames: int, n: int, stride: int, views: int, sampling: str, train: bool,
                            seed: int, video_id: str) -> None:
    cfg = SamplingConfig(sampling=sampling, frames=n, stride=stride, clips_per_video=views, seed=seed)
    clips = cfg.views(num_frames, train=train, video_id=video_id)
    assert clips, "every video yields at least one clip"
    if sampling != "dense":
        assert len(clips) == views
    for clip in clips:
        assert len(clip) == n
        assert all(isinstance(i, int) and 0 <= i < num_frames for i in clip)
    assert clips == cfg.views(num_frames, train=train, video_id=video_id)  # deterministic


@settings(max_examples=200, deadline=None, database=None)
@given(num_frames=st.integers(1, 400), n=st.integers(1, 32), seed=st.integers(0, 2**32 - 1))
def test_uniform_is_sorted_and_seeded(num_frames: int, n: int, seed: int) -> None:
    a = uniform_indices(num_frames, n, train=True, rng=np.random.default_rng(seed))
    assert a == uniform_indices(num_frames, n, train=True, rng=np.random.default_rng(seed))
    c = uniform_indices(num_frames, n, train=False)
    for idx in (a, c):
        assert len(idx) == n and idx == sorted(idx)
        assert idx[0] >= 0 and idx[-1] < num_frames
    seg = num_frames / n
    if num_frames >= n:  # training: one frame among the whole frames of each float segment, rounded up
        assert all(np.ceil(k * seg - 1e-9) <= i < np.ceil((k + 1) * seg - 1e-9) for k, i in enumerate(a))
        assert len(set(a)) == n
    else:  # short video: a frame that overlaps segment k
        assert all(np.floor(k * seg) <= i < max(np.ceil((k + 1) * seg), 1) for k, i in enumerate(a))
    if num_frames >= n:  # segment centres are >= 1 frame apart: distinct frames
        assert len(set(c)) == n
