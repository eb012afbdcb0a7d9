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

import contextlib
import dataclasses
import types
import typing
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
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a config") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())  # one line, whatever PyYAML says
        raise UserError(f"{path}{where}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections ({', '.join(SECTIONS)})")
    return data


def check_keys(given: dict[str, Any], allowed: list[str] | tuple[str, ...], where: str) -> None:
    for key in given:
        if key not in allowed:
            close = get_close_matches(str(key), allowed, n=1)
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


@dataclasses.dataclass
class Plan:
    """A validated config file: what :func:`run_file` will run, in order."""

    workspace: Path
    prepare: Any = None  # PrepareConfig
    sample: dict[str, Any] | None = None
    sample_workers: int = 2
    trains: list[Any] = dataclasses.field(default_factory=list)  # TrainConfig
    evaluate: dict[str, Any] | None = None


def load_plan(path: Path) -> Plan:
    """Read and validate every section of ``path`` (keys, value types and values); runs nothing.

    Everything is checked before the first stage runs: a typo in `evaluate:` must not
    surface after an hour of sampling. Any problem is a :class:`UserError`.
    """
    from pipeline.data.sampling import SamplingConfig
    from pipeline.stages.prepare import PrepareConfig
    from pipeline.stages.train import TrainConfig

    data = load_yaml(path)
    check_keys(data, SECTIONS, str(path))
    base = path.resolve().parent
    if data.get("workspace") in (None, "") or isinstance(data["workspace"], (dict, list, bool)):
        raise UserError(f"{path}: missing key 'workspace' (the workspace folder)")
    plan = Plan(workspace=_paths(data, ("workspace",), base)["workspace"])
    if "prepare" in data:
        section = _paths(_section(data, "prepare", path), ("root", "splits", "classes"), base)
        if "annotations" in section:
            section["annotations"] = _annotation_paths(section["annotations"], base, f"{path}: prepare")
        check_keys(section, _fields(PrepareConfig), f"{path}: prepare")
        plan.prepare = _build(PrepareConfig, section, f"{path}: prepare")
    if "sample" in data:
        sample = dict(_section(data, "sample", path))
        plan.sample_workers = sample.pop("workers", 2)
        if type(plan.sample_workers) is not int:
            raise UserError(f"{path}: sample: workers must be an integer")
        check_keys(sample, _fields(SamplingConfig), f"{path}: sample")
        _build(SamplingConfig, sample, f"{path}: sample")  # values checked now; media-specific rules later
        plan.sample = sample
    runs = data.get("train") or []
    if not isinstance(runs, (dict, list)):
        raise UserError(f"{path}: train must be a mapping of train options or a list of them")
    for i, section in enumerate([runs] if isinstance(runs, dict) else runs):
        if not isinstance(section, dict):
            raise UserError(f"{path}: train[{i}] must be a mapping of train options")
        if _looks_like_path(section.get("weights")):
            section = {**section, "weights": str(_paths(section, ("weights",), base)["weights"])}
        check_keys(section, _fields(TrainConfig), f"{path}: train[{i}]")
        plan.trains.append(_build(TrainConfig, section, f"{path}: train[{i}]"))
    if "evaluate" in data:
        evaluate = _section(data, "evaluate", path)
        check_keys(evaluate, ("split", "batch_size", "views"), f"{path}: evaluate")
        plan.evaluate = evaluate
    return plan


def run_file(path: Path) -> dict[str, Any]:
    """Validate every section of ``path`` (:func:`load_plan`), then run the stages in order."""
    from pipeline.report.runs import write_report
    from pipeline.stages.evaluate import run_evaluate
    from pipeline.stages.prepare import format_summary, run_prepare
    from pipeline.stages.sample import run_sample, sampling_for
    from pipeline.stages.train import run_train
    from pipeline.workspace import Workspace

    plan = load_plan(path)
    ws = Workspace(plan.workspace)
    results: dict[str, Any] = {}
    if plan.prepare is not None:
        results["prepare"] = run_prepare(ws, plan.prepare)
        echo(f"prepare: {format_summary(results['prepare'])}")
    if plan.sample is not None:
        results["sample"] = run_sample(ws, sampling_for(ws, plan.sample), workers=plan.sample_workers)
    results["train"] = [run_train(ws, cfg) for cfg in plan.trains]
    if plan.evaluate is not None:
        results["evaluate"] = [run_evaluate(ws, cfg.run_name, **plan.evaluate) for cfg in plan.trains]
        results["report"] = write_report(ws)
        echo(f"report: {results['report']}")
    return results


def _annotation_paths(value: Any, base: Path, where: str) -> tuple[str, ...]:
    """``annotations``: one ``[SPLIT=]FILE`` or a list of them, FILE relative to the config's folder."""
    from pipeline.data.formats.csvlist import parse_spec

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
    return section


def _looks_like_path(value: Any) -> bool:
    return isinstance(value, str) and ("/" in value or value.endswith((".pt", ".pth", ".pyth")))


def _build(cls, section: dict[str, Any], where: str):
    section = _check_types(cls, section, where)
    try:
        return cls(**section)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: {e}") from None


def _check_types(cls, section: dict[str, Any], where: str) -> dict[str, Any]:
    """YAML gives ints, floats, strings, lists...: refuse a value of the wrong kind by name
    (``frames: 8.5`` would otherwise reach the sampler). YAML 1.1 reads ``1e-3`` as a
    string, so numeric strings are accepted where a float is expected."""
    hints = typing.get_type_hints(cls)
    out = dict(section)
    for key, value in section.items():
        allowed = _kinds(hints.get(key))
        if float in allowed and isinstance(value, str):
            with contextlib.suppress(ValueError):
                out[key] = value = float(value)
        if allowed and not any(_is(value, kind) for kind in allowed):
            names = " or ".join(k.__name__ if k is not type(None) else "empty" for k in allowed)
            raise UserError(f"{where}: {key} must be {names}, got {value!r}")
    return out


def _kinds(hint: Any) -> tuple[type, ...]:
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    kinds = tuple(a for a in args if a in (int, float, str, bool, Path, type(None)))
    return kinds if len(kinds) == len(args) else ()  # anything fancier: left to the class


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is Path:
        return isinstance(value, (str, Path))
    return isinstance(value, kind)
