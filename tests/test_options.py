"""One home per option: every stage option of the command line takes its name, default, type and
choices from its config dataclass, ``vtl run`` builds its sections through the same classes (so a
config file and the stage commands with the same written options do the same thing), and the
import layers of docs/architecture.md are enforced by ``lint-imports``."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from conftest import REPO, invoke_vtl

from pipeline.benchmark.config import BenchmarkConfig
from pipeline.cli import cli
from pipeline.data.sampling import SamplingConfig
from pipeline.engine.config import EvaluateConfig, PredictConfig, TrainConfig
from pipeline.options import default_of
from pipeline.stages.prepare import PrepareConfig
from pipeline.stages.sample import SampleConfig

# Each stage command and the config dataclasses its options come from.
COMMAND_CONFIGS = {
    "prepare": (PrepareConfig,),
    "sample": (SamplingConfig, SampleConfig),
    "train": (TrainConfig,),
    "evaluate": (EvaluateConfig,),
    "benchmark": (BenchmarkConfig,),
    "predict": (PredictConfig,),
}
# Options that are actions of one invocation, not settings of a config: no dataclass field.
ACTIONS = {"prepare": {"shard", "merge"}, "sample": {"force", "shard", "merge"}, "train": {"restart"},
           "predict": {"topk", "as_json"}}


@pytest.mark.parametrize("command", sorted(COMMAND_CONFIGS))
def test_every_option_default_equals_its_dataclass_field(command: str) -> None:
    params = {p.name: p for p in cli.commands[command].params if isinstance(p, click.Option)}
    params.pop("help", None)
    fields = {f.name: f for cls in COMMAND_CONFIGS[command] for f in dataclasses.fields(cls)}
    assert set(params) - ACTIONS.get(command, set()) == set(fields)  # no option without a field, nor the reverse
    for name, f in fields.items():
        param, default = params[name], default_of(f)
        if default is dataclasses.MISSING:
            assert param.required, name
            continue
        assert not param.required and param.default == default, (command, name, param.default, default)
        choices = f.metadata.get("choices")
        if choices:
            assert isinstance(param.type, click.Choice) and tuple(param.type.choices) == choices, name


def test_choice_options_list_every_value_in_help() -> None:
    """--format and --strategy, among others, show every value they accept."""
    for command, option in (("prepare", "--format"), ("train", "--strategy"), ("sample", "--sampling")):
        text = " ".join(invoke_vtl(command, "--help").stdout.split())
        param = next(p for p in cli.commands[command].params if option in p.opts)
        assert "[" + "|".join(param.type.choices) + "]" in text, (command, option)
    assert "stanford_dogs" in invoke_vtl("prepare", "--help").stdout


def test_the_command_line_imports_no_torch() -> None:
    """prepare/sample spawn workers that import the CLI again: it must stay light."""
    code = "import sys, pipeline.cli; print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _train_options(name: str) -> dict[str, object]:
    return {"backbone": "efficientnet_lite0", "strategy": "linear", "epochs": 1, "input_size": 32, "name": name}


def test_vtl_run_and_the_stage_commands_agree(tiny_dataset: Path, tmp_path: Path) -> None:
    """The same written options, once as stage commands and once as a config file: the same clip
    cache key and the same run config. (The defaults once drifted: `vtl sample --stride` was 2 and
    the config file's 1, so `random` clips differed.)"""
    sample = {"frames": 3, "sampling": "random", "short_side": 32}
    cli_ws, run_ws = tmp_path / "cli", tmp_path / "run"
    invoke_vtl("-q", "prepare", cli_ws, "--root", tiny_dataset, "--workers", "0")
    invoke_vtl("-q", "sample", cli_ws, "--frames", "3", "--sampling", "random", "--short-side", "32",
               "--workers", "0")
    invoke_vtl("-q", "train", cli_ws, *[f"--{k.replace('_', '-')}={v}" for k, v in _train_options("a").items()])
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "workspace": str(run_ws), "prepare": {"root": str(tiny_dataset), "workers": 0},
        "sample": {**sample, "workers": 0}, "train": [_train_options("a")]}))
    invoke_vtl("-q", "run", config)

    def key(ws: Path) -> str:
        return yaml.safe_load((ws / "workspace.json").read_text())["samplings"][-1]

    assert key(cli_ws) == key(run_ws) == SamplingConfig(**sample).key
    assert (cli_ws / "clips" / key(cli_ws) / "params.json").read_text() == \
        (run_ws / "clips" / key(run_ws) / "params.json").read_text()
    run_config = [yaml.safe_load((ws / "train" / "a" / "config.yaml").read_text()) for ws in (cli_ws, run_ws)]
    for recorded in run_config:  # where each run came from (times, command line) differs, its settings not
        assert recorded.pop("provenance")["started"]
    assert run_config[0] == run_config[1]


def test_a_wrong_import_breaks_the_layers(tmp_path: Path) -> None:
    """lint-imports keeps every contract of pyproject.toml, and breaks on a data module that imports
    a stage (tried on a copy of the package)."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a test dependency (pyproject.toml)"
    ok = subprocess.run([lint], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and "0 broken" in ok.stdout, ok.stdout[-2000:]
    shutil.copytree(REPO / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    cache = tmp_path / "pipeline" / "data" / "cache.py"
    cache.write_text(cache.read_text() + "\nfrom pipeline.stages.train import run_train  # noqa: E402,F401\n")
    broken = subprocess.run([lint, "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(tmp_path), "PATH": str(Path(sys.executable).parent)})
    assert broken.returncode != 0, broken.stdout[-2000:]
    assert "pipeline.data.cache -> pipeline.stages.train" in broken.stdout
