"""Sampling by time (``clip_seconds``, ``target_fps``): the same moments whatever a video's fps.

The fixture videos show a bar that moves one pixel every 1/60 s (its column is ``floor(60 t)``),
written losslessly at 30 and at 60 fps, so a decoded frame's bar column says which moment it shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data.clips import video_clips
from pipeline.data.sampling import NoFrameRate, SamplingConfig
from pipeline.data.synthetic import write_video
from pipeline.data.timeline import resample_map, seconds_views
from pipeline.errors import UserError
from pipeline.files import read_csv
from pipeline.stages.prepare import PrepareConfig, run_prepare
from pipeline.stages.sample import SampleConfig, run_sample
from pipeline.workspace import Workspace

SPEED = 60  # pixels per second


def bar_video(path: Path, fps: int, seconds: float = 2.0) -> None:
    n = int(round(fps * seconds))
    frames = np.zeros((n, 16, int(SPEED * seconds) + 8, 3), np.uint8)
    for j in range(n):
        x = int(np.floor(j / fps * SPEED + 1e-9))
        frames[j, :, x:x + 2] = 255
    write_video(path, frames, fps=fps, codec="libx264rgb", crf="0")


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, dict[int, dict[str, str]]]:
    """A prepared workspace with the 30 and 60 fps bar videos; manifest rows by fps."""
    base = tmp_path_factory.mktemp("bars")
    for fps in (30, 60):
        bar_video(base / "data" / "bar" / f"bar{fps}.mkv", fps)
    ws = Workspace(base / "ws")
    run_prepare(ws, PrepareConfig(format="folder", root=base / "data", workers=0, val_fraction=0.0,
                                  test_fraction=0.0))
    rows = {int(float(r["fps"])): r for r in read_csv(ws.manifest)}
    assert sorted(rows) == [30, 60] and rows[30]["num_frames"] == "60" and rows[60]["num_frames"] == "120"
    return ws, rows


def positions(clips: np.ndarray) -> np.ndarray:
    """Bar column of every frame of (views, T, H, W, 3) clips, as (views, T)."""
    return clips.astype(float).mean(axis=(2, 4)).argmax(axis=-1)


def sampled(row: dict[str, str], cfg: SamplingConfig, *, train: bool = False) -> np.ndarray:
    return positions(video_clips({**row, "id": "same video"}, cfg, train=train))


@pytest.mark.parametrize("sampling", ["random", "uniform", "dense"])
def test_clip_seconds_cover_the_same_moments_at_30_and_60_fps(bars, sampling: str) -> None:
    _, rows = bars
    cfg = SamplingConfig(sampling=sampling, frames=8, short_side=16, clip_seconds=0.8, clips_per_video=2)
    for train in (False, True):
        at30, at60 = sampled(rows[30], cfg, train=train), sampled(rows[60], cfg, train=train)
        assert at30.shape == at60.shape
        # the 30 fps frame on screen at a moment is at most 1/60 s older than the 60 fps one
        assert np.abs(at30 - at60).max() <= 1, (at30, at60)
        assert np.all((at60[:, -1] - at60[:, 0]) >= 0.7 * 0.8 * SPEED)  # each clip spans ~0.8 s
    if sampling == "random":  # evaluation: centred window, frames every 0.1 s, on exact frame times
        one = SamplingConfig(sampling="random", frames=8, short_side=16, clip_seconds=0.8)
        assert sampled(rows[30], one).tolist() == sampled(rows[60], one).tolist() == [[36 + 6 * k for k in range(8)]]


def test_frame_count_sampling_differs_between_frame_rates(bars) -> None:
    """Why the options exist: 8 consecutive frames are 0.27 s at 30 fps but 0.13 s at 60 fps."""
    _, rows = bars
    cfg = SamplingConfig(sampling="random", frames=8, stride=1, short_side=16)
    span30, span60 = (np.ptp(sampled(rows[fps], cfg)) for fps in (30, 60))
    assert (span30, span60) == (14, 7)


def test_target_fps_resamples_before_sampling(bars) -> None:
    _, rows = bars
    cfg = SamplingConfig(sampling="random", frames=8, stride=2, short_side=16, target_fps=30)
    at30, at60 = sampled(rows[30], cfg), sampled(rows[60], cfg)
    plain = SamplingConfig(sampling="random", frames=8, stride=2, short_side=16)
    assert at30.tolist() == at60.tolist() == sampled(rows[30], plain).tolist()  # 30 fps at 30 fps: unchanged
    both = SamplingConfig(sampling="dense", frames=4, short_side=16, target_fps=15, clip_seconds=0.8)
    assert sampled(rows[30], both).tolist() == sampled(rows[60], both).tolist()


def test_sample_stage_caches_by_seconds(bars) -> None:
    ws, rows = bars
    cfg = SamplingConfig(frames=4, short_side=16, clip_seconds=1.0, target_fps=20)
    result = run_sample(ws, cfg, SampleConfig(workers=0))
    assert result["key"] == "uniform-t4-s2-ss16-v1-seed0-cs1-fps20" and result["videos"] == 2
    default = run_sample(ws, SamplingConfig(frames=4, short_side=16), SampleConfig(workers=0))
    params = (Path(default["path"]) / "params.json").read_text()
    assert "clip_seconds" not in params and "target_fps" not in params  # as caches made before the options


def test_sampling_config_keys_and_checks() -> None:
    assert SamplingConfig(frames=16, stride=2).key == "uniform-t16-s2-ss128-v1-seed0"  # unchanged
    assert SamplingConfig(frames=16, clip_seconds=2.5, target_fps=15).key == "uniform-t16-s2-ss128-v1-seed0-cs2.5-fps15"
    assert "clip_seconds" not in SamplingConfig().to_dict()
    assert SamplingConfig(**SamplingConfig(clip_seconds=2.0).to_dict()).clip_seconds == 2.0
    with pytest.raises(UserError, match="--clip-seconds must be positive"):
        SamplingConfig(clip_seconds=0)
    with pytest.raises(UserError, match="--target-fps must be positive"):
        SamplingConfig(target_fps=-1.0)
    with pytest.raises(UserError, match="drop --stride"):
        SamplingConfig(sampling="random", stride=2, clip_seconds=1.0)
    with pytest.raises(NoFrameRate):
        SamplingConfig(clip_seconds=1.0).views(100, train=False, video_id="x", fps=0.0)
    assert SamplingConfig().views(100, train=False, video_id="x") == SamplingConfig().views(
        100, train=False, video_id="x", fps=25.0)  # frame-count sampling ignores fps


def test_timeline_formulas() -> None:
    assert resample_map(60, 30.0, 15.0).tolist() == list(range(0, 60, 2))
    assert len(resample_map(61, 30.0, 15.0)) == 31  # frame 60 is at 2.0 s: still inside the video
    assert resample_map(4, 10.0, 20.0).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # upsampling repeats frames
    assert resample_map(25, 29.97, 30.0).max() == 24
    rng = np.random.default_rng(0)
    # shorter than the window: the clip loops and keeps its speed
    assert seconds_views(10, 10.0, sampling="random", frames=4, seconds=2.0, train=False, rng=rng,
                         num_views=1) == [[0, 5, 0, 5]]
    # dense: a window every S seconds plus one ending on the last frame
    views = seconds_views(25, 10.0, sampling="dense", frames=2, seconds=1.0, train=False, rng=rng, num_views=1)
    assert views == [[0, 5], [10, 15], [15, 20]]
