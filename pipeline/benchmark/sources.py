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

A source may instead be a *source dataset*: a prepared and sampled vtl workspace that the benchmark
pretrains the backbone on itself (from scratch, or continuing from ``from:`` weights), with any
``vtl train`` options in ``pretrain:``, before transferring the result like a checkpoint::

      - name: gym-clips
        dataset: ../runs/gym                # a workspace, relative to the file
        backbone: r3d_18
        pretrain: {epochs: 30, input_size: 112}
        from: kinetics400                   # optional: a tag or checkpoint to continue from

Relative weight and dataset paths are relative to the file. Every problem is one ``UserError``
line naming the file and the entry.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.choices import SCRATCH, STRATEGIES
from pipeline.engine.config import TrainConfig
from pipeline.errors import UserError
from pipeline.options import check_keys, load_yaml

STRATEGY_CHOICES = tuple(s for s in STRATEGIES if s != SCRATCH)  # scratch always runs, as the baseline
TOP_KEYS = ("train", "sources", "strategies", "fractions", "seeds", "lr_factors")
SOURCE_KEYS = ("name", "backbone", "weights", "train", "dataset", "pretrain", "from")
PRETRAIN_RUN = "pretrain"  # the run a source dataset's pretraining writes, under benchmark/sources/<name>/
# `vtl train` options the grid sets itself; a sources file may set every other TrainConfig field.
GRID_KEYS = ("backbone", "strategy", "weights", "fraction", "seed", "name")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class Source:
    name: str
    backbone: str
    weights: str  # a tag, or an absolute path (for a source dataset: its pretraining's best.pt, once bound)
    train: dict[str, Any] = field(default_factory=dict)  # flat overrides
    per_strategy: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset: Path | None = None  # a source dataset: the workspace the benchmark pretrains on
    pretrain: dict[str, Any] = field(default_factory=dict)  # its `vtl train` options
    pretrain_from: str | None = None  # `from:`: weights its pretraining starts from (None: scratch)

    def pretrain_config(self) -> TrainConfig:
        """The `vtl train` settings of a source dataset's pretraining."""
        return TrainConfig(backbone=self.backbone, strategy="finetune" if self.pretrain_from else SCRATCH,
                           weights=self.pretrain_from, name=PRETRAIN_RUN, **self.pretrain)


@dataclass
class SourcesFile:
    path: Path
    sources: list[Source]
    train: dict[str, Any] = field(default_factory=dict)
    per_strategy: dict[str, dict[str, Any]] = field(default_factory=dict)
    strategies: tuple[str, ...] | None = None
    fractions: tuple[float, ...] | None = None
    seeds: int | None = None
    lr_factors: tuple[float, ...] | None = None

    def bind(self, pretrained: dict[str, Path]) -> None:
        """Point each source dataset at the checkpoint its pretraining writes (``{name: best.pt}``)."""
        for s in self.sources:
            if s.dataset is not None:
                s.weights = str(pretrained[s.name])


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
        for key in ("name", "backbone"):
            if item.get(key) in (None, ""):
                raise UserError(f"{where}: missing key {key!r}")
        if ("weights" in item) == ("dataset" in item):
            raise UserError(f"{where}: give either `weights` (a tag or checkpoint) or `dataset` (a source workspace "
                            "the benchmark pretrains on), not " + ("both" if "weights" in item else "neither"))
        name = str(item["name"])
        if not _NAME.match(name):
            raise UserError(f"{where}: name {name!r} may hold only letters, digits and . _ + - (it names runs)")
        if name == SCRATCH or name in {s.name for s in sources}:
            raise UserError(f"{where}: name {name!r} is " + ("reserved" if name == SCRATCH else "used twice"))
        backbone = str(item["backbone"])
        s_flat, s_per = _split_train(item.get("train"), f"{where}.train")
        if "weights" in item:
            for key in ("pretrain", "from"):
                if key in item:
                    raise UserError(f"{where}: `{key}` goes with `dataset` (a source the benchmark pretrains)")
            weights = str(item["weights"])
            if weights == "none":
                raise UserError(f"{where}: a source needs pretrained weights (the scratch baseline is always run)")
            sources.append(Source(name, backbone, _weights_value(backbone, weights, base), s_flat, s_per))
        else:
            sources.append(_dataset_source(item, name, backbone, s_flat, s_per, base, where))
    return SourcesFile(path, sources, flat, per,
                       strategies=parse_strategies(data["strategies"], str(path)) if "strategies" in data else None,
                       fractions=parse_fractions(data["fractions"], str(path)) if "fractions" in data else None,
                       seeds=_seeds(data["seeds"], str(path)) if "seeds" in data else None,
                       lr_factors=parse_lr_factors(data["lr_factors"], str(path)) if "lr_factors" in data else None)


def _dataset_source(item: dict[str, Any], name: str, backbone: str, flat: dict[str, Any],
                    per: dict[str, dict[str, Any]], base: Path, where: str) -> Source:
    pretrain = item.get("pretrain") or {}
    if not isinstance(pretrain, dict):
        raise UserError(f"{where}.pretrain: expected a mapping of `vtl train` options")
    check_keys(pretrain, train_keys(), f"{where}.pretrain")
    dataset = Path(str(item["dataset"])).expanduser()
    start = item.get("from")
    source = Source(name, backbone, "", flat, per,
                    dataset=dataset if dataset.is_absolute() else (base / dataset).resolve(), pretrain=dict(pretrain),
                    pretrain_from=None if start in (None, "none") else _weights_value(backbone, str(start), base))
    try:
        source.pretrain_config()
    except UserError as e:
        raise UserError(f"{where}.pretrain: {e}") from None
    return source


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
    from pipeline.workspace import Workspace

    problems = []
    for s in sf.sources:
        try:
            if s.dataset is None:
                resolve(get_spec(s.backbone), s.weights)
                continue
            ws = Workspace(s.dataset)
            ws.require_prepared()
            ws.clip_cache(s.pretrain.get("sampling"))  # sampled, with the clips it asks for
            if s.pretrain_from:
                resolve(get_spec(s.backbone), s.pretrain_from)
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
    return _numbers(value, where, lambda f: 0.0 < f <= 1.0, "fractions must be in (0, 1]", "fraction")


def parse_lr_factors(value: Any, where: str = "--lr-factors") -> tuple[float, ...]:
    """The multiples of the configured learning rate ``--select-lr`` tries (e.g. ``0.333,1,3``)."""
    return _numbers(value, where, lambda f: f > 0, "learning-rate factors must be above 0", "factor")


def _numbers(value: Any, where: str, valid: Callable[[float], bool], rule: str, what: str) -> tuple[float, ...]:
    """A comma-separated list (or YAML list) of numbers, each ``valid``, sorted and without repeats."""
    out = []
    for v in _listish(value):
        try:
            f = float(v)
        except ValueError:
            raise UserError(f"{where}: {v!r} is not a number") from None
        if not valid(f):
            raise UserError(f"{where}: {rule}, got {v}")
        out.append(f)
    if not out:
        raise UserError(f"{where}: no {what} given")
    return tuple(sorted(set(out)))


def _seeds(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where}: seeds must be a positive integer (the number of seeds), got {value!r}")
    return value
