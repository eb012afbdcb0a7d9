"""``vtl run CONFIG.yaml``: the stages in order from one YAML file.

The file's sections mirror the CLI, option names with underscores::

    workspace: runs/demo
    prepare:  {format: folder, root: data/clips, val_fraction: 0.2}
    sample:   {frames: 8, short_side: 64}
    train:                      # one run, or a list of runs
      - {backbone: efficientnet_lite0, strategy: linear, epochs: 30}
    evaluate: {split: test}     # evaluates every run listed under train

Unknown keys are an error with a "did you mean" suggestion; relative paths are
relative to the config file's folder.
"""

from __future__ import annotations

import dataclasses
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import UserError
from pipeline.progress import echo

SECTIONS = ("workspace", "prepare", "sample", "train", "evaluate")


def load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections ({', '.join(SECTIONS)})")
    return data


def check_keys(given: dict[str, Any], allowed: list[str] | tuple[str, ...], where: str) -> None:
    for key in given:
        if key not in allowed:
            close = get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{where}: unknown key {key!r}{hint}")


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _paths(section: dict[str, Any], keys: tuple[str, ...], base: Path) -> dict[str, Any]:
    out = dict(section)
    for k in keys:
        if out.get(k) is not None:
            p = Path(str(out[k])).expanduser()
            out[k] = p if p.is_absolute() else base / p
    return out


def run_file(path: Path) -> dict[str, Any]:
    """Validate every section of ``path`` (keys and values), then run the stages in order."""
    from pipeline.data.sampling import SamplingConfig
    from pipeline.report.runs import write_report
    from pipeline.stages.evaluate import run_evaluate
    from pipeline.stages.prepare import PrepareConfig, format_summary, run_prepare
    from pipeline.stages.sample import run_sample, sampling_for
    from pipeline.stages.train import TrainConfig, run_train
    from pipeline.workspace import Workspace

    data = load_yaml(path)
    check_keys(data, SECTIONS, str(path))
    base = path.resolve().parent
    if "workspace" not in data:
        raise UserError(f"{path}: missing key 'workspace'")
    ws = Workspace(_paths(data, ("workspace",), base)["workspace"])

    # Everything is checked before the first stage runs: a typo in `evaluate:` must not
    # surface after an hour of sampling.
    prepare = None
    if "prepare" in data:
        section = _paths(data["prepare"] or {}, ("root", "splits"), base)
        check_keys(section, _fields(PrepareConfig), f"{path}: prepare")
        prepare = _build(PrepareConfig, section, f"{path}: prepare")
    sample = None
    if "sample" in data:
        sample = dict(data["sample"] or {})
        sample_workers = sample.pop("workers", 2)
        check_keys(sample, _fields(SamplingConfig), f"{path}: sample")
        _build(SamplingConfig, sample, f"{path}: sample")  # values checked now; media-specific rules later
    runs = data.get("train") or []
    trains = []
    for i, section in enumerate([runs] if isinstance(runs, dict) else runs):
        if not isinstance(section, dict):
            raise UserError(f"{path}: train[{i}] must be a mapping of train options")
        if _looks_like_path(section.get("weights")):
            section = {**section, "weights": str(_paths(section, ("weights",), base)["weights"])}
        check_keys(section, _fields(TrainConfig), f"{path}: train[{i}]")
        trains.append(_build(TrainConfig, section, f"{path}: train[{i}]"))
    evaluate = None
    if "evaluate" in data:
        evaluate = data["evaluate"] or {}
        check_keys(evaluate, ("split", "batch_size", "views"), f"{path}: evaluate")

    results: dict[str, Any] = {}
    if prepare is not None:
        results["prepare"] = run_prepare(ws, prepare)
        echo(f"prepare: {format_summary(results['prepare'])}")
    if sample is not None:
        results["sample"] = run_sample(ws, sampling_for(ws, sample), workers=sample_workers)
    results["train"] = [run_train(ws, cfg) for cfg in trains]
    if evaluate is not None:
        results["evaluate"] = [run_evaluate(ws, cfg.run_name, **evaluate) for cfg in trains]
        results["report"] = write_report(ws)
        echo(f"report: {results['report']}")
    return results


def _looks_like_path(value: Any) -> bool:
    return isinstance(value, str) and ("/" in value or value.endswith((".pt", ".pth", ".pyth")))


def _build(cls, section: dict[str, Any], where: str):
    try:
        return cls(**section)
    except TypeError as e:
        raise UserError(f"{where}: {e}") from None
