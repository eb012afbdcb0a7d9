"""``WORKSPACE/benchmark/``: tables, rules and plots of a source × strategy × fraction × seed grid.

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

:func:`write_report` writes ``report.md``, ``learning_curve.png`` and ``best_strategy.png``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.files import write_text
from pipeline.report.markdown import table
from pipeline.report.plots import _save, plot_bars
from pipeline.transfer.transferability import kendall_tau

SCRATCH = "scratch"
MIN_SPREAD = 0.01  # the smallest seed spread the negative-transfer rule allows
NEGATIVE = "NEGATIVE TRANSFER"


# ----------------------------------------------------------------------------- numbers


def spread(values: Sequence[float]) -> float:
    """Standard deviation over seeds (sample std, ddof=1); 0 for a single seed."""
    v = np.asarray([x for x in values if not _missing(x)], dtype=np.float64)
    return float(v.std(ddof=1)) if v.size > 1 else 0.0


def _missing(x: Any) -> bool:
    return x is None or x == "" or (isinstance(x, float) and math.isnan(x))


def _key(r: Mapping[str, Any]) -> tuple[str, float]:
    return r["backbone"], float(r["fraction"])


def add_transfer_gains(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set ``transfer_gain`` on every row: top-1 − scratch top-1 of the same backbone, fraction
    and seed (0 for scratch rows, ``None`` when that scratch cell is missing)."""
    rows = list(rows)
    scratch = {(*_key(r), int(r["seed"])): float(r["top1"]) for r in rows
               if r["strategy"] == SCRATCH and not _missing(r["top1"])}
    for r in rows:
        base = scratch.get((*_key(r), int(r["seed"])))
        r["transfer_gain"] = None if base is None or _missing(r["top1"]) else float(r["top1"]) - base
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
    for (source, backbone, strategy, fraction), s in sorted(stats.items(), key=lambda kv: _sort_key(kv[0])):
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


def _sort_key(k: tuple[str, str, str, float]) -> tuple:
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
        entry = {"source": source, "backbone": backbone, "best_strategy": strategy, "mean": mean,
                 "spread": spread(seed_means)}
        if source not in best or mean > best[source]["mean"]:
            best[source] = entry
    ranking = sorted(best.values(), key=lambda e: (-e["mean"], e["source"]))
    for i, e in enumerate(ranking, start=1):
        e["rank"] = i
    return ranking


def rank_agreement(scores: Mapping[str, float | None], measured: Mapping[str, float]) -> float | None:
    """Kendall's tau-b between a transferability score and the measured mean top-1 over the
    sources that have both; ``None`` when fewer than two sources do or one side is constant."""
    names = [n for n in measured if n in scores and not _missing(scores[n])]
    if len(names) < 2:
        return None
    tau = kendall_tau([float(scores[n]) for n in names], [measured[n] for n in names])  # type: ignore[arg-type]
    return None if math.isnan(tau) else tau


# ----------------------------------------------------------------------------- plots


def plot_learning_curve(rows: Sequence[Mapping[str, Any]], path: Path, *, title: str = "") -> None:
    """Top-1 (mean over seeds, bars = std) against labelled training examples per class; one
    line per source/strategy, the scratch baseline of each backbone dashed."""
    import matplotlib.pyplot as plt

    stats = aggregate(rows)
    x_of = {float(r["fraction"]): float(r["examples_per_class"]) for r in rows if "examples_per_class" in r}
    lines: dict[tuple[str, str, str], list[tuple[float, float, float]]] = defaultdict(list)
    for (source, backbone, strategy, fraction), s in stats.items():
        lines[(source, backbone, strategy)].append((x_of.get(fraction, fraction), s["mean"], s["std"]))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for (source, backbone, strategy), pts in sorted(lines.items(), key=lambda kv: (kv[0][2] == SCRATCH, kv[0])):
        pts.sort()
        xs, ys, es = zip(*pts, strict=True)
        scratch = strategy == SCRATCH
        label = f"scratch ({backbone})" if scratch else f"{source} / {strategy}"
        ax.errorbar(xs, ys, yerr=es, marker="o", markersize=4, capsize=3, label=label,
                    linestyle="--" if scratch else "-", color="black" if scratch and len(lines) < 12 else None)
    xs_all = sorted({p[0] for pts in lines.values() for p in pts})
    if xs_all and xs_all[-1] / max(xs_all[0], 1e-9) >= 8:
        ax.set_xscale("log")
    ax.set_xticks(xs_all, [f"{x:g}" for x in xs_all])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("labelled training examples per class")
    ax.set_ylabel("test top-1 (video level)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "Learning curves")
    _save(fig, path)


def plot_best_strategy(ranking: Sequence[Mapping[str, Any]], scratch: Mapping[str, float], path: Path) -> None:
    """One bar per source (its best strategy), plus each backbone's scratch baseline."""
    labels = [f"{e['source']} ({e['best_strategy']})" for e in ranking]
    values = [e["mean"] for e in ranking]
    for backbone, v in sorted(scratch.items()):
        labels.append(f"scratch ({backbone})")
        values.append(v)
    plot_bars(labels, values, path, title="Best strategy per source (mean over fractions and seeds)",
              ylabel="test top-1 (video level)")


# ----------------------------------------------------------------------------- report.md


def _fmt_opt(x: Any, digits: int = 3) -> str:
    return "n/a" if _missing(x) else f"{float(x):.{digits}f}"


def format_flag(flag: Mapping[str, Any]) -> str:
    return (f"negative transfer: {flag['source']} / {flag['strategy']} at fraction {flag['fraction']:g}: "
            f"top-1 {flag['mean']:.3f} vs scratch {flag['scratch_mean']:.3f} ({flag['backbone']}), "
            f"{flag['deficit']:.3f} below, more than the seed spread {flag['margin']:.3f}")


def write_report(out: Path, rows: Sequence[dict[str, Any]], transferability: Sequence[Mapping[str, Any]],
                 *, workspace_name: str, num_test_videos: int | None = None) -> dict[str, Any]:
    """Write ``report.md``, ``learning_curve.png`` and ``best_strategy.png`` into ``out``.

    ``rows``: the results (with ``transfer_gain`` and ``examples_per_class``); rows whose ``status``
    is ``failed`` (with their ``error``) are listed, and left out of every number;
    ``transferability``: one dict per source with ``source``, ``logme``, ``leep`` (None = n/a).
    Returns the ranking, the flags, the tau values and the failed cells.
    """
    failed = [r for r in rows if r.get("status") == "failed"]
    rows = [r for r in rows if r.get("status") != "failed"]
    stats = aggregate(rows)
    flags = negative_transfer(rows)
    flagged = {(f["source"], f["strategy"], f["fraction"]) for f in flags}
    ranking = measured_ranking(rows)
    measured = {e["source"]: e["mean"] for e in ranking}
    scores = {t["source"]: t for t in transferability}
    taus = {k: rank_agreement({s: t.get(k) for s, t in scores.items()}, measured) for k in ("logme", "leep")}
    scratch_means = {}
    for (_, backbone, strategy, _), s in stats.items():
        if strategy == SCRATCH:
            scratch_means.setdefault(backbone, []).append(s["mean"])
    scratch_overall = {b: float(np.mean(v)) for b, v in scratch_means.items()}

    plot_learning_curve(rows, out / "learning_curve.png", title=f"Learning curves on {workspace_name}")
    plot_best_strategy(ranking, scratch_overall, out / "best_strategy.png")

    # Ranking of sources: measured and predicted.
    predicted = {t["source"]: t.get("predicted_rank") for t in transferability}
    rank_rows = [{**e, "predicted_rank": "n/a" if _missing(predicted.get(e["source"])) else predicted[e["source"]],
                  "logme": _fmt_opt(scores.get(e["source"], {}).get("logme")),
                  "leep": _fmt_opt(scores.get(e["source"], {}).get("leep")),
                  "mean_txt": f"{e['mean']:.3f} ± {e['spread']:.3f}",
                  "vs_scratch": _fmt_signed(e["mean"] - scratch_overall[e["backbone"]])
                  if e["backbone"] in scratch_overall else "n/a"} for e in ranking]

    # One row per source × strategy × fraction (scratch last).
    grid_rows = []
    for (source, backbone, strategy, fraction), s in sorted(stats.items(), key=lambda kv: _sort_key(kv[0])):
        base = stats.get((SCRATCH, backbone, SCRATCH, fraction))
        gains = [r["transfer_gain"] for r in rows if r["source"] == source and r["strategy"] == strategy
                 and float(r["fraction"]) == fraction and not _missing(r.get("transfer_gain"))]
        example = next((r for r in rows if float(r["fraction"]) == fraction and "examples_per_class" in r), {})
        grid_rows.append({
            "source": SCRATCH if strategy == SCRATCH else source, "backbone": backbone, "strategy": strategy,
            "fraction": f"{fraction:g}", "examples": _fmt_opt(example.get("examples_per_class"), 1),
            "top1": f"{s['mean']:.3f} ± {s['std']:.3f}", "seeds": len(s["seeds"]),
            "gain": "" if strategy == SCRATCH or not gains else _fmt_signed(float(np.mean(gains))),
            "scratch": "" if strategy == SCRATCH or base is None else f"{base['mean']:.3f}",
            "flag": NEGATIVE if (source, strategy, fraction) in flagged else ""})

    tau_lines = []
    for key, label in (("logme", "LogME"), ("leep", "LEEP")):
        tau = taus[key]
        n = sum(1 for t in transferability if not _missing(t.get(key)) and t["source"] in measured)
        tau_lines.append(f"- Kendall's tau between the {label} ranking and the measured ranking: "
                         + (f"**{tau:+.2f}** over {n} sources" if tau is not None else
                            f"n/a ({n} source(s) with a score; needs 2 or more, not all tied)"))
    failures = ("\n".join(f"- `{r['run']}`: {r['error']}" for r in failed) if failed else
                "- none: every cell finished.")
    if flags:
        neg = "\n".join(f"- **{NEGATIVE}**: {format_flag(f).split(': ', 1)[1]}" for f in flags)
    else:
        neg = "- none: no source × strategy is below scratch by more than the seed spread."
    seeds = sorted({int(r["seed"]) for r in rows})
    strategies = list(dict.fromkeys(r["strategy"] for r in rows if r["strategy"] != SCRATCH))
    small = (f" The test split has {num_test_videos} videos: one video more or less right moves top-1 by "
             f"{1 / num_test_videos:.3f}." if num_test_videos else "")
    text = f"""# Benchmark of transfer sources on {workspace_name}

{len(rows) + len(failed)} cells: {len(ranking)} source(s) × {len(strategies)} strategy(ies) ({", ".join(strategies)})
× {len({float(r['fraction']) for r in rows})} label fraction(s) × {len(seeds)} seed(s), plus the scratch baseline
of each backbone. Top-1 and mean class accuracy are video-level on the test split; ± is the standard
deviation over seeds.{small} How to read this report: docs/benchmark.md.

## Ranking of sources

Measured: the mean over seeds and fractions of each source's best strategy (± the spread over seeds).
Predicted: the LogME ranking, computed before any training from the frozen source features of the
target's training split (LEEP only where the source has its own classifier, i.e. a `vtl train` checkpoint).

{table(rank_rows, [("rank", "rank"), ("source", "source"), ("backbone", "backbone"),
                   ("best_strategy", "best strategy"), ("mean_txt", "top-1 (mean ± spread)"),
                   ("vs_scratch", "vs scratch"), ("predicted_rank", "predicted rank"), ("logme", "LogME"),
                   ("leep", "LEEP")])}

{chr(10).join(tau_lines)}

![best strategy per source](best_strategy.png)

## Negative transfer

A source × strategy is flagged when its mean top-1 at a fraction is below scratch (same backbone, same
fraction) by more than the seed spread, max(std over seeds of either, {MIN_SPREAD}).

{neg}

## Every source × strategy × fraction

{table(grid_rows, [("source", "source"), ("backbone", "backbone"), ("strategy", "strategy"),
                   ("fraction", "fraction"), ("examples", "examples/class"), ("top1", "top-1"),
                   ("scratch", "scratch top-1"), ("gain", "gain"), ("seeds", "seeds"), ("flag", "flag")])}

## Learning curves

![learning curves](learning_curve.png)

## Failed cells

A cell that fails (bad checkpoint, diverged loss, out of memory, ...) ends alone; the grid goes on
and its numbers above leave the cell out. Re-running the benchmark retries it.

{failures}

Every cell (with its mean class accuracy and training time) is in `results.csv`; the transferability
scores are in `transferability.csv`; each cell's run is `train/<run>/` and `eval/<run>/`.
"""
    write_text(out / "report.md", text)
    return {"ranking": ranking, "flags": flags, "tau": taus, "report": out / "report.md",
            "failed_cells": [{"run": r["run"], "error": r["error"]} for r in failed]}


def _fmt_signed(x: float) -> str:
    return f"{x:+.3f}"


__all__ = ["add_transfer_gains", "aggregate", "negative_transfer", "measured_ranking", "rank_agreement",
           "plot_learning_curve", "plot_best_strategy", "write_report", "format_flag", "spread"]
