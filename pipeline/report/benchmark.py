"""The numbers of a benchmark: rules and verdicts of a source × strategy × fraction × seed grid.

The numbers are pure functions of the result rows (one dict per cell with ``source``,
``backbone``, ``strategy``, ``fraction``, ``seed``, ``top1`` …), so they can be checked on
hand-made numbers:

* :func:`add_transfer_gains`: ``transfer_gain`` = top-1 − the scratch top-1 of the same backbone
  at the same fraction and seed;
* :func:`negative_transfer`: a source × strategy whose mean top-1 at a fraction is below
  scratch's by more than the seed spread, ``max(std of the source, std of scratch, 0.01)``;
* :func:`measured_ranking`: each source's best strategy, its mean over seeds and fractions and
  the spread over seeds;
* :func:`rank_agreement`: Kendall's tau between a transferability score and the measured means.

:func:`summarize` adds the verdicts against the scratch baselines (:func:`beats`: above by more than
the seed spread), the best scratch model as a row of its own, and the cost of every source: the
content of ``summary.json``. :mod:`pipeline.report.benchmark_report` writes the files.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.choices import SCRATCH
from pipeline.provenance import KEY as PROVENANCE
from pipeline.transfer.transferability import kendall_tau

MIN_SPREAD = 0.01  # the smallest seed spread the negative-transfer rule allows
NEGATIVE = "NEGATIVE TRANSFER"


# ----------------------------------------------------------------------------- numbers


def spread(values: Sequence[float]) -> float:
    """Standard deviation over seeds (sample std, ddof=1); 0 for a single seed."""
    v = np.asarray([x for x in values if not is_missing(x)], dtype=np.float64)
    return float(v.std(ddof=1)) if v.size > 1 else 0.0


def is_missing(x: Any) -> bool:
    """No value: None, an empty CSV field or NaN."""
    return x is None or x == "" or (isinstance(x, float) and math.isnan(x))


def _key(r: Mapping[str, Any]) -> tuple[str, float]:
    return r["backbone"], float(r["fraction"])


def add_transfer_gains(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set ``transfer_gain`` on every row: top-1 − scratch top-1 of the same backbone, fraction
    and seed (0 for scratch rows, ``None`` when that scratch cell is missing)."""
    rows = list(rows)
    scratch = {(*_key(r), int(r["seed"])): float(r["top1"]) for r in rows
               if r["strategy"] == SCRATCH and not is_missing(r["top1"])}
    for r in rows:
        base = scratch.get((*_key(r), int(r["seed"])))
        r["transfer_gain"] = None if base is None or is_missing(r["top1"]) else float(r["top1"]) - base
    return rows


def aggregate(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str, float], dict[str, Any]]:
    """Mean and spread over seeds of top-1 per (source, backbone, strategy, fraction)."""
    groups: dict[tuple[str, str, str, float], dict[int, float]] = defaultdict(dict)
    for r in rows:
        groups[(r["source"], r["backbone"], r["strategy"], float(r["fraction"]))][int(r["seed"])] = float(r["top1"])
    return {k: {"mean": float(np.mean(list(v.values()))), "std": spread(list(v.values())), "seeds": v}
            for k, v in groups.items()}


def negative_transfer(rows: Iterable[Mapping[str, Any]], min_spread: float = MIN_SPREAD) -> list[dict[str, Any]]:
    """The (source, strategy, fraction) cells whose mean top-1 over seeds is below scratch's
    (same backbone and fraction) by more than ``max(std source, std scratch, min_spread)``."""
    stats = aggregate(rows)
    scratch = {(b, f): s for (_, b, strategy, f), s in stats.items() if strategy == SCRATCH}
    flags = []
    for (source, backbone, strategy, fraction), s in sorted(stats.items(), key=lambda kv: grid_order(kv[0])):
        base = scratch.get((backbone, fraction))
        if strategy == SCRATCH or base is None:
            continue
        margin = max(s["std"], base["std"], min_spread)
        deficit = base["mean"] - s["mean"]
        if deficit > margin:
            flags.append({"source": source, "backbone": backbone, "strategy": strategy, "fraction": fraction,
                          "mean": s["mean"], "std": s["std"], "scratch_mean": base["mean"],
                          "scratch_std": base["std"], "deficit": deficit, "margin": margin})
    return flags


def grid_order(k: tuple[str, str, str, float]) -> tuple:
    """The order of the per-fraction table: sources by name, strategy and fraction, scratch last."""
    source, backbone, strategy, fraction = k
    return (strategy == SCRATCH, source, strategy, fraction, backbone)


def measured_ranking(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Sources from best to worst by the mean top-1 (over seeds and fractions) of their best
    strategy; ``spread`` is the std over seeds of the per-seed means over fractions."""
    per: dict[tuple[str, str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["strategy"] != SCRATCH:
            per[(r["source"], r["backbone"], r["strategy"])][int(r["seed"])].append(float(r["top1"]))
    best: dict[str, dict[str, Any]] = {}
    for (source, backbone, strategy), by_seed in sorted(per.items()):
        seed_means = [float(np.mean(v)) for _, v in sorted(by_seed.items())]
        mean = float(np.mean([x for v in by_seed.values() for x in v]))
        entry = {"source": source, "backbone": backbone, "best_strategy": strategy, "top1_mean": mean,
                 "top1_spread": spread(seed_means)}
        if source not in best or mean > best[source]["top1_mean"]:
            best[source] = entry
    ranking = sorted(best.values(), key=lambda e: (-e["top1_mean"], e["source"]))
    for i, e in enumerate(ranking, start=1):
        e["rank"] = i
    return ranking


def scratch_baselines(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per backbone, its scratch runs' mean top-1 over seeds and fractions and the spread over seeds
    of the per-seed means (as :func:`measured_ranking` does for sources)."""
    by_seed: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["strategy"] == SCRATCH:
            by_seed[r["backbone"]][int(r["seed"])].append(float(r["top1"]))
    return {b: {"backbone": b, "top1_mean": float(np.mean([x for v in seeds.values() for x in v])),
                "top1_spread": spread([float(np.mean(v)) for _, v in sorted(seeds.items())])}
            for b, seeds in sorted(by_seed.items())}


def best_scratch(baselines: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The strongest baseline: the best model trained from scratch over every backbone of the grid."""
    return dict(max(baselines.values(), key=lambda b: (b["top1_mean"], b["backbone"]))) if baselines else None


def beats(entry: Mapping[str, Any], baseline: Mapping[str, Any] | None, min_spread: float = MIN_SPREAD) -> bool | None:
    """Above ``baseline`` by more than the seed spread, ``max(either spread, min_spread)``: the same
    margin the negative-transfer rule uses the other way. None without a baseline."""
    if baseline is None:
        return None
    margin = max(entry["top1_spread"], baseline["top1_spread"], min_spread)
    return bool(entry["top1_mean"] - baseline["top1_mean"] > margin)


def verdict(entry: Mapping[str, Any]) -> str:
    """One phrase from the two verdicts (docs/benchmark.md explains them)."""
    if entry.get("beats_best_scratch"):
        return "worth it: beats every model trained from scratch"
    if entry.get("beats_own_scratch"):
        return "beats its own backbone from scratch, not the best scratch model"
    return "no better than training from scratch"


def rank_agreement(scores: Mapping[str, float | None], measured: Mapping[str, float]) -> float | None:
    """Kendall's tau-b between a transferability score and the measured mean top-1 over the
    sources that have both; ``None`` when fewer than two sources do or one side is constant."""
    names = [n for n in measured if n in scores and not is_missing(scores[n])]
    if len(names) < 2:
        return None
    tau = kendall_tau([float(scores[n]) for n in names], [measured[n] for n in names])  # type: ignore[arg-type]
    return None if math.isnan(tau) else tau


@dataclass
class BenchmarkResults:
    """Everything a benchmark report is made of."""

    rows: list[dict[str, Any]]  # one per cell (results.csv), with transfer_gain, status and error
    transferability: list[dict[str, Any]]  # one per source: source, logme, leep (None = n/a), predicted_rank
    costs: dict[str, dict[str, float]] = field(default_factory=dict)  # source or cost_key(scratch backbone)
    pretraining: dict[str, dict[str, Any]] = field(default_factory=dict)  # source dataset → seconds, val_top1
    lr_selection: list[dict[str, Any]] | None = None  # the --select-lr table (None: one rate per cell)
    workspace_name: str = ""
    num_test_videos: int | None = None
    provenance: dict[str, Any] | None = None  # where the benchmark ran (pipeline.provenance.collect)

    @property
    def finished(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("status") != "failed"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("status") == "failed"]


def scratch_cost_key(backbone: str) -> str:
    """The ``costs`` key of a backbone's scratch baseline ("/" cannot occur in a source name)."""
    return f"{SCRATCH}/{backbone}"


SUMMARY_RANKING_KEYS = ("source", "backbone", "best_strategy", "top1_mean", "top1_spread", "rank",
                        "beats_own_scratch", "beats_best_scratch", "lr", "params", "gflops", "latency_ms",
                        "throughput", "train_seconds", "pretrain_seconds", "pretrain_val_top1", "verdict")


def summarize(res: BenchmarkResults) -> dict[str, Any]:
    """``summary.json``: the ranking (the best scratch model a row of its own), the best scratch
    baseline, the negative-transfer flags, the failed cells and Kendall's tau of each score."""
    rows = res.finished
    baselines = scratch_baselines(rows)
    strongest = best_scratch(baselines)
    entries = []
    for e in measured_ranking(rows):
        cost = res.costs.get(e["source"], {})
        pre = res.pretraining.get(e["source"], {})
        entry = {**e, "beats_own_scratch": beats(e, baselines.get(e["backbone"])),
                 "beats_best_scratch": beats(e, strongest), **_cell_figures(rows, e["source"], e["best_strategy"]),
                 **{k: cost.get(k) for k in COST_KEYS}, "pretrain_seconds": pre.get("seconds"),
                 "pretrain_val_top1": pre.get("val_top1")}
        entries.append({**entry, "verdict": verdict(entry)})
    if strongest is not None:
        cost = res.costs.get(scratch_cost_key(strongest["backbone"]), {})
        entries.append({"source": SCRATCH, "backbone": strongest["backbone"], "best_strategy": SCRATCH,
                        "top1_mean": strongest["top1_mean"], "top1_spread": strongest["top1_spread"],
                        "beats_own_scratch": None, "beats_best_scratch": None,
                        **_cell_figures(rows, SCRATCH, SCRATCH, strongest["backbone"]),
                        **{k: cost.get(k) for k in COST_KEYS}, "pretrain_seconds": None, "pretrain_val_top1": None,
                        "verdict": "the strongest baseline: the best model trained from scratch"})
    entries.sort(key=lambda e: (-e["top1_mean"], e["source"] == SCRATCH, e["source"]))
    for i, e in enumerate(entries, start=1):
        e["rank"] = i
    measured = {e["source"]: e["top1_mean"] for e in entries if e["source"] != SCRATCH}
    scores = {t["source"]: t for t in res.transferability}
    flags = negative_transfer(rows)
    return {"ranking": [_rounded({k: e.get(k) for k in SUMMARY_RANKING_KEYS}) for e in entries],
            "best_scratch": None if strongest is None else _rounded(strongest),
            "negative_transfer": sorted({f["source"] for f in flags}),
            "flags": [_rounded(f) for f in flags],
            "failed_cells": [{"run": r["run"], "error": r["error"]} for r in res.failed],
            "kendall_tau": {k: rank_agreement({s: t.get(k) for s, t in scores.items()}, measured)
                            for k in ("logme", "leep")},
            "lr_selection": res.lr_selection is not None, PROVENANCE: res.provenance}


COST_KEYS = ("params", "gflops", "latency_ms", "throughput")


def _cell_figures(rows: Sequence[Mapping[str, Any]], source: str, strategy: str,
                  backbone: str | None = None) -> dict[str, Any]:
    """The learning rate and the mean training seconds of one source × strategy's cells."""
    mine = [r for r in rows if r["source"] == source and r["strategy"] == strategy
            and (backbone is None or r["backbone"] == backbone)]
    lrs = sorted({float(r["lr"]) for r in mine if not is_missing(r.get("lr"))})
    seconds = [float(r["train_seconds"]) for r in mine if not is_missing(r.get("train_seconds"))]
    return {"lr": lrs[0] if len(lrs) == 1 else (lrs or None),
            "train_seconds": float(np.mean(seconds)) if seconds else None}


def _rounded(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) and math.isfinite(v) else
            (None if isinstance(v, float) else v) for k, v in d.items()}


__all__ = ["BenchmarkResults", "add_transfer_gains", "aggregate", "beats", "best_scratch", "measured_ranking",
           "negative_transfer", "rank_agreement", "scratch_baselines", "scratch_cost_key", "spread", "summarize",
           "verdict"]
