"""Full-state checkpoints, written atomically and read with ``weights_only=True``.

A checkpoint holds everything needed to resume or to reuse a model: model,
optimizer, scheduler, epoch, RNG states, the run's config, the class list, and
the backbone name and weights it started from.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import __version__
from pipeline.errors import UserError
from pipeline.files import replaced_on_success
from pipeline.models.weights import CHECKPOINT_KIND, is_checkpoint, load_file


def save(path: Path, state: dict[str, Any]) -> None:
    state = {"kind": CHECKPOINT_KIND, "vtl_version": __version__, **state}
    with replaced_on_success(path) as tmp:
        torch.save(state, tmp)


def load(path: Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise UserError(f"checkpoint {path} does not exist")
    obj = load_file(Path(path))
    if not is_checkpoint(obj):
        raise UserError(f"{path} is not a vtl checkpoint (written by `vtl train`)")
    return obj


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
