"""Classification metrics on numpy arrays: pure functions, tested on hand-made cases.

Clip level treats every view as a sample; video level first averages the
softmax of a video's views (the usual multi-view protocol of the literature).
"""

from __future__ import annotations

import numpy as np


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    if len(labels) == 0:
        return 0.0
    k = min(k, probs.shape[1])
    topk = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(topk == labels[:, None], axis=1)))


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[true, predicted]`` counts."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels.astype(int), preds.astype(int)), 1)
    return cm


def mean_class_accuracy(cm: np.ndarray) -> float:
    """Mean of per-class recall over the classes that have samples."""
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return 0.0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def per_class(cm: np.ndarray) -> list[dict[str, float]]:
    """Precision, recall, F1 and support of each class (0 where undefined)."""
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    support = cm.sum(axis=1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return [{"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for p, r, f, s in zip(precision, recall, f1, support, strict=True)]


def video_level(probs: np.ndarray, labels: np.ndarray, video: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average the views of each video: returns (video ids, mean probs, labels)."""
    ids, inverse = np.unique(video, return_inverse=True)
    sums = np.zeros((len(ids), probs.shape[1]))
    np.add.at(sums, inverse, probs)
    counts = np.bincount(inverse, minlength=len(ids))[:, None]
    vlabels = np.zeros(len(ids), dtype=np.int64)
    vlabels[inverse] = labels
    return ids, sums / counts, vlabels


def summarize(probs: np.ndarray, labels: np.ndarray, video: np.ndarray, num_classes: int) -> dict:
    """The contract's metrics: clip-level top1/top5/mean class accuracy, and video-level ones."""
    cm = confusion_matrix(labels, probs.argmax(1), num_classes)
    _, vprobs, vlabels = video_level(probs, labels, video)
    vcm = confusion_matrix(vlabels, vprobs.argmax(1), num_classes)
    return {
        "top1": topk_accuracy(probs, labels, 1),
        "top5": topk_accuracy(probs, labels, 5),
        "mean_class_accuracy": mean_class_accuracy(cm),
        "num_samples": int(len(labels)),
        "video_top1": topk_accuracy(vprobs, vlabels, 1),
        "video_top5": topk_accuracy(vprobs, vlabels, 5),
        "video_mean_class_accuracy": mean_class_accuracy(vcm),
        "num_videos": int(len(vlabels)),
    }
