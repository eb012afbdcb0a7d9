"""Split ``prepare``'s and ``sample``'s file lists across machines.

Shard ``I/N`` (0-based) owns the files whose key hashes to ``I`` modulo ``N``.
A hash of a stable key (the path relative to the dataset root, or the video
id) rather than a position in a listing: every machine agrees on the split
whatever order its file system lists files in, and a file keeps its shard when
others are added.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_FILE = re.compile(r"\.shard-(\d+)-of-(\d+)\.")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UserError(f"--shard {self.index}/{self.count}: need 0 <= I < N (I is 0-based)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        """The part of a shard's file names that says which shard wrote them."""
        return f"shard-{self.index}-of-{self.count}"

    def owns(self, key: str) -> bool:
        return shard_of(key, self.count) == self.index


def shard_of(key: str, count: int) -> int:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def parse_shard(spec: str) -> Shard | None:
    """``"I/N"`` → a shard; ``N == 1`` means the whole list (``None``)."""
    m = _SPEC.match(spec)
    if not m:
        raise UserError(f"--shard must look like I/N with 0 <= I < N (e.g. 0/4), got {spec!r}")
    shard = Shard(int(m.group(1)), int(m.group(2)))
    return shard if shard.count > 1 else None


def shard_from(spec: str | None, env: Mapping[str, str] = os.environ) -> Shard | None:
    """The shard of this process: ``--shard`` if given, else torchrun-style ``RANK``/``WORLD_SIZE``.

    Only the two variables together shard a run: one without the other is an
    error rather than a silent choice, since guessing wrong skips files.
    """
    if spec is not None:
        return parse_shard(spec)
    rank, world = env.get("RANK", "").strip(), env.get("WORLD_SIZE", "").strip()
    if not rank and not world:
        return None
    if not (rank.isdigit() and world.isdigit()):
        raise UserError(f"RANK={rank!r} and WORLD_SIZE={world!r} must both be set to integers to shard "
                        "(or pass --shard I/N)")
    if int(world) < 1 or int(rank) >= int(world):
        raise UserError(f"RANK={rank} must be below WORLD_SIZE={world}")
    return parse_shard(f"{rank}/{world}")


def shards_on_disk(paths: Iterable[Path]) -> dict[int, set[int]]:
    """``{N: {I, ...}}`` from shard file names (``….shard-I-of-N.…``)."""
    found: dict[int, set[int]] = {}
    for p in paths:
        m = _FILE.search(p.name)
        if m:
            found.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    return found


def complete_shards(paths: Iterable[Path], marker: Callable[[Shard], Path], rerun: str) -> int:
    """The shard count ``N`` of a finished set of shard files, or a one-line error naming what is missing.

    ``paths`` are the files a shard writes last (its completion markers),
    ``marker`` gives that file for a shard (for messages) and ``rerun`` the
    command that makes one shard, with ``{shard}`` where ``I/N`` goes.
    """
    found = shards_on_disk(paths)
    if not found:
        raise UserError(f"no shard results to merge (no {marker(Shard(0, 2)).name.replace('0-of-2', 'I-of-N')}): "
                        f"run {rerun.format(shard='I/N')} for every shard first")
    if len(found) > 1:
        counts = " and ".join(str(n) for n in sorted(found))
        raise UserError(f"shard results of {counts} shards are mixed in {marker(Shard(0, 2)).parent}: "
                        "delete the stale ones")
    ((count, indices),) = found.items()
    missing = [i for i in range(count) if i not in indices]
    if missing:
        first = Shard(missing[0], count)
        more = f" (and {len(missing) - 1} other shards)" if len(missing) > 1 else ""
        raise UserError(f"shard {first} is missing{more}: no {marker(first)}; run {rerun.format(shard=first)} "
                        "and merge again")
    return count
