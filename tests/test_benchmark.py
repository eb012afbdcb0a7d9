"""``vtl benchmark``: the grid, its resumption, parallel cells and the negative-transfer rule.

The pure numbers (gain, negative-transfer rule, ranking) are checked on hand-made rows; the
stage runs end to end on a tiny synthetic target with a deliberately bad source: a backbone
pretrained on a *label-shuffled* source (at a learning rate far too high), used as a linear
probe, which scratch clearly beats (~0.9 against ~0.4 top-1).

Why resnet18 (a frame backbone pooled over time) and not x3d_xs for the bad source: the
scratch baseline of the same backbone has to learn something in seconds for the comparison to
mean anything, and x3d_xs (as resnet18 on a dozen clips at batch size 4) trained from scratch on
this little data stays at chance in eval mode (BatchNorm running statistics lag the weights), no
better than a probe on garbage features, so nothing could be flagged. resnet18 at batch size 12
on 36 clips of 2 frames learns the target in ~15 s per cell.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.report.benchmark import (
    NEGATIVE,
    add_transfer_gains,
    measured_ranking,
    negative_transfer,
    rank_agreement,
    spread,
)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- pure functions


def _row(source, strategy, fraction, seed, top1, backbone="bb"):
    return {"source": source, "backbone": backbone, "strategy": strategy, "fraction": fraction, "seed": seed,
            "top1": top1}


def test_gain_and_negative_transfer_rule_on_hand_made_numbers() -> None:
    rows = [
        # scratch: 0.60, 0.62, 0.64 at f=1 (std 0.02); 0.30, 0.30, 0.30 at f=0.1 (std 0)
        *[_row("scratch", "scratch", 1.0, s, v) for s, v in enumerate((0.60, 0.62, 0.64))],
        *[_row("scratch", "scratch", 0.1, s, 0.30) for s in range(3)],
        # bad/linear: below scratch by 0.10 at f=1 (> spread 0.02): flagged; at f=0.1 by exactly 0.005
        # (< the 0.01 floor): not flagged
        *[_row("bad", "linear", 1.0, s, v) for s, v in enumerate((0.50, 0.52, 0.54))],
        *[_row("bad", "linear", 0.1, s, 0.295) for s in range(3)],
        # noisy/finetune: 0.05 below scratch on average, but its seeds spread by 0.1: not flagged
        *[_row("noisy", "finetune", 1.0, s, v) for s, v in enumerate((0.47, 0.57, 0.67))],
        # good/finetune: above scratch
        *[_row("good", "finetune", 1.0, s, v) for s, v in enumerate((0.80, 0.80, 0.83))],
        # another backbone's source is compared with that backbone's scratch only
        *[_row("scratch", "scratch", 1.0, s, 0.20, backbone="other") for s in range(3)],
        *[_row("other-src", "linear", 1.0, s, 0.40, backbone="other") for s in range(3)],
    ]
    add_transfer_gains(rows)
    gains = {(r["source"], r["fraction"], r["seed"]): r["transfer_gain"] for r in rows}
    assert gains[("bad", 1.0, 0)] == pytest.approx(0.50 - 0.60)
    assert gains[("bad", 1.0, 2)] == pytest.approx(0.54 - 0.64)  # same seed's scratch, not the mean
    assert gains[("good", 1.0, 1)] == pytest.approx(0.80 - 0.62)
    assert gains[("other-src", 1.0, 0)] == pytest.approx(0.40 - 0.20)
    assert all(r["transfer_gain"] == 0 for r in rows if r["strategy"] == "scratch")

    assert spread([0.60, 0.62, 0.64]) == pytest.approx(0.02)
    assert spread([0.5]) == 0.0

    flags = negative_transfer(rows)
    assert [(f["source"], f["strategy"], f["fraction"]) for f in flags] == [("bad", "linear", 1.0)]
    flag = flags[0]
    assert flag["deficit"] == pytest.approx(0.10)
    assert flag["margin"] == pytest.approx(0.02)
    assert flag["scratch_mean"] == pytest.approx(0.62)

    # The floor: one seed each (std 0), 0.02 below scratch is flagged, 0.005 below is not.
    single = [_row("scratch", "scratch", 1.0, 0, 0.5), _row("a", "linear", 1.0, 0, 0.48),
              _row("b", "linear", 1.0, 0, 0.495)]
    assert [f["source"] for f in negative_transfer(single)] == ["a"]
    # A missing scratch cell gives no gain (and no flag).
    orphan = add_transfer_gains([_row("x", "linear", 0.5, 0, 0.4)])
    assert orphan[0]["transfer_gain"] is None
    assert negative_transfer(orphan) == []


def test_measured_ranking_and_rank_agreement() -> None:
    rows = [
        *[_row("a", "linear", f, s, 0.5 + 0.1 * s) for f in (0.1, 1.0) for s in range(2)],
        *[_row("a", "finetune", f, s, 0.7) for f in (0.1, 1.0) for s in range(2)],
        *[_row("b", "linear", f, s, 0.4) for f in (0.1, 1.0) for s in range(2)],
        *[_row("c", "partial", f, s, 0.9 if f == 1.0 else 0.5) for f in (0.1, 1.0) for s in range(2)],
        *[_row("scratch", "scratch", f, s, 0.3) for f in (0.1, 1.0) for s in range(2)],
    ]
    ranking = measured_ranking(rows)
    assert [(e["source"], e["best_strategy"]) for e in ranking] == [("a", "finetune"), ("c", "partial"),
                                                                   ("b", "linear")]
    assert [e["rank"] for e in ranking] == [1, 2, 3]
    assert ranking[0]["top1_mean"] == pytest.approx(0.7) and ranking[0]["top1_spread"] == 0.0
    assert ranking[1]["top1_mean"] == pytest.approx(0.7)  # a tie with "a": broken by name
    measured = {e["source"]: e["top1_mean"] for e in ranking}
    assert rank_agreement({"a": 3.0, "b": 1.0, "c": 2.0}, {"a": 0.9, "b": 0.1, "c": 0.5}) == pytest.approx(1.0)
    assert rank_agreement({"a": 1.0, "b": 3.0, "c": 2.0}, {"a": 0.9, "b": 0.1, "c": 0.5}) == pytest.approx(-1.0)
    assert rank_agreement({"a": 1.0, "b": None, "c": None}, measured) is None  # one score: no tau
    assert rank_agreement({"a": 1.0, "b": 1.0}, measured) is None  # constant scores: undefined


def test_verdicts_against_own_and_best_scratch_on_hand_made_numbers() -> None:
    """The demo's first benchmark, in numbers: the ImageNet efficientnet probe (0.61) is far above an
    efficientnet from scratch (0.20) but below resnet18 from scratch (0.68): it beats only its own
    backbone's scratch, so it is not worth it; the best scratch model is a row of the ranking."""
    from pipeline.report.benchmark import BenchmarkResults, beats, summarize

    rows = [*[_row("scratch", "scratch", 1.0, s, 0.20, backbone="effnet") for s in range(2)],
            *[_row("scratch", "scratch", 1.0, s, v, backbone="resnet18") for s, v in enumerate((0.66, 0.70))],
            *[_row("imagenet", "linear", 1.0, s, v, backbone="effnet") for s, v in enumerate((0.60, 0.62))],
            *[_row("good", "finetune", 1.0, s, v, backbone="resnet18") for s, v in enumerate((0.80, 0.82))],
            *[_row("tie", "linear", 1.0, s, v, backbone="resnet18") for s, v in enumerate((0.67, 0.70))]]
    for r in rows:
        r.update(lr=0.01, train_seconds=1.0, status="ok", error="")
    summary = summarize(BenchmarkResults(add_transfer_gains(rows), []))
    by = {e["source"]: e for e in summary["ranking"]}
    assert [e["source"] for e in summary["ranking"]] == ["good", "tie", "scratch", "imagenet"]
    assert [e["rank"] for e in summary["ranking"]] == [1, 2, 3, 4]
    assert summary["best_scratch"] == {"backbone": "resnet18", "top1_mean": 0.68,
                                       "top1_spread": pytest.approx(0.028284, abs=1e-6)}
    assert (by["imagenet"]["beats_own_scratch"], by["imagenet"]["beats_best_scratch"]) == (True, False)
    assert (by["good"]["beats_own_scratch"], by["good"]["beats_best_scratch"]) == (True, True)
    assert (by["tie"]["beats_own_scratch"], by["tie"]["beats_best_scratch"]) == (False, False)  # within spread
    assert by["scratch"]["beats_own_scratch"] is None and by["scratch"]["backbone"] == "resnet18"
    assert by["good"]["verdict"].startswith("worth it")
    assert summary["negative_transfer"] == [] and summary["failed_cells"] == []
    # The margin is the seed spread, at least 0.01.
    assert beats({"top1_mean": 0.52, "top1_spread": 0.0}, {"top1_mean": 0.5, "top1_spread": 0.0}) is True
    assert beats({"top1_mean": 0.505, "top1_spread": 0.0}, {"top1_mean": 0.5, "top1_spread": 0.0}) is False
    assert beats({"top1_mean": 0.6, "top1_spread": 0.0}, None) is None


# ----------------------------------------------------------------------------- the sources file


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_sources_file_merging_and_validation(tmp_path: Path) -> None:
    from pipeline.benchmark.grid import plan
    from pipeline.benchmark.sources import load_sources

    ckpt = tmp_path / "src.pt"
    ckpt.write_bytes(b"not read while planning")
    f = _write(tmp_path / "s.yaml", """
train:
  epochs: 5
  lr: 0.001
  scratch: {lr: 0.01}
  linear: {epochs: 30}
  partial: {freeze_to: stage3}
sources:
  - {name: net, backbone: efficientnet_lite0, weights: imagenet1k,
     train: {input_size: 64, lr: 0.002, partial: {freeze_to: stage2}}}
  - {name: mine, backbone: efficientnet_lite0, weights: src.pt, train: {input_size: 64}}
""")
    sf = load_sources(f)
    assert sf.sources[1].weights == str(ckpt.resolve())  # relative to the sources file
    cells = plan(sf, ("linear", "partial"), (0.5, 1.0), 2)
    by_run = {c.run: c for c in cells}
    assert len(cells) == 2 * 2 * 2 * 2 + 2 * 2  # sources × strategies × fractions × seeds + scratch
    lin = by_run["bench-net-linear-f0.5-s1"]
    assert (lin.options["epochs"], lin.options["lr"], lin.options["input_size"]) == (30, 0.002, 64)
    assert by_run["bench-net-partial-f1-s0"].options["freeze_to"] == "stage2"
    scratch = by_run["bench-efficientnet_lite0-scratch-f1-s1"]
    assert (scratch.options["lr"], scratch.options["input_size"], scratch.weights) == (0.01, 64, "none")
    assert by_run["bench-mine-partial-f1-s0"].options["freeze_to"] == "stage3"

    with pytest.raises(UserError, match=r"unknown key 'epoch' \(did you mean 'epochs'\?\)"):
        load_sources(_write(tmp_path / "typo.yaml", "train: {epoch: 3}\nsources: [{name: a, backbone: x3d_xs, "
                                                    "weights: kinetics400}]\n"))
    with pytest.raises(UserError, match=r"sources\[0\].train.linear: unknown key 'lrr'"):
        load_sources(_write(tmp_path / "typo2.yaml", "sources: [{name: a, backbone: x3d_xs, weights: kinetics400, "
                                                     "train: {linear: {lrr: 1}}}]\n"))
    with pytest.raises(UserError, match="did you mean 'weights'"):
        load_sources(_write(tmp_path / "typo3.yaml", "sources: [{name: a, backbone: x3d_xs, weight: k}]\n"))
    with pytest.raises(UserError, match="share backbone x3d_xs but would train different scratch baselines"):
        plan(load_sources(_write(tmp_path / "clash.yaml", """
sources:
  - {name: a, backbone: x3d_xs, weights: kinetics400, train: {input_size: 32}}
  - {name: b, backbone: x3d_xs, weights: kinetics400, train: {input_size: 64}}
""")), ("linear",), (1.0,), 1)
    with pytest.raises(UserError, match="partial needs --freeze-to"):
        plan(load_sources(_write(tmp_path / "nofreeze.yaml", "sources: [{name: a, backbone: x3d_xs, "
                                                             "weights: kinetics400}]\n")), ("partial",), (1.0,), 1)
    with pytest.raises(UserError, match="give either `weights`"):
        load_sources(_write(tmp_path / "both.yaml", "sources: [{name: a, backbone: x3d_xs, weights: kinetics400, "
                                                    "dataset: ws}]\n"))
    with pytest.raises(UserError, match=r"sources\[0\].pretrain: unknown key 'epoch'"):
        load_sources(_write(tmp_path / "pre.yaml", "sources: [{name: a, backbone: x3d_xs, dataset: ws, "
                                                   "pretrain: {epoch: 3}}]\n"))
    with pytest.raises(UserError, match="`from` goes with `dataset`"):
        load_sources(_write(tmp_path / "from.yaml", "sources: [{name: a, backbone: x3d_xs, weights: kinetics400, "
                                                    "from: kinetics400}]\n"))
    cont = load_sources(_write(tmp_path / "cont.yaml", "sources: [{name: a, backbone: x3d_xs, dataset: ws, "
                                                       "from: kinetics400, pretrain: {epochs: 2}}]\n")).sources[0]
    assert (cont.dataset, cont.pretrain_config().strategy) == (tmp_path / "ws", "finetune")
    assert cont.pretrain_config().weights == "kinetics400"
    with pytest.raises(UserError, match="used twice"):
        load_sources(_write(tmp_path / "dup.yaml", "sources: [{name: a, backbone: x3d_xs, weights: kinetics400}, "
                                                   "{name: a, backbone: x3d_xs, weights: kinetics400}]\n"))


def test_example_sources_file_plans() -> None:
    from pipeline.benchmark.grid import plan
    from pipeline.benchmark.sources import load_sources

    sf = load_sources(REPO / "configs" / "sources.yaml")
    assert [s.backbone for s in sf.sources] == ["efficientnet_lite0", "x3d_xs", "x3d_xs", "r3d_18"]
    gym = sf.sources[2]
    assert gym.dataset == (REPO / "runs" / "gym").resolve() and gym.pretrain_config().epochs == 30  # ../ of configs/
    assert gym.pretrain_config().strategy == "scratch"
    cells = plan(sf, sf.strategies, sf.fractions, sf.seeds, sf.lr_factors)
    assert {c.strategy for c in cells} == {"linear", "partial", "finetune", "scratch"}
    assert {c.lr_factor for c in cells} == {0.333, 1.0, 3.0}
    assert len(cells) == (4 * 3 + 3) * 4 * 3 * 3  # (sources × strategies + backbones) × fractions × seeds × rates


def test_cli_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pipeline.cli import main

    f = _write(tmp_path / "s.yaml", "sources: [{name: a, backbone: x3d_xs, weights: kinetics400}]\n")
    for args, message in ((["--strategies", "scratch"], "scratch is always run as the baseline"),
                          (["--strategies", "linear,linaer"], "unknown strategy 'linaer'"),
                          (["--fractions", "0,1"], "fractions must be in (0, 1]"),
                          (["--seeds", "0"], "must be at least 1")):
        with pytest.raises(SystemExit) as e:
            main(["benchmark", str(tmp_path / "ws"), "--sources", str(f), *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and message in err, (args, err)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    """A sampled 3-class target (24 clips per class: 12 train / 6 val / 6 test; each class one
    colour and shape, so that scratch learns it in seconds) and a resnet18 pretrained on a
    label-shuffled source (3 epochs at a learning rate far too high: features worth nothing);
    torch on one thread (deterministic, and far faster than two threads on a loaded 2-core
    machine)."""
    import torch

    from pipeline.data.sampling import SamplingConfig
    from pipeline.data.synthetic import TARGET_CLASSES, make_source_dataset, make_target_dataset
    from pipeline.engine.config import TrainConfig
    from pipeline.stages.prepare import PrepareConfig, run_prepare
    from pipeline.stages.sample import SampleConfig, run_sample
    from pipeline.stages.train import run_train
    from pipeline.workspace import Workspace

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bench")
    make_source_dataset(root / "data" / "source", 4, size=32, frames=8, seed=0, shuffle_labels=True)
    make_target_dataset(root / "data" / "target", 24, size=32, frames=8, classes=TARGET_CLASSES[:3],
                        shape_consistency=1.0)
    workspaces = {}
    for name, val, test in (("source", 0.15, 0.0), ("target", 0.25, 0.25)):
        ws = Workspace(root / name)
        run_prepare(ws, PrepareConfig(format="folder", root=root / "data" / name, val_fraction=val,
                                      test_fraction=test, workers=0))
        run_sample(ws, SamplingConfig(frames=2, short_side=32), SampleConfig(workers=0))
        workspaces[name] = ws
    pre = run_train(workspaces["source"], TrainConfig(backbone="resnet18", strategy="scratch", epochs=3, lr=0.1,
                                                      batch_size=8, input_size=32, augment="none",
                                                      name="pretrain"))
    ckpt = Path(pre["run_dir"]) / "best.pt"
    sources = _write(root / "sources.yaml", f"""
train:
  input_size: 32
  augment: none
  scratch: {{epochs: 6, lr: 0.003, batch_size: 12}}
  linear: {{epochs: 15, lr: 0.01}}
sources:
  - name: shuffled
    backbone: resnet18
    weights: {ckpt}
""")
    yield {"ws": workspaces["target"].root, "sources": sources, "ckpt": ckpt}
    torch.set_num_threads(threads)


def _results(ws: Path) -> list[dict[str, str]]:
    with open(ws / "benchmark" / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _invoke(*args: object):
    from click.testing import CliRunner

    from pipeline.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_grid_flags_negative_transfer_and_resumes(bench) -> None:
    ws, sources = bench["ws"], bench["sources"]
    result = _invoke("benchmark", ws, "--sources", sources, "--strategies", "linear", "--fractions", "1.0",
                     "--seeds", "2", "--no-select-lr")
    out = ws / "benchmark"
    rows = _results(ws)
    assert list(rows[0]) == ["source", "backbone", "weights", "strategy", "fraction", "seed", "lr", "val_top1",
                             "top1", "mean_class_accuracy", "train_seconds", "transfer_gain", "examples_per_class",
                             "run", "status", "error"]
    assert {(r["status"], r["error"]) for r in rows} == {("ok", "")}
    assert sorted((r["source"], r["strategy"], r["seed"]) for r in rows) == [
        ("scratch", "scratch", "0"), ("scratch", "scratch", "1"), ("shuffled", "linear", "0"),
        ("shuffled", "linear", "1")]
    by = {(r["strategy"], r["seed"]): r for r in rows}
    for r in rows:
        assert 0.0 <= float(r["top1"]) <= 1.0 and 0.0 <= float(r["mean_class_accuracy"]) <= 1.0
        assert float(r["train_seconds"]) > 0 and r["fraction"] == "1" and r["examples_per_class"] == "12.0"
        scratch = by[("scratch", r["seed"])]
        assert float(r["transfer_gain"]) == pytest.approx(float(r["top1"]) - float(scratch["top1"]), abs=1e-5)
    assert {r["weights"] for r in rows} == {"none", str(bench["ckpt"])}

    # Scratch learns (18 test videos, 3 classes: chance 0.33, measured 0.89 and 1.0 over the two seeds) and
    # clearly beats a linear probe on features learnt from shuffled labels.
    linear = [float(by[("linear", s)]["top1"]) for s in "01"]
    scratch = [float(by[("scratch", s)]["top1"]) for s in "01"]
    assert min(scratch) >= 0.6, scratch
    assert sum(scratch) / 2 - sum(linear) / 2 >= 0.25, (linear, scratch)
    report = (out / "report.md").read_text()
    assert NEGATIVE in report
    assert "| shuffled | resnet18 | linear | 1 |" in report
    assert "warning: negative transfer: shuffled / linear at fraction 1:" in result.stderr
    assert result.stdout.startswith("No source is worth it: none beats the best model trained from scratch "
                                    "(resnet18 trained from scratch")
    assert "2. shuffled: linear top-1" in result.stdout and "1. scratch: scratch top-1" in result.stdout

    # Transferability before training: LogME, and LEEP from the checkpoint's own head.
    with open(out / "transferability.csv", newline="") as f:
        (score,) = list(csv.DictReader(f))
    assert score["source"] == "shuffled" and score["num_videos"] == "36"  # ranking two sources: the test below
    assert math.isfinite(float(score["logme"])) and -math.log(3) - 0.2 < float(score["leep"]) <= 0
    for png in ("learning_curve.png", "best_strategy.png", "accuracy_vs_cost.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Interrupted: one cell lost its evaluation, the report is gone. The re-run evaluates that
    # cell only (no training: its run is finished) and leaves every other file alone.
    victim = "bench-shuffled-linear-f1-s1"
    others = [ws / "eval" / r["run"] / "metrics.json" for r in rows if r["run"] != victim]
    trained = [ws / "train" / r["run"] / "best.pt" for r in rows]
    before = {p: p.stat().st_mtime_ns for p in others + trained}
    (ws / "eval" / victim / "metrics.json").unlink()
    (out / "report.md").unlink()
    result = _invoke("benchmark", ws, "--sources", sources, "--strategies", "linear", "--fractions", "1.0",
                     "--seeds", "2", "--no-select-lr")
    assert "3 cell(s) done before, 1 to run" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert (ws / "eval" / victim / "metrics.json").is_file() and (out / "report.md").is_file()
    assert [r["top1"] for r in _results(ws)] == [r["top1"] for r in rows]  # the same numbers again

    # A finished cell counts only for the settings it was trained with: change one and it is stale.
    from pipeline.benchmark.grid import plan, stale
    from pipeline.benchmark.sources import load_sources
    from pipeline.workspace import Workspace

    cells = plan(load_sources(sources), ("linear",), (1.0,), 2)
    assert [stale(Workspace(ws), c.train_config()) for c in cells] == [[]] * 4
    cells[0].options = {**cells[0].options, "lr": 0.5}
    assert stale(Workspace(ws), cells[0].train_config()) == ["lr"]


@pytest.mark.slow
def test_parallel_cells_run_in_subprocesses_and_extend_the_grid(bench) -> None:
    """--max-parallel 2: the cells of a new fraction run in two child processes at once, under
    the parent's workspace lock; cells already done (by the test above, when it ran) are not
    touched, and the report covers both fractions."""
    ws, sources = bench["ws"], bench["sources"]
    # The fraction-1 cells first (already done, and then a no-op, when the test above ran).
    _invoke("benchmark", ws, "--sources", sources, "--strategies", "linear", "--fractions", "1", "--seeds", "1",
            "--no-select-lr")
    done = sorted((ws / "eval").glob("bench-*-f1-s0/metrics.json"))
    assert len(done) == 2
    before = {p: p.stat().st_mtime_ns for p in done}
    result = _invoke("benchmark", ws, "--sources", sources, "--strategies", "linear", "--fractions", "0.5,1",
                     "--seeds", "1", "--max-parallel", "2", "--no-select-lr")
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert "started train bench-shuffled-linear-f0.5-s0 (pid" in result.stderr
    logs = {p.name for p in (ws / "benchmark" / "logs").glob("*.log")}
    assert {"bench-shuffled-linear-f0.5-s0.log", "bench-resnet18-scratch-f0.5-s0.log"} <= logs
    rows = _results(ws)
    assert sorted((r["strategy"], r["fraction"], r["examples_per_class"]) for r in rows) == [
        ("linear", "0.5", "6.0"), ("linear", "1", "12.0"), ("scratch", "0.5", "6.0"), ("scratch", "1", "12.0")]
    metrics = json.loads((ws / "eval" / "bench-resnet18-scratch-f0.5-s0" / "metrics.json").read_text())
    assert 0.0 <= metrics["video_top1"] <= 1.0
    report = (ws / "benchmark" / "report.md").read_text()
    assert "| shuffled | resnet18 | linear | 0.5 | 6.0 |" in report


@pytest.mark.slow
def test_transferability_ranks_a_related_source_above_a_shuffled_one(bench, tmp_path: Path) -> None:
    """Two sources, one clearly better: a network trained on the target's own task (on a copy of the
    workspace) against the one pretrained on shuffled labels. LogME must rank it first, LEEP agree."""
    import shutil

    from pipeline.benchmark.scores import compute_transferability
    from pipeline.benchmark.sources import load_sources
    from pipeline.engine.config import TrainConfig
    from pipeline.stages.train import run_train
    from pipeline.workspace import Workspace

    copy = Workspace(shutil.copytree(bench["ws"], tmp_path / "ws",
                                     ignore=shutil.ignore_patterns("train", "eval", "benchmark", "features")))
    related = run_train(copy, TrainConfig(backbone="resnet18", strategy="scratch", epochs=4, lr=0.003, batch_size=8,
                                          input_size=32, augment="none", name="related"))
    f = _write(tmp_path / "s.yaml", f"""
train: {{input_size: 32, augment: none}}
sources:
  - {{name: shuffled, backbone: resnet18, weights: {bench["ckpt"]}}}
  - {{name: related, backbone: resnet18, weights: {Path(related["run_dir"]) / "best.pt"}}}
""")
    scores = {r["source"]: r for r in compute_transferability(Workspace(bench["ws"]), load_sources(f))}
    assert (scores["related"]["predicted_rank"], scores["shuffled"]["predicted_rank"]) == (1, 2), scores
    assert scores["related"]["logme"] > scores["shuffled"]["logme"]
    assert scores["related"]["leep"] > scores["shuffled"]["leep"]


@pytest.mark.slow
def test_registry_tag_source_has_logme_but_no_leep(bench, tmp_path: Path) -> None:
    from pipeline.benchmark.scores import compute_transferability
    from pipeline.benchmark.sources import load_sources
    from pipeline.workspace import Workspace

    f = _write(tmp_path / "s.yaml", "train: {input_size: 32, batch_size: 16}\n"
                                    "sources: [{name: effnet, backbone: efficientnet_lite0, weights: imagenet1k}]\n")
    (score,) = compute_transferability(Workspace(bench["ws"]), load_sources(f))
    assert score["leep"] is None and math.isfinite(score["logme"]) and score["feature_dim"] == 1280
    assert (bench["ws"] / "features" / score["feature_key"] / "train.ids.json").is_file()


def test_missing_weights_fail_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.benchmark.config import BenchmarkConfig
    from pipeline.models.registry import get_spec
    from pipeline.models.weights import local_path
    from pipeline.stages.benchmark import run_benchmark
    from pipeline.workspace import Workspace

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty hub cache, whatever this machine has
    assert local_path(get_spec("r3d_18").weights["kinetics400"]) is None
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    (ws.root / "manifest.csv").write_text("id,path,label,split\n")
    (ws.root / "classes.txt").write_text("a\n")
    ws.write_info(media="video")
    f = _write(tmp_path / "s.yaml", "sources: [{name: k400, backbone: r3d_18, weights: kinetics400}]\n")
    with pytest.raises(UserError, match=r"source 'k400': weights r3d_18:kinetics400 .*vtl weights fetch"):
        run_benchmark(ws, BenchmarkConfig(sources=f))
    assert not (ws.root / "benchmark").exists()
