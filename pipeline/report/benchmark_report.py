"""``WORKSPACE/benchmark/``: the files of a benchmark's report, from :mod:`pipeline.report.benchmark`'s
numbers: ``summary.json``, ``ranking.csv``, ``report.md`` (the verdicts first), ``learning_curve.png``,
``best_strategy.png`` and ``accuracy_vs_cost.png``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.choices import SCRATCH
from pipeline.files import write_csv, write_json, write_text
from pipeline.provenance import one_line
from pipeline.report.benchmark import (
    MIN_SPREAD,
    NEGATIVE,
    SUMMARY_RANKING_KEYS,
    BenchmarkResults,
    aggregate,
    grid_order,
    is_missing,
    scratch_baselines,
    summarize,
)
from pipeline.report.markdown import table
from pipeline.report.plots import _save, plot_bars

# ----------------------------------------------------------------------------- plots


def plot_learning_curve(rows: Sequence[Mapping[str, Any]], path: Path, *, title: str = "") -> None:
    """Top-1 (mean over seeds, bars = std) against labelled training examples per class; one
    line per source/strategy, the scratch baseline of each backbone dashed."""
    import matplotlib.pyplot as plt

    stats = aggregate(rows)
    x_of = {float(r["fraction"]): float(r["examples_per_class"]) for r in rows
            if not is_missing(r.get("examples_per_class"))}
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


def plot_best_strategy(ranking: Sequence[Mapping[str, Any]], path: Path) -> None:
    """One bar per source (its best strategy), the best scratch model among them."""
    labels = [f"{e['source']} ({e['best_strategy']})" if e["source"] != SCRATCH else f"scratch ({e['backbone']})"
              for e in ranking]
    plot_bars(labels, [e["top1_mean"] for e in ranking], path,
              title="Best strategy per source (mean over fractions and seeds)", ylabel="test top-1 (video level)")


def plot_accuracy_vs_cost(ranking: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Top-1 (± spread) against GFLOPs per clip, one point per source and one for the best scratch
    model: up and to the left is better."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    points = [e for e in ranking if not is_missing(e.get("gflops"))]
    for e in points:
        scratch = e["source"] == SCRATCH
        ax.errorbar([e["gflops"]], [e["top1_mean"]], yerr=[e["top1_spread"]], marker="s" if scratch else "o",
                    markersize=7, capsize=3, linestyle="none", mfc="white" if scratch else None,
                    color="black" if scratch else None)
        ax.annotate(f"scratch ({e['backbone']})" if scratch else e["source"], (e["gflops"], e["top1_mean"]),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    if points and max(e["gflops"] for e in points) / max(min(e["gflops"] for e in points), 1e-9) >= 10:
        ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("GFLOPs per clip (inference)")
    ax.set_ylabel("test top-1 (video level)")
    ax.grid(alpha=0.3)
    ax.set_title("Accuracy against cost")
    _save(fig, path)


# ----------------------------------------------------------------------------- report.md


def _fmt_opt(x: Any, digits: int = 3) -> str:
    return "n/a" if is_missing(x) else f"{float(x):.{digits}f}"


def format_flag(flag: Mapping[str, Any]) -> str:
    return (f"negative transfer: {flag['source']} / {flag['strategy']} at fraction {flag['fraction']:g}: "
            f"top-1 {flag['mean']:.3f} vs scratch {flag['scratch_mean']:.3f} ({flag['backbone']}), "
            f"{flag['deficit']:.3f} below, more than the seed spread {flag['margin']:.3f}")


def write_report(out: Path, res: BenchmarkResults) -> dict[str, Any]:
    """Write ``summary.json``, ``ranking.csv``, ``report.md`` and the plots into ``out``; returns the
    summary (see :func:`summarize`) with the report's path."""
    summary = summarize(res)
    write_json(out / "summary.json", summary)
    write_csv(out / "ranking.csv", SUMMARY_RANKING_KEYS,
              [{k: "" if v is None else v for k, v in e.items()} for e in summary["ranking"]])
    rows = res.finished
    plot_learning_curve(rows, out / "learning_curve.png", title=f"Learning curves on {res.workspace_name}")
    plot_best_strategy(summary["ranking"], out / "best_strategy.png")
    plot_accuracy_vs_cost(summary["ranking"], out / "accuracy_vs_cost.png")
    write_text(out / "report.md", _report_text(res, summary))
    return {**summary, "report": out / "report.md"}


def _report_text(res: BenchmarkResults, summary: dict[str, Any]) -> str:
    rows, failed = res.finished, res.failed
    stats = aggregate(rows)
    flags = summary["flags"]
    flagged = {(f["source"], f["strategy"], f["fraction"]) for f in flags}
    scores = {t["source"]: t for t in res.transferability}
    strongest = summary["best_scratch"]
    baselines = scratch_baselines(rows)

    rank_rows = []
    for e in summary["ranking"]:
        score = scores.get(e["source"], {})
        own = baselines.get(e["backbone"])
        rank_rows.append({
            **e, "top1": f"{e['top1_mean']:.3f} ± {e['top1_spread']:.3f}", "lr_txt": _fmt_lr(e["lr"]),
            "vs_own": "" if e["source"] == SCRATCH or own is None else _fmt_signed(e["top1_mean"] - own["top1_mean"]),
            "vs_best": "" if e["source"] == SCRATCH or strongest is None else
            _fmt_signed(e["top1_mean"] - strongest["top1_mean"]),
            "gflops_txt": _fmt_opt(e["gflops"], 2), "latency_txt": _fmt_opt(e["latency_ms"], 1),
            "params_txt": "n/a" if e["params"] is None else f"{e['params'] / 1e6:.1f}",
            "predicted": "" if is_missing(score.get("predicted_rank")) else score["predicted_rank"],
            "logme": "" if e["source"] == SCRATCH else _fmt_opt(score.get("logme")),
            "leep": "" if e["source"] == SCRATCH else _fmt_opt(score.get("leep"))})

    grid_rows = []
    for (source, backbone, strategy, fraction), s in sorted(stats.items(), key=lambda kv: grid_order(kv[0])):
        base = stats.get((SCRATCH, backbone, SCRATCH, fraction))
        gains = [r["transfer_gain"] for r in rows if r["source"] == source and r["strategy"] == strategy
                 and float(r["fraction"]) == fraction and not is_missing(r.get("transfer_gain"))]
        example = next((r for r in rows if float(r["fraction"]) == fraction
                        and not is_missing(r.get("examples_per_class"))), {})
        grid_rows.append({
            "source": SCRATCH if strategy == SCRATCH else source, "backbone": backbone, "strategy": strategy,
            "fraction": f"{fraction:g}", "examples": _fmt_opt(example.get("examples_per_class"), 1),
            "top1": f"{s['mean']:.3f} ± {s['std']:.3f}", "seeds": len(s["seeds"]),
            "gain": "" if strategy == SCRATCH or not gains else _fmt_signed(float(np.mean(gains))),
            "scratch": "" if strategy == SCRATCH or base is None else f"{base['mean']:.3f}",
            "flag": NEGATIVE if (source, strategy, fraction) in flagged else ""})

    tau_lines = []
    for key, label in (("logme", "LogME"), ("leep", "LEEP")):
        tau = summary["kendall_tau"][key]
        n = sum(1 for t in res.transferability if not is_missing(t.get(key)))
        tau_lines.append(f"- Kendall's tau between the {label} ranking and the measured ranking: "
                         + (f"**{tau:+.2f}** over {n} sources" if tau is not None else
                            f"n/a ({n} source(s) with a score; needs 2 or more, not all tied)"))
    failures = ("\n".join(f"- `{r['run']}`: {r['error']}" for r in failed) if failed else
                "- none: every cell finished.")
    neg = ("\n".join(f"- **{NEGATIVE}**: {format_flag(f).split(': ', 1)[1]}" for f in flags) if flags else
           "- none: no source × strategy is below scratch by more than the seed spread.")
    seeds = sorted({int(r["seed"]) for r in rows})
    strategies = list(dict.fromkeys(r["strategy"] for r in rows if r["strategy"] != SCRATCH))
    small = (f" The test split has {res.num_test_videos} videos: one video more or less right moves top-1 by "
             f"{1 / res.num_test_videos:.3f}." if res.num_test_videos else "")
    n_sources = len({r["source"] for r in rows if r["strategy"] != SCRATCH})
    return f"""# Benchmark of transfer sources on {res.workspace_name}

{headline(summary)}

{len(rows) + len(failed)} cells: {n_sources} source(s) × {len(strategies)} strategy(ies) ({", ".join(strategies)})
× {len({float(r['fraction']) for r in rows})} label fraction(s) × {len(seeds)} seed(s), plus the scratch baseline
of each backbone. Top-1 and mean class accuracy are video-level on the test split; ± is the standard
deviation over seeds.{small} How to read this report: docs/benchmark.md.

## Ranking of sources

Measured: the mean over seeds and fractions of each source's best strategy (± the spread over seeds),
beside the **best model trained from scratch** over every backbone (a row of its own). A source *beats*
a baseline when it is above it by more than the seed spread; it is **worth it** only if it beats the
best scratch model, not merely its own backbone from scratch. Cost: GFLOPs per clip, inference latency
per clip (batch 1) and parameters, measured at the cells' input size. Predicted: the LogME ranking,
computed before any training (LEEP only where the source has its own classifier).

{table(rank_rows, [("rank", "rank"), ("source", "source"), ("backbone", "backbone"),
                   ("best_strategy", "best strategy"), ("top1", "top-1 (mean ± spread)"), ("lr_txt", "lr"),
                   ("vs_own", "vs own scratch"), ("vs_best", "vs best scratch"), ("verdict", "verdict"),
                   ("gflops_txt", "GFLOPs"), ("latency_txt", "latency (ms)"), ("params_txt", "params (M)"),
                   ("predicted", "predicted rank"), ("logme", "LogME"), ("leep", "LEEP")])}

{chr(10).join(tau_lines)}

![best strategy per source](best_strategy.png)

![accuracy against cost](accuracy_vs_cost.png)
{_pretraining_section(res)}{_lr_section(res)}
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

Every cell (with its learning rate, validation and test top-1, mean class accuracy and training time)
is in `results.csv`; the ranking and verdicts in `summary.json` and `ranking.csv`; the transferability
scores in `transferability.csv`; each cell's run is `train/<run>/` and `eval/<run>/` (its provenance in
`config.yaml` and `metrics.json`); what the benchmark printed in `benchmark.log`.

{one_line(res.provenance)}
"""


def headline(summary: Mapping[str, Any]) -> str:
    """The answer first: which sources are worth it, against the best model trained from scratch."""
    strongest = summary["best_scratch"]
    if strongest is None:
        return "**No scratch baseline finished**: no verdict."
    base = f"{strongest['backbone']} trained from scratch, top-1 {strongest['top1_mean']:.3f}"
    worth = [e for e in summary["ranking"] if e["beats_best_scratch"]]
    if worth:
        names = ", ".join(f"**{e['source']}** ({e['best_strategy']}, {e['top1_mean']:.3f})" for e in worth)
        verb = "beats" if len(worth) == 1 else "beat"
        text = f"**Worth it**: {names} {verb} the best model trained from scratch ({base})."
    else:
        text = f"**No source is worth it**: none beats the best model trained from scratch ({base}) by more than " \
               "the seed spread."
    own_only = [e["source"] for e in summary["ranking"] if e["beats_own_scratch"] and not e["beats_best_scratch"]]
    if own_only:
        verb, own = ("beats", "its") if len(own_only) == 1 else ("beat", "their")
        text += (f" {', '.join(own_only)} {verb} only {own} own backbone from scratch: another architecture "
                 "trained from scratch does as well or better.")
    if summary["negative_transfer"]:
        text += f" Negative transfer: {', '.join(summary['negative_transfer'])}."
    return text


def _pretraining_section(res: BenchmarkResults) -> str:
    if not res.pretraining:
        return ""
    rows = [{"source": name, "dataset": p.get("dataset", ""), "seconds": _fmt_opt(p.get("seconds"), 0),
             "val": _fmt_opt(p.get("val_top1")), "error": p.get("error") or ""}
            for name, p in sorted(res.pretraining.items())]
    return f"""
## Source datasets pretrained by the benchmark

Each was trained on its own dataset first (`benchmark/sources/<source>/`), then transferred like any
checkpoint. Validation top-1 is on the source's own task.

{table(rows, [("source", "source"), ("dataset", "dataset"), ("seconds", "pretraining (s)"),
              ("val", "val top-1 on its task"), ("error", "failed")])}
"""


def _lr_section(res: BenchmarkResults) -> str:
    if res.lr_selection is None:
        return ""
    return f"""
## Learning rate per source × strategy (chosen on the validation split)

Each source × strategy (scratch per backbone) was trained at every rate below; the rate with the best
mean validation top-1 over fractions and seeds was kept, and only its cells were evaluated on the test
split.

{table(res.lr_selection, [("source", "source"), ("backbone", "backbone"), ("strategy", "strategy"),
                          ("lr", "lr"), ("lr_factor", "× configured"), ("val_top1", "val top-1"),
                          ("cells", "cells"), ("chosen", "chosen")])}
"""


def _fmt_lr(lr: Any) -> str:
    if lr is None:
        return "n/a"
    return ", ".join(f"{x:.3g}" for x in lr) if isinstance(lr, list) else f"{lr:.3g}"


def _fmt_signed(x: float) -> str:
    return f"{x:+.3f}"


__all__ = ["format_flag", "headline", "plot_accuracy_vs_cost", "plot_best_strategy", "plot_learning_curve",
           "write_report"]
