"""``WORKSPACE/report.md``: every evaluated run of a workspace side by side.

One table (strategy, weights, top-1, mean class accuracy, training time, gain
over the scratch run of the same backbone), a bar chart, links to each run's
confusion matrix (and, for images, its most confident mistakes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.files import write_text
from pipeline.models.registry import get_spec
from pipeline.provenance import KEY as PROVENANCE
from pipeline.provenance import one_line
from pipeline.report.markdown import table
from pipeline.report.plots import plot_bars
from pipeline.workspace import BENCHMARK_RUN_PREFIX, Workspace

LEAKAGE_CAVEAT = ("Caveat: Stanford Dogs photos come from ImageNet, so ImageNet-1k weights have already seen "
                  "them in pretraining; these scores overstate transfer to truly new photos.")


def weights_source(backbone: str, weights: str) -> str:
    """The source dataset of a weight tag (``imagenet1k``…), or the tag/path itself."""
    try:
        tag = get_spec(backbone).weights.get(weights)
    except UserError:
        tag = None
    return tag.source if tag is not None else weights


def leakage_warning(ws: Workspace, backbone: str, weights: str) -> str | None:
    if ws.info().get("format") == "stanford_dogs" and weights_source(backbone, weights) == "imagenet1k":
        return LEAKAGE_CAVEAT
    return None


def collect(ws: Workspace) -> list[dict[str, Any]]:
    """One row per evaluated run (benchmark cells have their own report): what was scored, its
    metrics, training time and links to its plots."""
    rows = []
    for run in ws.evaluated_runs():
        info = run.eval_info()
        if run.name.startswith(BENCHMARK_RUN_PREFIX) or info is None:
            continue
        links = {"confusion": run.confusion_png, "per_class": run.per_class_csv, "mistakes": run.mistakes_png}
        rows.append({**info, **(run.eval_metrics() or {}), "train_seconds": run.train_seconds(),
                     **{k: p.relative_to(ws.root).as_posix() for k, p in links.items()}})
    return rows


def write_report(ws: Workspace) -> Path:
    rows = collect(ws)
    if not rows:
        raise UserError(f"no evaluated runs in {ws.root}: run `vtl evaluate` first")
    scratch = {r["backbone"]: r["top1"] for r in rows if r["strategy"] == "scratch"}
    for r in rows:
        r["gain"] = r["top1"] - scratch[r["backbone"]] if r["backbone"] in scratch else ""
    plot_bars([r["run"] for r in rows], [r["top1"] for r in rows], ws.root / "report_top1.png",
              title=f"top-1 on {rows[0]['split']}", ylabel="top-1")
    caveats = {leakage_warning(ws, r["backbone"], r["weights"]) for r in rows} - {None}
    links = []
    for r in rows:
        extra = f", [mistakes]({r['mistakes']})" if r["media"] == "image" else ""
        links.append(f"- `{r['run']}`: [confusion matrix]({r['confusion']}), [per class]({r['per_class']}){extra}")
    text = "\n\n".join([
        f"# Runs of {ws.root.name}",
        table(rows, [("run", "run"), ("backbone", "backbone"), ("weights", "weights"), ("strategy", "strategy"),
                     ("top1", "top-1"), ("mean_class_accuracy", "mean class acc."),
                     ("gain", "gain vs scratch"), ("train_seconds", "train time (s)")]),
        "![top-1 per run](report_top1.png)",
        "\n".join(links),
        "Where each result came from (the full record: `provenance` in `eval/<run>/metrics.json` and "
        "`train/<run>/config.yaml`):\n\n" + "\n".join(f"- `{r['run']}`: {one_line(r.get(PROVENANCE))}" for r in rows),
        *sorted(caveats),
    ]) + "\n"
    path = ws.root / "report.md"
    write_text(path, text)
    return path
