"""Shared fixtures: where the real imagery lives (a clean skip when it is absent), and a fresh
DDS domain with buses on it for the tests that cross processes."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture
def domain(monkeypatch: pytest.MonkeyPatch) -> int:
    """A fresh domain on the loopback configuration, for this process and its children (skips
    where the cyclonedds package is missing or not the pinned version)."""
    pytest.importorskip("vad_inspection.transport._cyclone", exc_type=ImportError)
    from vad_inspection.transport.dds import loopback_config_path

    value = random.randint(1, 230)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(value))
    monkeypatch.setenv("CYCLONEDDS_URI", loopback_config_path().as_uri())
    return value


@pytest.fixture
def dds_buses(domain: int) -> Iterator[Callable[..., Any]]:
    """``make(name, **options)``: a dds bus on the test's domain, shut down after the test."""
    from vad_inspection.transport import create_bus

    made: list[Any] = []

    def make(name: str, **options: Any) -> Any:
        bus = create_bus("dds", name, **options)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.shutdown()
