"""Shared fixtures: where the real imagery lives, and a clean skip when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    """Path of a real dataset in ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name!r} not found at {path} (a fresh clone has no ../shared)")
    return path


@pytest.fixture
def magnetic_tile_root() -> Path:
    return shared_dataset("magnetic_tile")


@pytest.fixture
def crackforest_root() -> Path:
    return shared_dataset("crackforest")


@pytest.fixture
def lroc_nac_root() -> Path:
    return shared_dataset("lroc_nac")
