"""The ``vtl`` command line: one thin command per stage; the work lives in ``pipeline.stages``.

Every user error prints one line ``error: …`` on stderr and exits with code 2
(``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pipeline import __version__
from pipeline.errors import UserError
from pipeline.progress import echo, set_quiet

if TYPE_CHECKING:
    from pipeline.sharding import Shard

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
@click.option("--format", "fmt", default="folder", show_default=True,
              help="Dataset layout: folder, ucf101, hmdb51, kinetics, ssv2 (see docs/data.md).")
@click.option("--root", required=True, type=click.Path(path_type=Path), help="Folder holding the dataset's files.")
@click.option("--splits", type=click.Path(path_type=Path), default=None,
              help="Official split files (UCF101/HMDB51 folder, Kinetics CSV, SSv2 folder).")
@click.option("--fold", default=1, show_default=True, help="Official split number (UCF101/HMDB51: 1-3).")
@click.option("--val-fraction", default=0.15, show_default=True, help="Share of each class for validation.")
@click.option("--test-fraction", default=0.15, show_default=True,
              help="Share of each class for test (formats without an official test split).")
@click.option("--seed", default=0, show_default=True, help="Seed of the stratified split.")
@click.option("--workers", default=min(4, os.cpu_count() or 1), show_default=True, help="Probe processes.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds allowed to probe one file.")
@SHARD
@MERGE
def prepare(workspace: Path, fmt: str, root: Path, splits: Path | None, fold: int, val_fraction: float,
            test_fraction: float, seed: int, workers: int, timeout: float, shard: str | None,
            merge: bool) -> None:
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
    from pipeline.stages.prepare import PrepareConfig, format_summary, run_prepare
    from pipeline.workspace import Workspace

    cfg = PrepareConfig(format=fmt, root=root, splits=splits, fold=fold, val_fraction=val_fraction,
                        test_fraction=test_fraction, seed=seed, workers=workers, timeout=timeout)
    part = shard_option(shard, merge)
    summary = run_prepare(Workspace(workspace), cfg, shard=part, merge=merge)
    if part is not None:
        click.echo(f"prepared shard {part} of {workspace}: probed {summary['probed']} of {summary['listed']} "
                   f"files ({summary['files']} usable, {summary['quarantined']} quarantined) into "
                   f"{summary['manifest']}; once every shard is done, run the same command with --merge")
        return
    click.echo(f"prepared {workspace}: {format_summary(summary)}")


# ----------------------------------------------------------------------------- sample


@cli.command(short_help="2. Decode each video once and cache its sampled clips")
@WORKSPACE
@click.option("--frames", default=8, show_default=True, help="Frames per clip.")
@click.option("--sampling", default="uniform", show_default=True,
              help="uniform (TSN segments), random (contiguous at --stride) or dense (all clips).")
@click.option("--stride", default=2, show_default=True, help="Frame step of random/dense clips.")
@click.option("--short-side", default=128, show_default=True,
              help="Resize so the short side is this many pixels (images: 256 unless given).")
@click.option("--clips-per-video", default=1, show_default=True,
              help="Views per video: random draws for train, test views for val/test.")
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=min(4, os.cpu_count() or 1), show_default=True, help="Decode processes.")
@click.option("--force", is_flag=True, help="Resample everything for these settings (a shard: its videos).")
@SHARD
@MERGE
def sample(workspace: Path, frames: int, sampling: str, stride: int, short_side: int, clips_per_video: int,
           seed: int, workers: int, force: bool, shard: str | None, merge: bool) -> None:
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
    options = {"frames": frames, "sampling": sampling, "stride": stride, "short_side": short_side,
               "clips_per_video": clips_per_video, "seed": seed}
    ctx = click.get_current_context()
    given = {k: v for k, v in options.items()
             if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    cfg = sampling_for(ws, given, defaults=options)
    part = shard_option(shard, merge)
    r = run_sample(ws, cfg, workers=workers, force=force, shard=part, merge=merge)
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
@click.option("--backbone", required=True, help="A name from `vtl backbones`.")
@click.option("--strategy", required=True,
              help="scratch, linear (frozen backbone), partial (--freeze-to), finetune, "
                   "gradual (unfreeze stages from the top).")
@click.option("--weights", default=None,
              help="Weight tag (e.g. imagenet1k, kinetics400), 'none', or a checkpoint path. "
                   "Default: the backbone's first tag (none for scratch).")
@click.option("--freeze-to", default=None, help="partial: last frozen stage (e.g. layer2).")
@click.option("--temporal", default="avg", show_default=True,
              help="How a frame backbone pools over time: avg, max, conv, attention.")
@click.option("--epochs", default=10, show_default=True)
@click.option("--lr", default=1e-3, show_default=True, help="Head learning rate (peak of the warm-up + cosine).")
@click.option("--backbone-lr-mult", default=0.1, show_default=True, help="Backbone LR = head LR × this.")
@click.option("--layer-decay", default=None, type=float,
              help="Instead of --backbone-lr-mult: stage k of K trains at LR × D^(K-k) (e.g. 0.7).")
@click.option("--unfreeze-every", default=1, show_default=True,
              help="gradual: epochs of head-only training, then between unfreezing each next stage.")
@click.option("--freeze-bn-stats", is_flag=True,
              help="Keep the backbone's pretrained BatchNorm statistics (advised for batches under ~16).")
@click.option("--probe-epochs", default=20, show_default=True,
              help="partial/finetune/gradual from pretrained weights: first fit the head on cached frozen "
                   "features for this many epochs (LP-FT; keeps the pretrained features intact). 0: random head.")
@click.option("--probe-lr", default=1e-2, show_default=True, help="LR of that head-only phase.")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--weight-decay", default=1e-4, show_default=True)
@click.option("--label-smoothing", default=0.0, show_default=True)
@click.option("--dropout", default=0.0, show_default=True)
@click.option("--fraction", default=1.0, show_default=True, help="Train on this stratified share of the train split.")
@click.option("--input-size", default=None, type=int, help="Crop size fed to the network (default: backbone's).")
@click.option("--augment", default="standard", show_default=True,
              help="standard (crop+flip), crop (no flip: when left/right matters), none.")
@click.option("--sampling", default=None, help="Clip-cache key (default: the latest `vtl sample`).")
@click.option("--workers", default=None, type=int,
              help="DataLoader worker processes (default: 0 on CPU, a few per GPU).")
@click.option("--patience", default=None, type=int, help="Stop after this many epochs without a validation gain.")
@click.option("--clip-grad", default=None, type=float, help="Clip the gradient norm to this value.")
@click.option("--warmup", default=0.1, show_default=True, help="Share of the steps spent warming up the LR.")
@click.option("--amp", is_flag=True, help="Mixed precision: bf16 autocast (CPU, recent GPUs) or fp16 + scaling.")
@click.option("--channels-last", is_flag=True, help="channels-last memory format (faster convolutions).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (slow start, faster steps).")
@click.option("--seed", default=0, show_default=True)
@click.option("--name", default=None, help="Run name (default: <backbone>-<strategy>).")
@click.option("--restart", is_flag=True, help="Ignore last.pt and train from the start.")
def train(workspace: Path, restart: bool, **options) -> None:
    """3. Adapt a pretrained backbone to the workspace's classes.

    Writes WORKSPACE/train/RUN/{best.pt,last.pt,metrics.jsonl,config.yaml};
    re-running resumes from last.pt. Example:

    \b
      vtl train runs/ucf --backbone efficientnet_lite0 --strategy linear
      vtl train runs/ucf --backbone r3d_18 --strategy finetune --weights kinetics400 --epochs 20
    """
    from pipeline.stages.train import TrainConfig, run_train
    from pipeline.workspace import Workspace

    options["compile"] = options.pop("compile_")
    cfg = TrainConfig(**options)
    r = run_train(Workspace(workspace), cfg, restart=restart)
    click.echo(f"trained {r['run_dir']}: best val top-1 {r['best_val_top1']:.3f} after {r['epochs']} epochs "
               f"({r['train_seconds']:.0f} s)")


# ----------------------------------------------------------------------------- evaluate


@cli.command(short_help="4. Score a run: top-1/5, mean class accuracy, confusion matrix")
@WORKSPACE
@click.option("--run", "--name", "run", default=None,
              help="Run name under WORKSPACE/train (default: the latest). Under torchrun write --name: "
                   "torchrun's own parser mistakes --run for its --run-path.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--batch-size", default=16, show_default=True)
@click.option("--views", default=None,
              help="CLIPSxCROPS test views, e.g. 5x3: the first CLIPS cached clips of each video, each at "
                   "1 (centre) or 3 spatial crops; softmax averaged per video. Default: all cached clips x 1.")
def evaluate(workspace: Path, run: str | None, split: str, batch_size: int, views: str | None) -> None:
    """4. Score a trained run: top-1/top-5, mean class accuracy, confusion matrix.

    Writes WORKSPACE/eval/RUN/{metrics.json,per_class.csv,predictions.csv,confusion.png}.
    Example:

    \b
      vtl evaluate runs/ucf --run efficientnet_lite0-linear
      vtl evaluate runs/ucf --run r3d_18-finetune --views 5x3     # clip- and video-level
    """
    from pipeline.stages.evaluate import run_evaluate
    from pipeline.workspace import Workspace

    m = run_evaluate(Workspace(workspace), run, split, batch_size, views)
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
@click.option("--sources", "sources_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="YAML file of sources (backbone + weights tag or checkpoint) and training settings.")
@click.option("--strategies", default=None,
              help="Comma-separated: linear, partial, finetune, gradual (default: the file's, else linear,finetune). "
                   "scratch always runs as the baseline.")
@click.option("--fractions", default=None,
              help="Comma-separated label fractions of the train split (default: the file's, else 0.1,0.25,0.5,1.0).")
@click.option("--seeds", default=None, type=int, help="Seeds 0..N-1 per cell (default: the file's, else 3).")
@click.option("--max-parallel", default=1, show_default=True,
              help="Cells run at once, in child processes when above 1 (under this command's workspace lock).")
@click.option("--force", is_flag=True, help="Retrain and re-evaluate every cell.")
def benchmark(workspace: Path, sources_file: Path, strategies: str | None, fractions: str | None,
              seeds: int | None, max_parallel: int, force: bool) -> None:
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
    from pipeline.stages.benchmark import BenchmarkConfig, parse_fractions, parse_strategies, run_benchmark
    from pipeline.workspace import Workspace

    if seeds is not None and seeds < 1:
        raise click.BadParameter("must be at least 1", param_hint="--seeds")
    cfg = BenchmarkConfig(sources=sources_file,
                          strategies=parse_strategies(strategies) if strategies is not None else None,
                          fractions=parse_fractions(fractions) if fractions is not None else None,
                          seeds=seeds, max_parallel=max_parallel, force=force)
    r = run_benchmark(Workspace(workspace), cfg)
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
    from pipeline.config import run_file

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
