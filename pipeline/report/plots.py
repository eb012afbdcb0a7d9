"""Plots for reports (matplotlib with the Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.files import replaced_on_success  # noqa: E402


def _save(fig, path: Path) -> None:
    try:
        with replaced_on_success(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: Path, *, title: str = "") -> None:
    """Row-normalised confusion matrix (recall on the diagonal) with counts in the cells."""
    n = len(classes)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    _save(fig, path)


def plot_bars(labels: Sequence[str], values: Sequence[float], path: Path, *, title: str, ylabel: str,
              reference: float | None = None, reference_label: str = "") -> None:
    """Horizontal bars, one per run; an optional dashed reference line (e.g. scratch)."""
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(labels) + 1.5))
    y = np.arange(len(labels))
    ax.barh(y, values, color="#4C72B0")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    for i, v in enumerate(values):
        ax.text(min(v + 0.01, 0.93), i, f"{v:.2f}", va="center", fontsize=8)
    if reference is not None:
        ax.axvline(reference, color="black", linestyle="--", linewidth=1, label=reference_label)
        ax.legend(loc="lower right")
    ax.set_xlabel(ylabel)
    ax.set_title(title)
    _save(fig, path)


def plot_mistakes(items: Sequence[dict], path: Path, *, columns: int = 4) -> None:
    """A grid of images with their true and predicted class (most confident mistakes first).

    ``items``: dicts with ``path`` (an image file), ``label``, ``predicted``, ``probability``.
    """
    from PIL import Image

    n = max(1, len(items))
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, item in zip(axes.ravel(), items, strict=False):
        with Image.open(item["path"]) as img:
            ax.imshow(img.convert("RGB"))
        ax.set_title(f"true: {item['label']}\npred: {item['predicted']} ({float(item['probability']):.2f})",
                     fontsize=8, color="darkred")
    if not items:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle("Most confident mistakes")
    _save(fig, path)


def plot_timeline(tracks: Sequence[tuple[str, Sequence[dict], float]], path: Path) -> None:
    """One lane per video: its merged segments (``{start, end, label}``) coloured by label, named."""
    labels = sorted({s["label"] for _, segments, _ in tracks for s in segments})
    colours = {label: plt.get_cmap("tab20")(k % 20) for k, label in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(tracks) + 1.2))
    for lane, (_, segments, _) in enumerate(tracks):
        for s in segments:
            ax.broken_barh([(s["start"], s["end"] - s["start"])], (lane - 0.4, 0.8), color=colours[s["label"]])
            ax.text((s["start"] + s["end"]) / 2, lane, s["label"], ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(tracks)), [Path(name).name for name, _, _ in tracks], fontsize=8)
    ax.set_xlim(0, max((duration for _, _, duration in tracks), default=1.0))
    ax.set_ylim(len(tracks) - 0.5, -0.5)
    ax.set_xlabel("seconds")
    _save(fig, path)
