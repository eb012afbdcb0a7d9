"""Sharded ``prepare`` and ``sample`` (``--shard I/N``, ``RANK``/``WORLD_SIZE``) and their ``--merge``.

The contract: shards then a merge give byte-for-byte the files of one unsharded run; a merge
with a shard missing stops with one ``error:`` line naming it; shards of one workspace run side
by side (real concurrent processes) without locking each other out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import invoke_vtl, run_vtl, vtl_main

from pipeline.errors import UserError
from pipeline.sharding import Shard, parse_shard, shard_from, shard_of
from pipeline.workspace import Workspace

OUTPUTS = ("manifest.csv", "classes.txt", "quarantine.csv", "workspace.json")
SAMPLE = ("--frames", "4", "--short-side", "32", "--clips-per-video", "2")


def files(folder: Path, pattern: str = "*") -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob(pattern)) if p.is_file()}


def shard_files(ws: Path) -> list[str]:
    return sorted(p.name for p in ws.rglob("*shard-*") if not p.name.startswith(".lock"))


# ----------------------------------------------------------------------------- choosing a shard


@pytest.mark.parametrize(("spec", "expected"), [("0/2", Shard(0, 2)), ("3/4", Shard(3, 4)), (" 1 / 3 ", Shard(1, 3)),
                                                ("0/1", None)])
def test_parse_shard(spec: str, expected: Shard | None) -> None:
    assert parse_shard(spec) == expected


@pytest.mark.parametrize("spec", ["2/2", "-1/2", "1", "a/b", "1/0", "0/-2", ""])
def test_parse_shard_rejects(spec: str) -> None:
    with pytest.raises(UserError, match="--shard"):
        parse_shard(spec)


def test_shard_from_env() -> None:
    assert shard_from(None, {}) is None
    assert shard_from(None, {"RANK": "1", "WORLD_SIZE": "4"}) == Shard(1, 4)
    assert shard_from(None, {"RANK": "0", "WORLD_SIZE": "1"}) is None  # one process: everything
    assert shard_from("2/3", {"RANK": "1", "WORLD_SIZE": "4"}) == Shard(2, 3)  # --shard wins
    for env in ({"RANK": "1"}, {"WORLD_SIZE": "2"}, {"RANK": "x", "WORLD_SIZE": "2"}, {"RANK": "2", "WORLD_SIZE": "2"}):
        with pytest.raises(UserError, match="RANK"):
            shard_from(None, env)


def test_every_file_has_exactly_one_shard_whatever_the_order() -> None:
    keys = [f"class_{c}/clip_{i:03d}.mp4" for c in range(5) for i in range(200)]
    shards = [Shard(i, 4) for i in range(4)]
    owners = {k: [s.index for s in shards if s.owns(k)] for k in keys}
    assert all(len(o) == 1 for o in owners.values())
    assert {k: shard_of(k, 4) for k in reversed(keys)} == {k: o[0] for k, o in owners.items()}
    sizes = [sum(o == [i] for o in owners.values()) for i in range(4)]
    assert min(sizes) > 200  # a hash spreads 1000 files roughly evenly (250 each)


@pytest.mark.parametrize("args", [("--shard", "2/2"), ("--shard", "one/two"), ("--shard", "0/2", "--merge")])
def test_bad_shard_is_one_error_line(args: tuple[str, ...], tiny_dataset: Path, tmp_path: Path,
                                     capfd: pytest.CaptureFixture) -> None:
    code = vtl_main("prepare", tmp_path / "ws", "--root", tiny_dataset, "--workers", "0", *args)
    err = capfd.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert not (tmp_path / "ws" / "manifest.csv").exists()


# ----------------------------------------------------------------------------- prepare


@pytest.fixture
def messy_dataset(tiny_dataset: Path, tmp_path: Path) -> Path:
    """The tiny dataset plus two files prepare must quarantine."""
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    first = sorted(p for p in root.iterdir() if p.is_dir())[0]
    (first / "empty.mp4").write_bytes(b"")
    (first / "broken.mp4").write_bytes(os.urandom(4096))
    return root


def prepare(ws: Path, root: Path, *args: object) -> None:
    invoke_vtl("-q", "prepare", ws, "--root", root, "--seed", "3", "--val-fraction", "0.2", "--workers", "0", *args)


def test_sharded_prepare_then_merge_equals_unsharded(messy_dataset: Path, tmp_path: Path) -> None:
    prepare(tmp_path / "whole", messy_dataset)
    merged = tmp_path / "merged"
    for i in range(3):
        prepare(merged, messy_dataset, "--shard", f"{i}/3")
    assert not (merged / "manifest.csv").exists()  # shards write only their own files
    assert len(shard_files(merged)) == 9  # manifest, quarantine, probe cache per shard
    prepare(merged, messy_dataset, "--merge")

    assert files(merged, "*.*").keys() >= set(OUTPUTS)
    for name in OUTPUTS:
        assert (merged / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert "empty file" in (merged / "quarantine.csv").read_text()
    assert shard_files(merged) == []  # consumed by the merge
    # the shards' probes now live in the workspace's cache: a plain re-run probes nothing
    result = invoke_vtl("prepare", merged, "--root", messy_dataset, "--seed", "3", "--val-fraction", "0.2",
                        "--workers", "0")
    assert "0 to probe" in result.stderr
    assert (merged / "manifest.csv").read_bytes() == (tmp_path / "whole" / "manifest.csv").read_bytes()


def test_prepare_shard_from_rank_and_world_size(tiny_dataset: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    prepare(tmp_path / "ws", tiny_dataset)
    assert shard_files(tmp_path / "ws") == [".probe_cache.shard-1-of-2.jsonl", "manifest.shard-1-of-2.csv",
                                           "quarantine.shard-1-of-2.csv"]
    # a merge is never sharded, even where RANK/WORLD_SIZE are set: it says which shard is missing
    code = vtl_main("prepare", tmp_path / "ws", "--root", tiny_dataset, "--workers", "0", "--merge")
    assert code == 2


def test_merge_names_the_missing_shard(tiny_dataset: Path, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    ws = tmp_path / "ws"
    args = ("prepare", ws, "--root", tiny_dataset, "--workers", "0", "--merge")
    assert vtl_main(*args) == 2
    assert "no shard results to merge" in capfd.readouterr().err

    prepare(ws, tiny_dataset, "--shard", "0/3")
    prepare(ws, tiny_dataset, "--shard", "2/3")
    assert vtl_main(*args) == 2
    err = capfd.readouterr().err.strip().splitlines()[-1]  # after prepare's "layout: ..." line
    assert err.startswith("error: shard 1/3 is missing") and "quarantine.shard-1-of-3.csv" in err, err
    assert "--shard 1/3" in err and "\n" not in err

    prepare(ws, tiny_dataset, "--shard", "1/2")  # a stale run with another shard count
    assert vtl_main(*args) == 2
    assert "shard results of 2 and 3 shards are mixed" in capfd.readouterr().err
    assert not (ws / "manifest.csv").exists()


# ----------------------------------------------------------------------------- sample


@pytest.fixture(scope="module")
def prepared(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared workspace over a copy of the tiny dataset, one of whose videos then disappears
    (so sample has a failure to record)."""
    base = tmp_path_factory.mktemp("sharded_sample")
    root = base / "data"
    shutil.copytree(tiny_dataset, root)
    prepare(base / "prepared", root)
    sorted(root.rglob("*.mp4"))[4].unlink()
    return base / "prepared"


def copy_workspace(prepared: Path, dest: Path) -> Path:
    shutil.copytree(prepared, dest, ignore=shutil.ignore_patterns(".lock*"))
    return dest


def vtl_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "pipeline", *map(str, args)]


def test_concurrent_sample_shards_then_merge_equal_unsharded(prepared: Path, tmp_path: Path) -> None:
    whole = copy_workspace(prepared, tmp_path / "whole")
    invoke_vtl("-q", "sample", whole, *SAMPLE, "--workers", "1")

    sharded = copy_workspace(prepared, tmp_path / "sharded")
    procs = [subprocess.Popen(vtl_command("-q", "sample", sharded, *SAMPLE, "--workers", "1", "--shard", f"{i}/2"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "sampled shard" in out
    key = "uniform-t4-s2-ss32-v2-seed0"
    assert sorted(p.name for p in (sharded / "clips" / key).glob("quarantine.shard-*")) == [
        "quarantine.shard-0-of-2.csv", "quarantine.shard-1-of-2.csv"]
    assert (sharded / "quarantine.csv").read_bytes() == (prepared / "quarantine.csv").read_bytes()  # not yet

    result = invoke_vtl("sample", sharded, *SAMPLE, "--workers", "1", "--merge")
    assert "0 to sample" in result.stderr  # the merge decodes nothing, not even the shard's failure
    clips_whole, clips_sharded = files(whole / "clips" / key), files(sharded / "clips" / key)
    assert len([n for n in clips_whole if n.endswith(".npy")]) == 17  # 18 videos, one missing
    assert clips_sharded == clips_whole  # every .npy and params.json, byte for byte; no shard file left
    for name in ("quarantine.csv", "workspace.json", "manifest.csv"):
        assert (sharded / name).read_bytes() == (whole / name).read_bytes(), name
    assert "sample: file missing" in (sharded / "quarantine.csv").read_text()


def test_sample_merge_names_the_missing_shard(prepared: Path, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    ws = copy_workspace(prepared, tmp_path / "ws")
    invoke_vtl("-q", "sample", ws, *SAMPLE, "--workers", "0", "--shard", "1/2")
    assert vtl_main("sample", ws, *SAMPLE, "--merge") == 2
    err = capfd.readouterr().err.strip()
    assert err.startswith("error: shard 0/2 is missing") and "\n" not in err, err
    assert vtl_main("sample", ws, *SAMPLE, "--merge", "--force") == 2
    assert "--force" in capfd.readouterr().err


def test_shards_share_the_workspace_but_not_with_others(prepared: Path, tmp_path: Path) -> None:
    ws = copy_workspace(prepared, tmp_path / "ws")
    with Workspace(ws).lock("sample", Shard(0, 2)):
        other = run_vtl("-q", "sample", ws, *SAMPLE, "--workers", "0", "--shard", "1/2", timeout=300)
        assert other.returncode == 0, other.stderr  # shard 1 runs while shard 0 holds its lock

        same = run_vtl("sample", ws, *SAMPLE, "--shard", "0/2")
        assert same.returncode == 2
        assert same.stderr.strip().startswith(f"error: workspace {ws} is busy: `vtl sample --shard 0/2` "
                                              f"(pid {os.getpid()})"), same.stderr

        whole = run_vtl("sample", ws, *SAMPLE)  # an unsharded run (or a merge) waits for no one: it refuses
        assert whole.returncode == 2 and "is busy: `vtl sample --shard 0/2`" in whole.stderr, whole.stderr
    with Workspace(ws).lock("sample"):
        shard = run_vtl("sample", ws, *SAMPLE, "--shard", "0/2")
        assert shard.returncode == 2 and f"is busy: `vtl sample` (pid {os.getpid()})" in shard.stderr
