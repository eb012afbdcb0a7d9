"""``scripts/gpu_check.sh --dry-run``: the GPU day's script runs end to end on CPU (tiny sizes,
gloo) and prints every section's figure, so it is known to work before a GPU shows up."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # ~40-60 s on 2 cores: six steps, each a fresh interpreter, one under torchrun

NUMBER = r"[\d.]+"


def test_dry_run_runs_every_step_and_prints_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                          text=True, env=env, timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]

    # Each section's figure line, with numbers in it.
    assert re.search(rf"amp: bf16 / fp32 = {NUMBER}× \({NUMBER} vs {NUMBER} clips/s\)", text)
    assert re.search(rf"ddp: torchrun --nproc_per_node 1, backend gloo, finished in \d+ s, {NUMBER} clips/s", text)
    assert re.search(rf"extract: {NUMBER} clips/s bf16, {NUMBER} fp32 .*uint8 / float32 = {NUMBER}×", text)
    assert re.search(r"extract: uint8 normalised on cpu vs on the host: max \|difference\| 0\n", text)
    assert re.search(rf"loader: best float32 {NUMBER} clips/s, uint8 {NUMBER} clips/s; training consumes "
                     rf"{NUMBER} clips/s", text)
    assert re.search(rf"loader: training fed by 0 workers: float32 {NUMBER} clips/s \(\d+% of the {NUMBER} clips/s "
                     rf"on resident clips\), uint8 {NUMBER} clips/s \(\d+%\)", text)
    # The DDP run really joined a process group (one process under torchrun is DDP, not plain).
    assert "distributed: 1 process(es), backend gloo" in text

    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "dry"
    assert summary["status"] == dict.fromkeys(("env", "data", "amp", "ddp", "extract", "loader"), "ok")
    r = summary["results"]
    assert all(v > 0 for v in r["amp"]["clips_per_s"].values())
    assert r["ddp"]["finished"] and r["ddp"]["world_size"] == 1 and r["ddp"]["epochs"] == 1
    assert r["ddp"]["clips_per_s"] > 0
    assert all(v > 0 for v in (*r["extract"]["compute_clips_per_s"].values(),
                               *r["extract"]["through_loader_clips_per_s"].values()))
    assert [row["workers"] for row in r["loader"]["rows"]] == [0, 1]
    assert all(row["float32"] > 0 and row["uint8"] > 0 for row in r["loader"]["rows"])
    assert r["loader"]["measured_train_clips_per_s"] == max(r["amp"]["clips_per_s"].values())
    assert r["loader"]["fed"]["resident_clips_per_s"] == r["amp"]["clips_per_s"]["fp32"]  # CPU: no autocast
    assert all(v > 0 for v in r["loader"]["fed"]["clips_per_s"].values())
    assert r["extract"]["device_normalize_max_abs_diff"] == 0
    md = (out / "summary.md").read_text()
    for section in summary["status"]:
        assert re.search(rf"^\| {section} \| ok \| .*\d", md, re.M), md
    assert (out / "gpu_check.log").read_text().count("== ") >= 7  # six steps and the summary, logged
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.log", "summary.json", "summary.md"]
    assert not list(tmp_path.glob("gpu_check.*"))  # the scratch folder is removed
