"""The ``vtl`` command line: one thin command per stage; the work lives in ``pipeline.stages``.

Every option of a stage is generated from its config dataclass (:func:`options_from`), so the
command line, ``vtl run`` config files and the Python API share one default, type, help text and
set of choices per option. This module imports no torch: ``--help`` stays instant, and the worker
processes ``prepare``/``sample`` spawn (which import it again) stay small.

Every user error prints one line ``error: …`` on stderr and exits with code 2
(``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline import __version__
from pipeline.benchmark.config import BenchmarkConfig
from pipeline.data.sampling import SamplingConfig
from pipeline.engine.config import EvaluateConfig, TrainConfig
from pipeline.errors import UserError
from pipeline.options import default_of, field_names
from pipeline.progress import echo, set_quiet
from pipeline.stages.prepare import PrepareConfig
from pipeline.stages.sample import SampleConfig

if TYPE_CHECKING:
    from pipeline.sharding import Shard


def options_from(cls: type) -> Callable[[Callable], Callable]:
    """Add one Click option per field of the dataclass ``cls``, in field order, named, typed,
    defaulted and documented by the field (see :func:`pipeline.options.option`)."""
    hints = typing.get_type_hints(cls)

    def decorate(command: Callable) -> Callable:
        for f in reversed(dataclasses.fields(cls)):
            if f.metadata.get("cli", True):
                command = _click_option(f, hints[f.name])(command)
        return command

    return decorate


def _click_option(f: dataclasses.Field, hint: Any) -> Callable[[Callable], Callable]:
    meta = f.metadata
    flags = meta.get("flags") or (f"--{f.name.replace('_', '-')}",)
    default = default_of(f)
    required = default is dataclasses.MISSING
    kind = next(a for a in typing.get_args(hint) or (hint,) if a is not type(None))
    common = {"help": meta.get("help"), "show_default": False if required else meta.get("show_default", True)}
    if kind is bool:
        return click.option(*flags, f.name, is_flag=True, default=default, **common)
    if meta.get("choices"):
        click_type: Any = click.Choice(meta["choices"])
    elif meta.get("parse") or kind not in (int, float, str, Path):
        click_type = click.STRING  # text the field's parse function turns into its value
    else:
        click_type = click.Path(path_type=Path) if kind is Path else kind
    parse = meta.get("parse")
    callback = (lambda ctx, param, value: parse(value) if value is not None else None) if parse else None
    if not required:  # a required option gets no default at all (Click >= 8.3 takes None for a given default)
        common["default"] = default
    return click.option(*flags, f.name, type=click_type, required=required, metavar=meta.get("metavar"),
                        callback=callback, **common)


def given_on_command_line(options: dict[str, Any]) -> dict[str, Any]:
    """The options the user wrote, leaving out those at their default."""
    ctx = click.get_current_context()
    return {k: v for k, v in options.items()
            if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}


WORKSPACE = click.argument("workspace", type=click.Path(file_okay=False, path_type=Path))

SHARD = click.option(
    "--shard", default=None, metavar="I/N",
    help="Do only shard I of N (0-based) of the file list, to split a dataset across machines; then run once "
         "with --merge. Default: RANK/WORLD_SIZE if both are set (torchrun-style), else everything.")
MERGE = click.option("--merge", is_flag=True,
                     help="Combine the results of every --shard I/N run into the workspace's files.")


def shard_option(spec: str | None, merge: bool) -> Shard | None:
    """The shard of this run: --shard, else RANK/WORLD_SIZE; a merge is never sharded."""
    from pipeline.sharding import parse_shard, shard_from

    if merge:
        return parse_shard(spec) if spec is not None else None  # --merge with --shard: run_* says why not
    return shard_from(spec)


class StageOrder(click.Group):
    """Lists commands in the order they were added: the order a user runs them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=StageOrder, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vtl")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or status lines.")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("--wait", "wait_s", default=0.0, show_default=True, metavar="SECONDS",
              help="If another stage is writing to the workspace, wait up to this long for it to finish "
                   "(default: fail at once, naming it). E.g. queue several `vtl train` on one workspace.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, debug: bool, wait_s: float) -> None:
    """vtl: transfer learning for video (and image) classification.

    Take a network trained on a source task (Kinetics-400 video backbones,
    ImageNet frame backbones) and adapt it to your target classes. Run the
    stages in order on one workspace folder; each stage only does what is
    missing, so an interrupted stage resumes when run again.

    \b
      vtl prepare runs/ucf --format folder --root ~/data/my_clips
      vtl sample  runs/ucf --frames 8 --short-side 128
      vtl train   runs/ucf --backbone efficientnet_lite0 --strategy linear
      vtl evaluate runs/ucf
    Or all of them from one file: vtl run configs/dogs_efficientnet_lite0.yaml. New here? vtl demo.
    """
    from pipeline.workspace import set_lock_wait

    ctx.obj = {"debug": debug}
    set_quiet(quiet)
    set_lock_wait(wait_s)


# ----------------------------------------------------------------------------- prepare


@cli.command(short_help="1. Index a dataset: probe files, split, write the manifest")
@WORKSPACE
@options_from(PrepareConfig)
@SHARD
@MERGE
def prepare(workspace: Path, shard: str | None, merge: bool, **options: Any) -> None:
    """1. Index a dataset: probe files, split, write the manifest.

    Writes WORKSPACE/manifest.csv, classes.txt and quarantine.csv (files that
    cannot be used, and why). Example:

    \b
      vtl prepare runs/clips --format folder --root ~/data/my_clips
      vtl prepare runs/ucf --format ucf101 --root ~/data/UCF-101 --splits ~/data/ucfTrainTestlist --fold 1

    Across machines (the dataset and WORKSPACE at the same path on each): run
    shard I of N on machine I, then the same command with --merge once all are
    done; the result is the same as one unsharded run:

    \b
      vtl prepare runs/k400 --format kinetics --root /data/k400 --splits /data/k400/ann --shard 0/4
      vtl prepare runs/k400 --format kinetics --root /data/k400 --splits /data/k400/ann --merge
    """
    from pipeline.stages.prepare import format_summary, run_prepare
    from pipeline.workspace import Workspace

    part = shard_option(shard, merge)
    summary = run_prepare(Workspace(workspace), PrepareConfig(**options), shard=part, merge=merge)
    if part is not None:
        click.echo(f"prepared shard {part} of {workspace}: probed {summary['probed']} of {summary['listed']} "
                   f"files ({summary['files']} usable, {summary['quarantined']} quarantined) into "
                   f"{summary['manifest']}; once every shard is done, run the same command with --merge")
        return
    click.echo(f"prepared {workspace}: {format_summary(summary)}")


# ----------------------------------------------------------------------------- sample


@cli.command(short_help="2. Decode each video once and cache its sampled clips")
@WORKSPACE
@options_from(SamplingConfig)
@options_from(SampleConfig)
@click.option("--force", is_flag=True, help="Resample everything for these settings (a shard: its videos).")
@SHARD
@MERGE
def sample(workspace: Path, force: bool, shard: str | None, merge: bool, **options: Any) -> None:
    """2. Decode each video once and cache its sampled clips (uint8).

    A re-run samples only the videos not cached yet. Example:

    \b
      vtl sample runs/ucf --frames 16 --sampling uniform --short-side 128 --clips-per-video 3

    Across machines sharing WORKSPACE: each runs its shard (they may run at
    the same time), then one run with --merge and the same sampling options:

    \b
      vtl sample runs/k400 --frames 16 --shard 0/4      # ... 1/4, 2/4, 3/4 elsewhere
      vtl sample runs/k400 --frames 16 --merge
    """
    from pipeline.stages.sample import run_sample, sampling_for
    from pipeline.workspace import Workspace

    ws = Workspace(workspace)
    ws.require_prepared()
    run = SampleConfig(**{k: options.pop(k) for k in field_names(SampleConfig)})
    cfg = sampling_for(ws, given_on_command_line(options))
    part = shard_option(shard, merge)
    r = run_sample(ws, cfg, run, force=force, shard=part, merge=merge)
    if part is not None:
        click.echo(f"sampled shard {part}: {r['videos']} of its {r['of']} videos cached in {r['path']}"
                   + (f"; {r['failed']} failed" if r["failed"] else "")
                   + "; once every shard is done, run the same command with --merge")
        return
    click.echo(f"sampled {r['videos']} videos into {r['path']} ({r['bytes'] / 2**20:.1f} MiB)"
               + (f"; {r['failed']} failed, see quarantine.csv" if r["failed"] else ""))


# ----------------------------------------------------------------------------- train


@cli.command(short_help="3. Adapt a pretrained backbone (or train from scratch)")
@WORKSPACE
@options_from(TrainConfig)
@click.option("--restart", is_flag=True, help="Ignore last.pt and train from the start.")
def train(workspace: Path, restart: bool, **options: Any) -> None:
    """3. Adapt a pretrained backbone to the workspace's classes.

    Writes WORKSPACE/train/RUN/{best.pt,last.pt,metrics.jsonl,config.yaml};
    re-running resumes from last.pt. Example:

    \b
      vtl train runs/ucf --backbone efficientnet_lite0 --strategy linear
      vtl train runs/ucf --backbone r3d_18 --strategy finetune --weights kinetics400 --epochs 20
    """
    from pipeline.stages.train import run_train
    from pipeline.workspace import Workspace

    r = run_train(Workspace(workspace), TrainConfig(**options), restart=restart)
    click.echo(f"trained {r['run_dir']}: best val top-1 {r['best_val_top1']:.3f} after {r['epochs']} epochs "
               f"({r['train_seconds']:.0f} s)")


# ----------------------------------------------------------------------------- evaluate


@cli.command(short_help="4. Score a run: top-1/5, mean class accuracy, confusion matrix")
@WORKSPACE
@options_from(EvaluateConfig)
def evaluate(workspace: Path, **options: Any) -> None:
    """4. Score a trained run: top-1/top-5, mean class accuracy, confusion matrix.

    Writes WORKSPACE/eval/RUN/{metrics.json,per_class.csv,predictions.csv,confusion.png}.
    Example:

    \b
      vtl evaluate runs/ucf --run efficientnet_lite0-linear
      vtl evaluate runs/ucf --run r3d_18-finetune --views 5x3     # clip- and video-level
    """
    from pipeline.stages.evaluate import run_evaluate
    from pipeline.workspace import Workspace

    m = run_evaluate(Workspace(workspace), EvaluateConfig(**options))
    click.echo(json.dumps({k: m[k] for k in ("top1", "top5", "mean_class_accuracy", "video_top1",
                                             "num_samples", "eval_dir")}))


@cli.command(short_help="5. Compare every evaluated run of a workspace in report.md")
@WORKSPACE
def report(workspace: Path) -> None:
    """5. Compare every evaluated run of a workspace: WORKSPACE/report.md.

    A table of strategy, weights, top-1, mean class accuracy, training time and
    gain over scratch, a bar chart, and links to each run's plots. Example:

    \b
      vtl report runs/dogs
    """
    from pipeline.report.runs import write_report
    from pipeline.workspace import Workspace

    click.echo(f"report: {write_report(Workspace(workspace))}")


# ----------------------------------------------------------------------------- benchmark


@cli.command(short_help="6. Rank transfer sources: strategies x fractions x seeds")
@WORKSPACE
@options_from(BenchmarkConfig)
def benchmark(workspace: Path, **options: Any) -> None:
    """6. Benchmark transfer sources on this workspace's target.

    Scores every source's transferability (LogME, LEEP) first, then trains and
    evaluates the grid sources x strategies x fractions x seeds plus the scratch
    baseline of each backbone. Resumes: finished cells are not recomputed.
    Writes WORKSPACE/benchmark/{results.csv,transferability.csv,report.md,
    learning_curve.png,best_strategy.png}. Example:

    \b
      vtl benchmark runs/ucf --sources configs/sources.yaml --strategies linear,finetune \\
          --fractions 0.1,0.25,1.0 --seeds 3
    """
    from pipeline.progress import warn
    from pipeline.report.benchmark import format_flag
    from pipeline.stages.benchmark import run_benchmark
    from pipeline.workspace import Workspace

    r = run_benchmark(Workspace(workspace), BenchmarkConfig(**options))
    for e in r["ranking"]:
        click.echo(f"{e['rank']}. {e['source']}: {e['best_strategy']} top-1 {e['mean']:.3f} ± {e['spread']:.3f}")
    tau = r["tau"]["logme"]
    click.echo(f"Kendall's tau (LogME vs measured): {'n/a' if tau is None else f'{tau:+.2f}'}; "
               f"{r['cells']} cells ({r['ran']} run now); report: {r['report']}")
    for flag in r["flags"]:
        warn(format_flag(flag))


# ----------------------------------------------------------------------------- predict


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--topk", default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input on stdout.")
def predict(checkpoint: Path, inputs: tuple[Path, ...], topk: int, as_json: bool) -> None:
    """Classify videos or images with a trained checkpoint (top-k with probabilities).

    Decodes and samples each input exactly as evaluation does. Example:

    \b
      vtl predict runs/ucf/train/r3d_18-finetune/best.pt clip.mp4 --topk 3
    """
    from pipeline.stages.predict import run_predict

    for result in run_predict(checkpoint, list(inputs), topk):
        if as_json:
            click.echo(json.dumps(result))
        else:
            click.echo(result["input"])
            for p in result["top"]:
                click.echo(f"  {p['probability']:.3f}  {p['class']}")


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["torchscript", "onnx"]), default="torchscript",
              show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
def export(checkpoint: Path, fmt: str, output: Path) -> None:
    """Export a trained checkpoint to TorchScript or ONNX (input: normalised (B, C, T, H, W) clip).

    Example:

    \b
      vtl export runs/ucf/train/r3d_18-finetune/best.pt --format onnx -o r3d_ucf.onnx
    """
    from pipeline.stages.export import run_export

    click.echo(str(run_export(checkpoint, fmt, output)))


# ----------------------------------------------------------------------------- catalogues


@cli.command()
@click.option("--kind", type=click.Choice(["video", "frame", "image"]), default=None,
              help="Only this kind (image = frame backbones, which also classify images).")
def backbones(kind: str | None) -> None:
    """List the registered backbones, their weight tags and which are on this machine.

    Example: vtl backbones --kind video
    """
    from pipeline.models.registry import list_specs
    from pipeline.models.weights import local_path

    specs = list_specs("frame" if kind == "image" else kind)
    click.echo(f"{'name':<22}{'kind':<7}{'dim':>6}  {'clip':>4}  {'size':>4}  weights (* = on this machine)")
    for s in specs:
        tags = ", ".join(t + ("*" if local_path(w) else "") for t, w in s.weights.items()) or "-"
        click.echo(f"{s.name:<22}{s.kind:<7}{s.feature_dim:>6}  {s.clip_len:>4}  {s.input_size:>4}  {tags}")


@cli.group()
def weights() -> None:
    """Pretrained weights: list, fetch (needs internet), import a downloaded file."""


@weights.command("list")
def weights_list() -> None:
    """Every weight tag, its source dataset and where it is (or should be) on disk."""
    from pipeline.models.registry import list_specs
    from pipeline.models.weights import cache_path, local_path

    for s in list_specs():
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


@cli.command("run")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
def run_config(config: Path) -> None:
    """Run the stages in order from one YAML file (see configs/).

    Example: vtl run configs/dogs_efficientnet_lite0.yaml
    """
    from pipeline.stages.run import run_file

    run_file(config)


@cli.command()
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


def main(argv: list[str] | None = None) -> None:
    # Third-party import-time noise (pytorchvideo, efficientnet-lite use torch.jit.script).
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="vtl", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        echo("aborted")
        sys.exit(130)
    except click.UsageError as e:
        if debug:
            raise
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
        print(f"error: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(2)
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        from pipeline.files import DISK_FULL, disk_full_message

        if debug or e.errno not in DISK_FULL:
            raise
        # Writes outside the atomic helpers (logs, caches of third-party code): same one line.
        print(f"error: {disk_full_message(e.filename, e)}", file=sys.stderr)
        sys.exit(2)
