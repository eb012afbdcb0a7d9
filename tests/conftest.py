"""Shared fixtures. Tests that need ``../shared/data`` use the ``shared_data``
fixture and are skipped cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VTL_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "videos" / "INDEX.csv").is_file():
        pytest.skip(f"real media not found at {SHARED_DATA}")
    return SHARED_DATA
