"""Shared fixtures: where the real imagery lives (a clean skip when it is absent), a fresh DDS
domain with buses on it for the tests that cross processes, headless Chromium for the report
pages, and one thread for torch and ONNX Runtime."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
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


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """``VAD_INSPECTION_THREADS=1`` for a module's tests (its ``pytestmark`` uses the fixture):
    torch and ONNX Runtime on one thread. With tiny images and cores shared with other work, two
    threads made training some 25 times slower
    (:func:`~vad_inspection.vad.torch_training.threads`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VAD_INSPECTION_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's headless Chromium (``make browser`` installs it; it is not on PyPI)."""
    found = shutil.which("chromium")
    if not found and os.access("/usr/bin/chromium", os.X_OK):
        found = "/usr/bin/chromium"
    if not found:
        pytest.skip("chromium not found (on PATH or /usr/bin/chromium); `make browser` as root "
                    "installs Debian's package")  # fmt: skip
    return found


def run_chromium(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{time.monotonic_ns()}"
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done
