"""``vtl run CONFIG.yaml``: the stages in order from one YAML file.

The file's sections are the stages' options, names with underscores, and every section is built
through the same dataclasses as the command line, so it can set exactly what the CLI defines,
with the same types and defaults::

    workspace: runs/demo
    prepare:  {format: folder, root: data/clips, val_fraction: 0.2}
    sample:   {frames: 8, short_side: 64}
    train:                      # one run, or a list of runs
      - {backbone: efficientnet_lite0, strategy: linear, epochs: 30}
    evaluate: {split: test}     # evaluates every run listed under train
    benchmark: {sources: sources.yaml, strategies: [linear, finetune], fractions: [0.1, 1.0], seeds: 3}

Unknown keys are an error with a "did you mean" suggestion; relative paths are
relative to the config file's folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipeline.benchmark.config import BenchmarkConfig
from pipeline.data.formats.csvlist import parse_spec
from pipeline.data.sampling import SamplingConfig
from pipeline.engine.config import EvaluateConfig, TrainConfig
from pipeline.errors import UserError
from pipeline.options import build, check_keys, field_names, load_yaml
from pipeline.progress import echo
from pipeline.report.runs import write_report
from pipeline.stages.benchmark import run_benchmark
from pipeline.stages.evaluate import run_evaluate
from pipeline.stages.prepare import PrepareConfig, format_summary, run_prepare
from pipeline.stages.sample import SampleConfig, run_sample, sampling_for
from pipeline.stages.train import run_train
from pipeline.workspace import Workspace

SECTIONS = ("workspace", "prepare", "sample", "train", "evaluate", "benchmark")


@dataclasses.dataclass
class Plan:
    """A validated config file: what :func:`run_file` will run, in order."""

    workspace: Path
    prepare: PrepareConfig | None = None
    sample: dict[str, Any] | None = None  # the SamplingConfig options the file sets (media decides the rest)
    sample_run: SampleConfig = dataclasses.field(default_factory=SampleConfig)
    trains: list[TrainConfig] = dataclasses.field(default_factory=list)
    evaluate: EvaluateConfig | None = None
    benchmark: BenchmarkConfig | None = None


def load_plan(path: Path) -> Plan:
    """Read and validate every section of ``path`` (keys, value types and values); runs nothing.

    Everything is checked before the first stage runs: a typo in `evaluate:` must not
    surface after an hour of sampling. Any problem is a :class:`UserError`.
    """
    data = load_yaml(path, f"a mapping of sections ({', '.join(SECTIONS)})")
    check_keys(data, SECTIONS, str(path))
    base = path.resolve().parent
    if data.get("workspace") in (None, "") or isinstance(data["workspace"], (dict, list, bool)):
        raise UserError(f"{path}: missing key 'workspace' (the workspace folder)")
    plan = Plan(workspace=_path(data["workspace"], base))
    if "prepare" in data:
        section = _section(data, "prepare", path)
        section.update({k: _path(section[k], base) for k in ("root", "splits", "classes")
                        if section.get(k) is not None})
        if "annotations" in section:
            section["annotations"] = _annotation_paths(section["annotations"], base, f"{path}: prepare")
        plan.prepare = build(PrepareConfig, section, f"{path}: prepare")
    if "sample" in data:
        section = _section(data, "sample", path)
        check_keys(section, field_names(SamplingConfig) + field_names(SampleConfig), f"{path}: sample")
        run_keys = {k: section.pop(k) for k in field_names(SampleConfig) if k in section}
        plan.sample_run = build(SampleConfig, run_keys, f"{path}: sample")
        build(SamplingConfig, section, f"{path}: sample")  # values checked now; media-specific rules later
        plan.sample = section
    runs = data.get("train") or []
    if not isinstance(runs, (dict, list)):
        raise UserError(f"{path}: train must be a mapping of train options or a list of them")
    for i, section in enumerate([runs] if isinstance(runs, dict) else runs):
        if not isinstance(section, dict):
            raise UserError(f"{path}: train[{i}] must be a mapping of train options")
        if _looks_like_path(section.get("weights")):
            section = {**section, "weights": str(_path(section["weights"], base))}
        plan.trains.append(build(TrainConfig, section, f"{path}: train[{i}]"))
    if "evaluate" in data:
        section = _section(data, "evaluate", path)
        check_keys(section, [k for k in field_names(EvaluateConfig) if k != "run"], f"{path}: evaluate")
        plan.evaluate = build(EvaluateConfig, section, f"{path}: evaluate")
    if "benchmark" in data:
        section = _section(data, "benchmark", path)
        if section.get("sources") is not None:
            section["sources"] = _path(section["sources"], base)
        plan.benchmark = build(BenchmarkConfig, section, f"{path}: benchmark")
    return plan


def run_file(path: Path) -> dict[str, Any]:
    """Validate every section of ``path`` (:func:`load_plan`), then run the stages in order."""
    plan = load_plan(path)
    ws = Workspace(plan.workspace)
    results: dict[str, Any] = {}
    if plan.prepare is not None:
        results["prepare"] = run_prepare(ws, plan.prepare)
        echo(f"prepare: {format_summary(results['prepare'])}")
    if plan.sample is not None:
        results["sample"] = run_sample(ws, sampling_for(ws, plan.sample), plan.sample_run)
    results["train"] = [run_train(ws, cfg) for cfg in plan.trains]
    if plan.evaluate is not None:
        results["evaluate"] = [run_evaluate(ws, dataclasses.replace(plan.evaluate, run=cfg.run_name))
                               for cfg in plan.trains]
        results["report"] = write_report(ws)
        echo(f"report: {results['report']}")
    if plan.benchmark is not None:
        results["benchmark"] = run_benchmark(ws, plan.benchmark)
        echo(f"benchmark: {results['benchmark']['report']}")
    return results


def _annotation_paths(value: Any, base: Path, where: str) -> tuple[str, ...]:
    """``annotations``: one ``[SPLIT=]FILE`` or a list of them, FILE relative to the config's folder."""
    specs = [value] if isinstance(value, str) else value
    if not isinstance(specs, list) or not all(isinstance(v, str) for v in specs):
        raise UserError(f"{where}: annotations must be a file or a list of files ([SPLIT=]FILE)")
    out = []
    for spec in specs:
        split, file = parse_spec(spec)
        file = file if file.is_absolute() else base / file
        out.append(f"{split}={file}" if split else str(file))
    return tuple(out)


def _section(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    section = data[name] or {}
    if not isinstance(section, dict):
        raise UserError(f"{path}: {name} must be a mapping of options, got {type(section).__name__}")
    return dict(section)


def _path(value: Any, base: Path) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else base / p


def _looks_like_path(value: Any) -> bool:
    return isinstance(value, str) and ("/" in value or value.endswith((".pt", ".pth", ".pyth")))
