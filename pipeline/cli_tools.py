"""The ``vtl`` commands around the stages: use a trained model (``predict``, ``export``), look up
what is available (``backbones``, ``weights``), and run several stages at once (``run``, ``demo``).
:mod:`pipeline.cli` adds them to the ``vtl`` group after the stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pipeline.choices import EXPORT_FORMATS
from pipeline.cli_options import options_from
from pipeline.engine.config import PredictConfig
from pipeline.errors import UserError

# ----------------------------------------------------------------------------- predict


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--topk", default=5, show_default=True, type=click.IntRange(min=1), help="Classes per row.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row on stdout (the keys of --output "
                                                      "FILE.jsonl).")
@options_from(PredictConfig)
def predict(checkpoint: Path, inputs: tuple[Path, ...], topk: int, as_json: bool, **options: Any) -> None:
    """Classify videos, images and frame folders with a trained checkpoint (top-k with probabilities).

    INPUT: files, folders (walked recursively) or list files (.csv with a path column, or one path per
    line). Each input is sampled exactly as evaluation samples a test video. An input that cannot be
    read is a row with its error; the exit code is 2 only when nothing could be predicted. Examples:

    \b
      vtl predict runs/ucf/train/r3d_18-finetune/best.pt clip.mp4 --topk 3
      vtl predict best.pt new_clips/ more.csv --output predictions.csv --device cuda
      vtl predict best.pt long.mp4 --window 2 --stride 1 --smooth 3 --output timeline.csv
    """
    from pipeline.progress import warn
    from pipeline.stages.predict import run_predict

    cfg = PredictConfig(**options)
    result = run_predict(checkpoint, list(inputs), topk, cfg)
    if not result.predicted:
        raise UserError(result.failure())
    failed = len({r["path"] for r in result.rows if r["error"]})
    if failed:
        warn(f"{failed} input(s) could not be predicted: their rows say why")
    for path in result.files:
        click.echo(str(path))
    if cfg.output is None:
        _print_rows(result, as_json)


def _print_rows(result: Any, as_json: bool) -> None:
    from pipeline.stages.predict import json_record

    if as_json:
        for row in result.rows:
            click.echo(json.dumps(json_record(row)))
        return
    last = None
    for row in result.rows:
        if row["path"] != last:
            click.echo(row["path"])
            last = row["path"]
        if row["error"]:
            click.echo(f"  error: {row['error']}")
        elif "start" in row:
            click.echo(f"  {row['start']:8.2f}-{row['end']:<8.2f} {row['top1_probability']:.3f}  {row['top1']}")
        else:
            for p in row["topk"]:
                click.echo(f"  {p['probability']:.3f}  {p['class']}")
    for seg in result.segments:
        click.echo(f"segment {seg['path']}  {seg['start']:.2f}-{seg['end']:.2f} s  {seg['label']} ({seg['score']:.3f})")


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default=EXPORT_FORMATS[0],
              show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--uint8-input", is_flag=True, help="Bake the normalisation into the graph: the model takes the raw "
                                                   "uint8 clip (B, T, H, W, 3).")
def export(checkpoint: Path, fmt: str, output: Path, uint8_input: bool) -> None:
    """Export a trained checkpoint to TorchScript or ONNX, with its metadata.

    Input: the normalised float clip (B, C, T, H, W), or uint8 (B, T, H, W, 3) with --uint8-input.
    Class names, mean/std, frames, input size, sampling and resize rules, backbone, weights and vtl
    version go into the file (ONNX metadata_props, TorchScript extra file vtl.json) and into
    OUTPUT.json beside it (docs/serving.md). Example:

    \b
      vtl export runs/ucf/train/r3d_18-finetune/best.pt --format onnx --uint8-input -o r3d_ucf.onnx
    """
    from pipeline.stages.export import run_export

    click.echo(str(run_export(checkpoint, fmt, output, uint8_input=uint8_input)))


# ----------------------------------------------------------------------------- catalogues


@click.command()
@click.option("--kind", type=click.Choice(["video", "frame", "image"]), default=None,
              help="Only this kind (image = frame backbones, which also classify images).")
@click.option("--long", "long_", is_flag=True, help="Also each backbone's family (where it comes from) and summary.")
def backbones(kind: str | None, long_: bool) -> None:
    """List the registered backbones, their weight tags and which are on this machine.

    Example: vtl backbones --kind video --long
    """
    from pipeline.models.hfcache import hf_cache_dir
    from pipeline.models.registry import cached_family_specs, list_families, list_specs
    from pipeline.models.weights import local_path

    specs = list_specs("frame" if kind == "image" else kind) + cached_family_specs(kind)
    w = max([22, *(len(s.name) + 2 for s in specs)])
    click.echo(f"{'name':<{w}}{'kind':<7}{'dim':>6}  {'clip':>4}  {'size':>4}  weights (* = on this machine)")
    for s in specs:
        tags = ", ".join(t + ("*" if local_path(t_) else "") for t, t_ in s.weights.items()) or "-"
        click.echo(f"{s.name:<{w}}{s.kind:<7}{s.feature_dim:>6}  {s.clip_len:>4}  {s.input_size:>4}  {tags}")
        if long_:
            click.echo(f"{'':<{w}}{s.family}: {s.description or '-'}")
    for f in list_families(kind):  # families named by a prefix: any model, listed above once cached
        click.echo(f"{f.usage}  {f.kind}: any model by name; listed above once in {hf_cache_dir()}")


@click.group()
def weights() -> None:
    """Pretrained weights: list, fetch (needs internet), import a downloaded file."""


@weights.command("list")
def weights_list() -> None:
    """Every weight tag, its source dataset and where it is (or should be) on disk."""
    from pipeline.models.registry import cached_family_specs, list_specs
    from pipeline.models.weights import cache_path, local_path

    for s in list_specs() + cached_family_specs():
        for tag, w in s.weights.items():
            here = local_path(w)
            where = str(here) if here else f"missing (expected at {cache_path(w)})"
            click.echo(f"{s.name}:{tag}\t{w.source}\t{where}")


@weights.command("fetch")
@click.argument("name_tag")
def weights_fetch(name_tag: str) -> None:
    """Download NAME[:TAG] into the torch hub cache (checks the hash where published)."""
    from pipeline.models.weights import fetch

    click.echo(str(fetch(name_tag)))


@weights.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--backbone", required=True)
@click.option("--tag", required=True)
def weights_import(file: Path, backbone: str, tag: str) -> None:
    """Copy a weights FILE you downloaded to where vtl looks for BACKBONE:TAG."""
    from pipeline.models.weights import import_file

    click.echo(str(import_file(file, backbone, tag)))


# ----------------------------------------------------------------------------- run, demo


@click.command("run")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
def run_config(config: Path) -> None:
    """Run the stages in order from one YAML file (see configs/).

    Example: vtl run configs/dogs_efficientnet_lite0.yaml
    """
    from pipeline.stages.run import run_file

    run_file(config)


@click.command()
@click.option("--out", default=Path("demo_out"), show_default=True, type=click.Path(path_type=Path),
              help="Folder for the synthetic data, workspaces and report.")
def demo(out: Path) -> None:
    """The embedded default: transfer vs scratch on synthetic videos, no download.

    Generates a synthetic source and target action dataset, compares scratch,
    ImageNet efficientnet_lite0 (linear probe and fine-tune) and a video
    backbone pretrained on the source; then benchmarks a good and a label-shuffled
    source, flagging the negative transfer. Writes report.md, summary.json and
    benchmark.json. Under 10 minutes on 2 CPU cores; a re-run reuses what is done.
    """
    from pipeline.stages.demo import run_demo

    report = run_demo(out)
    click.echo(f"report: {report}")


TOOLS = (predict, export, backbones, weights, run_config, demo)
