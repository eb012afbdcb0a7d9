"""Metrics on a hand-made case whose every number is worked out in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.engine.metrics import (
    confusion_matrix,
    mean_class_accuracy,
    per_class,
    summarize,
    topk_accuracy,
    video_level,
)

# 4 classes are declared; class 3 has no sample at all (it must not drag mean class accuracy down).
# Three videos, two views (clips) each. Video ids are deliberately unsorted and the views interleaved,
# so video-level grouping cannot rely on order.
#
#   video 30 (label 0): a = [.7 .2 .1 0] -> pred 0 (right)     b = [.1 .5 .4 0] -> pred 1 (wrong; top-2 {1,2} misses)
#                       mean = [.40 .35 .25 0] -> pred 0 (right)
#   video 10 (label 1): a = [.1 .2 .7 0] -> pred 2 (wrong; top-2 {2,1} hits)   b = [.2 .6 .2 0] -> pred 1 (right)
#                       mean = [.15 .40 .45 0] -> pred 2 (wrong)
#   video 20 (label 2): a = [.1 .3 .6 0] -> pred 2 (right)     b = [.3 .1 .6 0] -> pred 2 (right)
#                       mean = [.20 .20 .60 0] -> pred 2 (right)
V30A, V30B = [0.7, 0.2, 0.1, 0.0], [0.1, 0.5, 0.4, 0.0]
V10A, V10B = [0.1, 0.2, 0.7, 0.0], [0.2, 0.6, 0.2, 0.0]
V20A, V20B = [0.1, 0.3, 0.6, 0.0], [0.3, 0.1, 0.6, 0.0]

PROBS = np.array([V30A, V10A, V20A, V10B, V30B, V20B])
LABELS = np.array([0, 1, 2, 1, 0, 2])
VIDEOS = np.array([30, 10, 20, 10, 30, 20])
NUM_CLASSES = 4


def test_topk_accuracy_clip_level() -> None:
    # top-1: rights are V30A, V20A, V10B, V20B = 4 of 6.
    assert topk_accuracy(PROBS, LABELS, 1) == pytest.approx(4 / 6)
    # top-2: only V30B misses (its top-2 is {1, 2}, label 0) = 5 of 6.
    assert topk_accuracy(PROBS, LABELS, 2) == pytest.approx(5 / 6)
    # top-5 with only 4 classes: k is clipped to 4, every label is in the top 4 = 1.
    assert topk_accuracy(PROBS, LABELS, 5) == 1.0


def test_topk_of_nothing_is_zero() -> None:
    assert topk_accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int), 1) == 0.0


def test_confusion_matrix_rows_are_true_labels() -> None:
    # Two samples of class 0 predicted as 1: the count sits at row 0 (true), column 1 (predicted).
    cm = confusion_matrix(np.array([0, 0]), np.array([1, 1]), 2)
    assert cm.tolist() == [[0, 2], [0, 0]]

    cm = confusion_matrix(LABELS, PROBS.argmax(1), NUM_CLASSES)
    # clip-level preds: V30A 0, V10A 2, V20A 2, V10B 1, V30B 1, V20B 2
    assert cm.tolist() == [
        [1, 1, 0, 0],  # class 0: V30A right, V30B -> 1
        [0, 1, 1, 0],  # class 1: V10B right, V10A -> 2
        [0, 0, 2, 0],  # class 2: both right
        [0, 0, 0, 0],  # class 3: no samples
    ]
    assert cm.sum() == len(LABELS)


def test_mean_class_accuracy_skips_classes_without_samples() -> None:
    cm = confusion_matrix(LABELS, PROBS.argmax(1), NUM_CLASSES)
    # recalls: class 0 1/2, class 1 1/2, class 2 2/2; class 3 has no samples and is excluded:
    # (0.5 + 0.5 + 1) / 3 = 2/3  (counting class 3 as 0 would give 2/4 = 0.5)
    assert mean_class_accuracy(cm) == pytest.approx(2 / 3)
    assert mean_class_accuracy(np.zeros((3, 3), dtype=int)) == 0.0


def test_per_class_precision_recall_f1() -> None:
    stats = per_class(confusion_matrix(LABELS, PROBS.argmax(1), NUM_CLASSES))
    # class 0: tp 1; predicted as 0: 1 (column 0) -> precision 1; support 2 -> recall 1/2;
    #          F1 = 2 * 1 * 0.5 / 1.5 = 2/3
    # class 1: tp 1; column 1 = 1 + 1 = 2 -> precision 1/2; recall 1/2; F1 = 1/2
    # class 2: tp 2; column 2 = 1 + 2 = 3 -> precision 2/3; recall 1; F1 = 2 * (2/3) / (5/3) = 4/5
    # class 3: nothing predicted, no support -> 0 everywhere (undefined is reported as 0)
    expected = [(1.0, 0.5, 2 / 3, 2), (0.5, 0.5, 0.5, 2), (2 / 3, 1.0, 0.8, 2), (0.0, 0.0, 0.0, 0)]
    assert len(stats) == NUM_CLASSES
    for got, (p, r, f, s) in zip(stats, expected, strict=True):
        assert got["precision"] == pytest.approx(p)
        assert got["recall"] == pytest.approx(r)
        assert got["f1"] == pytest.approx(f)
        assert got["support"] == s


def test_video_level_averages_views() -> None:
    ids, vprobs, vlabels = video_level(PROBS, LABELS, VIDEOS)
    assert ids.tolist() == [10, 20, 30]  # sorted video ids
    by_id = dict(zip(ids.tolist(), vprobs, strict=True))
    np.testing.assert_allclose(by_id[30], [0.40, 0.35, 0.25, 0.0])  # (V30A + V30B) / 2
    np.testing.assert_allclose(by_id[10], [0.15, 0.40, 0.45, 0.0])  # (V10A + V10B) / 2
    np.testing.assert_allclose(by_id[20], [0.20, 0.20, 0.60, 0.0])  # (V20A + V20B) / 2
    assert vlabels.tolist() == [1, 2, 0]  # labels of videos 10, 20, 30


def test_video_level_with_unequal_view_counts() -> None:
    # video 1 has 3 views, video 2 one: the mean is over each video's own views.
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.25, 0.75]])
    ids, vprobs, vlabels = video_level(probs, np.array([1, 1, 1, 0]), np.array([1, 1, 1, 2]))
    assert ids.tolist() == [1, 2]
    np.testing.assert_allclose(vprobs, [[1 / 3, 2 / 3], [0.25, 0.75]])
    assert vlabels.tolist() == [1, 0]


def test_summarize_has_clip_and_video_metrics() -> None:
    m = summarize(PROBS, LABELS, VIDEOS, NUM_CLASSES)
    assert m["top1"] == pytest.approx(4 / 6)
    assert m["top5"] == 1.0
    assert m["mean_class_accuracy"] == pytest.approx(2 / 3)
    assert m["num_samples"] == 6
    # video level: preds 0 (video 30, label 0) right, 2 (video 10, label 1) wrong, 2 (video 20, label 2) right
    assert m["video_top1"] == pytest.approx(2 / 3)
    assert m["video_top5"] == 1.0
    # video recalls: class 0 1/1, class 1 0/1, class 2 1/1 -> 2/3 (class 3 excluded)
    assert m["video_mean_class_accuracy"] == pytest.approx(2 / 3)
    assert m["num_videos"] == 3
    for key in ("top1", "top5", "mean_class_accuracy", "video_top1", "video_top5", "video_mean_class_accuracy"):
        assert 0.0 <= m[key] <= 1.0
