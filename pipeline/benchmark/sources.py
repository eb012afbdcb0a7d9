"""The sources file of ``vtl benchmark`` (YAML; see ``configs/sources.yaml``): which sources to
compare, with which ``vtl train`` settings, and the grid's default strategies, fractions and seeds::

    strategies: [linear, finetune]      # optional defaults of --strategies/--fractions/--seeds
    fractions: [0.1, 0.25, 0.5, 1.0]
    seeds: 3
    train:                              # `vtl train` options for every cell ...
      epochs: 10
      lr: 0.001
      linear: {epochs: 60, lr: 0.01}    # ... and per strategy (scratch too)
    sources:
      - name: imagenet-effnet           # display name: letters, digits, . _ + -
        backbone: efficientnet_lite0
        weights: imagenet1k             # a tag, or the path of a `vtl train` checkpoint
        train: {input_size: 112, partial: {freeze_to: stage3}}   # per-source overrides

Relative weight paths are relative to the file. Every problem is one ``UserError`` line naming
the file and the entry.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.choices import SCRATCH, STRATEGIES
from pipeline.engine.config import TrainConfig
from pipeline.errors import UserError
from pipeline.options import check_keys, load_yaml

STRATEGY_CHOICES = tuple(s for s in STRATEGIES if s != SCRATCH)  # scratch always runs, as the baseline
TOP_KEYS = ("train", "sources", "strategies", "fractions", "seeds")
SOURCE_KEYS = ("name", "backbone", "weights", "train")
# `vtl train` options the grid sets itself; a sources file may set every other TrainConfig field.
GRID_KEYS = ("backbone", "strategy", "weights", "fraction", "seed", "name")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class Source:
    name: str
    backbone: str
    weights: str  # a tag, or an absolute path
    train: dict[str, Any] = field(default_factory=dict)  # flat overrides
    per_strategy: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class SourcesFile:
    path: Path
    sources: list[Source]
    train: dict[str, Any] = field(default_factory=dict)
    per_strategy: dict[str, dict[str, Any]] = field(default_factory=dict)
    strategies: tuple[str, ...] | None = None
    fractions: tuple[float, ...] | None = None
    seeds: int | None = None


def train_keys() -> tuple[str, ...]:
    """The `vtl train` options a sources file may set: TrainConfig's fields but the grid's."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in GRID_KEYS)


def _split_train(section: Any, where: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A ``train:`` mapping → (flat options, {strategy: options})."""
    if section is None:
        return {}, {}
    if not isinstance(section, dict):
        raise UserError(f"{where}: expected a mapping of `vtl train` options")
    flat, per = {}, {}
    strategies = (SCRATCH, *STRATEGY_CHOICES)
    allowed = train_keys()
    check_keys(section, (*allowed, *strategies), where)
    for k, v in section.items():
        if k in strategies:
            if v is None:
                continue
            if not isinstance(v, dict):
                raise UserError(f"{where}.{k}: expected a mapping of `vtl train` options")
            check_keys(v, allowed, f"{where}.{k}")
            per[k] = dict(v)
        else:
            flat[k] = v
    return flat, per


def load_sources(path: Path) -> SourcesFile:
    """Read and validate a sources file; relative weight paths are relative to the file."""
    path = Path(path)
    data = load_yaml(path)
    check_keys(data, TOP_KEYS, str(path))
    flat, per = _split_train(data.get("train"), f"{path}: train")
    items = data.get("sources")
    if not isinstance(items, list) or not items:
        raise UserError(f"{path}: `sources` must be a non-empty list of {{name, backbone, weights}}")
    base = path.resolve().parent
    sources: list[Source] = []
    for i, item in enumerate(items):
        where = f"{path}: sources[{i}]"
        if not isinstance(item, dict):
            raise UserError(f"{where}: expected a mapping with keys {', '.join(SOURCE_KEYS)}")
        check_keys(item, SOURCE_KEYS, where)
        for key in ("name", "backbone", "weights"):
            if item.get(key) in (None, ""):
                raise UserError(f"{where}: missing key {key!r}")
        name = str(item["name"])
        if not _NAME.match(name):
            raise UserError(f"{where}: name {name!r} may hold only letters, digits and . _ + - (it names runs)")
        if name == SCRATCH or name in {s.name for s in sources}:
            raise UserError(f"{where}: name {name!r} is " + ("reserved" if name == SCRATCH else "used twice"))
        weights = str(item["weights"])
        if weights == "none":
            raise UserError(f"{where}: a source needs pretrained weights (the scratch baseline is always run)")
        s_flat, s_per = _split_train(item.get("train"), f"{where}.train")
        sources.append(Source(name, str(item["backbone"]), _weights_value(str(item["backbone"]), weights, base),
                              s_flat, s_per))
    return SourcesFile(path, sources, flat, per,
                       strategies=parse_strategies(data["strategies"], str(path)) if "strategies" in data else None,
                       fractions=parse_fractions(data["fractions"], str(path)) if "fractions" in data else None,
                       seeds=_seeds(data["seeds"], str(path)) if "seeds" in data else None)


def _weights_value(backbone: str, weights: str, base: Path) -> str:
    """A tag stays a tag; anything else is a path, made absolute relative to the sources file."""
    from pipeline.models.registry import get_spec

    if weights in get_spec(backbone).weights:
        return weights
    p = Path(weights).expanduser()
    looks_like_path = "/" in weights or p.suffix in (".pt", ".pth", ".pyth", ".ckpt") or (base / p).exists()
    if not looks_like_path:
        return weights  # an unknown tag: `resolve` says which tags exist
    return str(p if p.is_absolute() else (base / p).resolve())


def check_weights(sf: SourcesFile) -> None:
    """Every source's weights must be on this machine before anything trains."""
    from pipeline.models.registry import get_spec
    from pipeline.models.weights import resolve

    problems = []
    for s in sf.sources:
        try:
            resolve(get_spec(s.backbone), s.weights)
        except UserError as e:
            problems.append(f"source {s.name!r}: {e}")
    if problems:
        raise UserError(f"{sf.path}: " + "; ".join(problems))


def _listish(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    return [str(value)]


def parse_strategies(value: Any, where: str = "--strategies") -> tuple[str, ...]:
    names = _listish(value)
    for n in names:
        if n == SCRATCH:
            raise UserError(f"{where}: scratch is always run as the baseline; list only transfer strategies")
        if n not in STRATEGY_CHOICES:
            raise UserError(f"{where}: unknown strategy {n!r}; choose from {', '.join(STRATEGY_CHOICES)}")
    if not names:
        raise UserError(f"{where}: no strategy given")
    return tuple(dict.fromkeys(names))


def parse_fractions(value: Any, where: str = "--fractions") -> tuple[float, ...]:
    out = []
    for v in _listish(value):
        try:
            f = float(v)
        except ValueError:
            raise UserError(f"{where}: {v!r} is not a number") from None
        if not 0.0 < f <= 1.0:
            raise UserError(f"{where}: fractions must be in (0, 1], got {v}")
        out.append(f)
    if not out:
        raise UserError(f"{where}: no fraction given")
    return tuple(sorted(set(out)))


def _seeds(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where}: seeds must be a positive integer (the number of seeds), got {value!r}")
    return value
