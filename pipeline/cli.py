"""The ``vtl`` command line: one thin command per stage; the work lives in ``pipeline.stages``.

Every option of a stage is generated from its config dataclass (:mod:`pipeline.cli_options`), so the
command line, ``vtl run`` config files and the Python API share one default, type, help text and
set of choices per option. This module imports no torch: ``--help`` stays instant, and the worker
processes ``prepare``/``sample`` spawn (which import it again) stay small.

Every user error prints one line ``error: …`` on stderr and exits with code 2
(``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline import __version__
from pipeline.benchmark.config import BenchmarkConfig
from pipeline.cli_options import given_on_command_line, options_from
from pipeline.cli_tools import TOOLS
from pipeline.data.sampling import SamplingConfig
from pipeline.engine.config import EvaluateConfig, TrainConfig
from pipeline.errors import UserError
from pipeline.options import field_names
from pipeline.progress import echo, set_quiet, set_verbose
from pipeline.stages.prepare import PrepareConfig
from pipeline.stages.sample import SampleConfig

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
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or status lines (the stage's log file still "
                                                  "gets them).")
@click.option("--verbose", "-v", is_flag=True, help="Also show detail lines (each run's provenance, ...); the "
                                                    "log files always hold them.")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("--wait", "wait_s", default=0.0, show_default=True, metavar="SECONDS",
              help="If another stage is writing to the workspace, wait up to this long for it to finish "
                   "(default: fail at once, naming it). E.g. queue several `vtl train` on one workspace.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: bool, debug: bool, wait_s: float) -> None:
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
    if quiet and verbose:
        raise UserError("--quiet and --verbose contradict each other: pass one")
    set_quiet(quiet)
    set_verbose(verbose)
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
    Source datasets (`dataset:` in the sources file) are pretrained first. With
    --select-lr (default) each source x strategy runs at several learning rates and
    keeps the best on the validation split; only that rate is tested. Each source
    is judged against its own backbone from scratch and against the best model
    trained from scratch ("worth it"). Writes WORKSPACE/benchmark/{summary.json,
    ranking.csv,results.csv,lr_selection.csv,transferability.csv,report.md,*.png}.
    Example:

    \b
      vtl benchmark runs/ucf --sources configs/sources.yaml --strategies linear,finetune \\
          --fractions 0.1,0.25,1.0 --seeds 3

    The same grid on a Ray cluster or on Slurm (docs/distributed.md); several
    executors, or machines, may run one grid on one workspace at once:

    \b
      vtl benchmark runs/ucf --sources configs/sources.yaml --executor ray --ray-address auto
      vtl benchmark runs/ucf --sources configs/sources.yaml --executor slurm --slurm-partition gpu --no-wait
    """
    from pipeline.progress import warn
    from pipeline.report.benchmark_report import format_flag, headline
    from pipeline.stages.benchmark import run_benchmark
    from pipeline.workspace import Workspace

    r = run_benchmark(Workspace(workspace), BenchmarkConfig(**options))
    if "submitted" in r:  # --no-wait
        click.echo(f"submitted the benchmark as job {r['submitted']}; then: vtl benchmark {workspace} ... --collect")
        return
    click.echo(headline(r).replace("**", ""))
    for e in r["ranking"]:
        click.echo(f"{e['rank']}. {e['source']}: {e['best_strategy']} top-1 {e['top1_mean']:.3f} ± "
                   f"{e['top1_spread']:.3f} ({e['verdict']})")
    tau = r["kendall_tau"]["logme"]
    click.echo(f"Kendall's tau (LogME vs measured): {'n/a' if tau is None else f'{tau:+.2f}'}; "
               f"{r['cells']} cells ({r['ran']} run now); report: {r['report']}")
    for flag in r["flags"]:
        warn(format_flag(flag))
    for cell in r["failed_cells"]:
        warn(f"failed cell {cell['run']}: {cell['error']}")


# The commands around the stages, after them in `vtl --help`.
for _command in TOOLS:
    cli.add_command(_command)


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
