"""Footprint, latency and peak-memory measurement on real files, objects and allocations."""

from __future__ import annotations

import os
import resource
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from vad_inspection.eval.resources import (
    LatencyStats,
    PeakMemory,
    array_footprint,
    file_footprint,
    measure_latency,
)

MIB = 2**20


def _current_rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


needs_proc = pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")


# ------------------------------------------------------------------------------------------
# Footprint
# ------------------------------------------------------------------------------------------


def test_file_footprint_of_a_file(tmp_path: Path) -> None:
    weights = tmp_path / "model.npz"
    weights.write_bytes(b"\x01" * 1234)
    assert file_footprint(weights) == 1234
    assert file_footprint(str(weights)) == 1234


def test_file_footprint_of_a_directory_counts_each_file_once(tmp_path: Path) -> None:
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub" / "b.bin").write_bytes(b"x" * 200)
    (tmp_path / "sub" / "deeper" / "c.bin").write_bytes(b"x" * 3000)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "link_to_c").symlink_to(tmp_path / "sub" / "deeper" / "c.bin")  # same file
    os.link(tmp_path / "sub" / "b.bin", tmp_path / "hard_b")  # same inode
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)  # not followed
    assert file_footprint(tmp_path) == 10 + 200 + 3000


def test_file_footprint_of_a_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no file or directory"):
        file_footprint(tmp_path / "nope")


@dataclass(frozen=True)
class _Bank:
    features: np.ndarray
    extra: dict


class _Slotted:
    __slots__ = ("codebook",)

    def __init__(self, codebook: np.ndarray) -> None:
        self.codebook = codebook


class _Model:
    def __init__(self) -> None:
        self.shared = np.zeros(1000, dtype=np.float64)  # 8000 B
        small = np.ones((10, 10), dtype=np.float32)  # 400 B
        self.bank = _Bank(features=self.shared, extra={"small": small, "view": self.shared[:10]})
        self.layers = [self.shared, (small, _Slotted(np.arange(5, dtype=np.int64)))]  # 40 B
        self.parent = self  # a cycle
        self.layers.append(self.layers)  # another cycle
        self.boxed = np.empty(2, dtype=object)  # 2 pointers, plus what they point to
        self.boxed[0] = np.zeros(2, dtype=np.float64)  # 16 B
        self.boxed[1] = small
        self.name = "model"
        self.scale = 1.5


def test_array_footprint_counts_each_buffer_once() -> None:
    model = _Model()
    # shared + small + arange + boxed pointer array + its float array; the view of `shared`,
    # the second references to `shared` and `small` and both cycles add nothing.
    expected = 8000 + 400 + 40 + model.boxed.nbytes + 16
    assert array_footprint(model) == expected
    assert array_footprint({"a": [model, model.bank]}) == expected


def test_array_footprint_of_plain_values() -> None:
    assert array_footprint(np.zeros(3)) == 24
    assert array_footprint(np.zeros((100, 100))[::10, ::10]) == 80000  # the whole owner
    assert array_footprint(42) == 0
    assert array_footprint({"name": "x", "ids": [1, 2, 3]}) == 0


# ------------------------------------------------------------------------------------------
# Latency
# ------------------------------------------------------------------------------------------


def test_measure_latency_of_a_2ms_sleep() -> None:
    calls: list[int] = []

    def fn(x: int) -> None:
        calls.append(x)
        time.sleep(0.002)

    stats = measure_latency(fn, range(10), warmup=3)
    assert isinstance(stats, LatencyStats)
    assert stats.n == 10
    assert calls == [0, 1, 2, *range(10)]  # warm-up on the first inputs, then each once
    assert 1.5 <= stats.median_ms <= 50.0
    assert stats.median_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.mean_ms >= 1.5


def test_measure_latency_warmup_cycles_and_rejects_no_input() -> None:
    calls: list[str] = []
    measure_latency(calls.append, ["only"], warmup=2)
    assert calls == ["only", "only", "only"]
    with pytest.raises(ValueError, match="at least one input"):
        measure_latency(calls.append, [])


# ------------------------------------------------------------------------------------------
# Peak memory
# ------------------------------------------------------------------------------------------


def _allocate_and_free(mib: int, hold_s: float = 0.05) -> None:
    block = np.ones(mib * MIB // 8)  # np.ones writes every page, so all of it is resident
    time.sleep(hold_s)
    del block


@needs_proc
def test_peak_memory_sees_a_200mb_allocation_freed_inside_the_block() -> None:
    with PeakMemory() as memory:
        _allocate_and_free(200)
    assert memory.source == "proc"
    assert memory.delta_rss_mb >= 150
    assert memory.peak_rss_mb >= memory.delta_rss_mb
    assert memory.peak_rss_mb > _current_rss_mb() + 150  # the peak, not the RSS at exit
    assert 199 <= memory.peak_traced_mb < 260


@needs_proc
def test_peak_memory_sampler_sees_a_spike_below_the_lifetime_peak() -> None:
    # Raise the process's lifetime high-water mark first, so getrusage cannot report the
    # spike below and only the /proc sampling thread can.
    _allocate_and_free(320, hold_s=0)
    with PeakMemory(trace=False) as memory:
        _allocate_and_free(200)
    assert memory.delta_rss_mb >= 150
    assert memory.peak_traced_mb == 0.0


@needs_proc
def test_peak_memory_high_water_mark_catches_a_spike_between_samples() -> None:
    # A sampling interval far longer than the block: only the kernel's high-water mark
    # (getrusage) can see the spike, and it does because the spike sets a new lifetime peak.
    lifetime_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    spike = int(lifetime_peak_mb - _current_rss_mb()) + 200
    with PeakMemory(interval_s=30.0, trace=False) as memory:
        _allocate_and_free(spike, hold_s=0)
    assert memory.delta_rss_mb >= spike - 50
    assert memory.peak_rss_mb >= lifetime_peak_mb + 150


def test_peak_memory_without_proc_falls_back_to_getrusage(tmp_path: Path) -> None:
    with PeakMemory(statm_path=tmp_path / "no_statm") as memory:
        _allocate_and_free(10, hold_s=0)
    assert memory.source == "getrusage"
    assert memory.delta_rss_mb >= 0
    if Path("/proc/self/statm").exists():  # lifetime peak >= what is resident now
        assert memory.peak_rss_mb >= _current_rss_mb() - 1
    assert memory.peak_traced_mb >= 9.9


def test_peak_memory_results_only_after_the_block_and_tracing_restored() -> None:
    memory = PeakMemory()
    with pytest.raises(RuntimeError, match="once the with block has ended"):
        _ = memory.peak_rss_mb
    assert not tracemalloc.is_tracing()
    with memory:
        assert tracemalloc.is_tracing()
    assert not tracemalloc.is_tracing()  # we started it, we stopped it
    tracemalloc.start()
    try:
        with PeakMemory():
            pass
        assert tracemalloc.is_tracing()  # someone else's tracing is left running
    finally:
        tracemalloc.stop()
    assert memory.peak_rss_mb > 0
