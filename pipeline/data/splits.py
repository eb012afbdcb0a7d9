"""Train/val/test splits: the stratified split ``vtl prepare`` assigns, the splits a run trains on,
and the seeded label fractions (``--fraction``) of the train split.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pipeline.data.cache import ClipCache
from pipeline.data.formats.base import SPLITS
from pipeline.errors import UserError


def assign_splits(rows: list[dict], val_fraction: float, test_fraction: float, seed: int,
                  carve: tuple[str, ...] = ("val", "test")) -> list[str]:
    """Carve the splits in ``carve`` out of the train pool, stratified and deterministic; returns warnings.

    The pool is every row in train or without a split (``carve`` comes from the format
    reader: the splits its dataset does not define). Per class, after a seeded shuffle:
    ``round(n × test_fraction)`` to test and ``round(n × val_fraction)`` to val when carved, at
    least one each when the fraction is positive and the class has 3+ files; the rest (and every
    row without a split) to train. A class with fewer than 3 files in the pool keeps them all in
    train (with a warning).
    """
    warnings = []
    fractions = (val_fraction if "val" in carve else 0.0, test_fraction if "test" in carve else 0.0)
    by_class: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["split"] in ("", "train"):
            by_class[r["label"]].append(r)
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda r: r["path"])
        rng = np.random.default_rng([seed, int(hashlib.md5(label.encode()).hexdigest()[:8], 16)])
        order = rng.permutation(len(members))
        n_val, n_test = (_count(len(members), f) for f in fractions)
        if len(members) < 3 and (n_val or n_test or any(fractions)):
            warnings.append(f"class {label!r} has only {len(members)} usable file(s): all kept in train")
            n_val = n_test = 0
        for rank, i in enumerate(order):
            members[i]["split"] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return warnings


def _count(n: int, fraction: float) -> int:
    if fraction <= 0 or n < 3:
        return 0
    return min(max(1, round(n * fraction)), n - 1)


@dataclass
class Split:
    """The videos of one split that have cached clips, and their label indices."""

    ids: list[str]
    labels: list[int]


def load_splits(manifest: Iterable[dict[str, str]], cache: ClipCache, classes: list[str], fraction: float,
                seed: int) -> dict[str, Split]:
    """Every split's cached videos (manifest order); with ``fraction`` < 1 a seeded stratified
    subset of train."""
    index = {c: i for i, c in enumerate(classes)}
    splits = {name: Split([], []) for name in SPLITS}
    for r in manifest:
        if cache.has(r["id"]):
            splits[r["split"]].ids.append(r["id"])
            splits[r["split"]].labels.append(index[r["label"]])
    if fraction < 1.0:
        splits["train"] = stratified_fraction(splits["train"], fraction, seed)
    if not splits["train"].ids:
        raise UserError(f"no training clips in {cache.root}: was `vtl sample` run on this workspace?")
    return splits


def stratified_fraction(split: Split, fraction: float, seed: int) -> Split:
    """A seeded subset with ``ceil(n × fraction)`` (at least 1) samples of every class."""
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    labels = np.asarray(split.labels)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = max(1, math.ceil(len(members) * fraction))
        keep.extend(rng.choice(members, size=k, replace=False).tolist())
    keep.sort()
    return Split([split.ids[i] for i in keep], [split.labels[i] for i in keep])
