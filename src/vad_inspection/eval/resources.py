"""What a model costs to ship and to run: bytes on disk, bytes in arrays, latency, peak memory.

An inspection robot carries the model on an embedded computer next to everything else, so a
results table reports these costs next to accuracy. The numbers are meant to be comparable between
models measured on the same machine, not absolute.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from types import (
    BuiltinFunctionType,
    FunctionType,
    MethodType,
    ModuleType,
    TracebackType,
)
from typing import TypeVar

import numpy as np

__all__ = [
    "LatencyStats",
    "PeakMemory",
    "ProcessCpu",
    "array_footprint",
    "file_footprint",
    "measure_latency",
]

_T = TypeVar("_T")
_MB = 1024.0 * 1024.0


# --------------------------------------------------------------------------------------------
# Footprint
# --------------------------------------------------------------------------------------------


def file_footprint(path: str | os.PathLike[str]) -> int:
    """Size in bytes of a saved model: a file, or every file under a directory.

    Counts apparent sizes (``st_size``, as ``du --apparent-size -b``), i.e. what copying or
    downloading the model costs, which unlike allocated blocks does not depend on the filesystem.
    Symbolic links to files are followed (model caches such as Hugging Face's store weights
    behind links) and each file is counted once even when linked several times; links to
    directories are not followed, so a link cycle cannot loop.
    """
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    if not root.is_dir():
        raise FileNotFoundError(f"no file or directory at {root}")
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                info = (Path(folder) / name).stat()  # follows a link to its target
            except FileNotFoundError:  # dangling link
                continue
            key = (info.st_dev, info.st_ino)
            if key not in seen:
                seen.add(key)
                total += info.st_size
    return total


_SCALARS = (str, bytes, bytearray, memoryview, int, float, complex, type(None), range, np.generic)
_NOT_ENTERED = (type, ModuleType, FunctionType, BuiltinFunctionType, MethodType, np.dtype)


def _memory_owner(array: np.ndarray) -> np.ndarray:
    """The array that owns the buffer a view looks into, so views are not counted twice."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _children(obj: object) -> Iterable[object]:
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, list | tuple | set | frozenset):
        return obj
    out: list[object] = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                out.append(getattr(obj, name))
    return out


def array_footprint(obj: object) -> int:
    """Bytes of numpy array memory reachable from ``obj``: a model's weights and memory banks.

    Walks instance attributes (``__dict__`` and ``__slots__``, so dataclasses too), dicts, lists,
    tuples and sets, and the elements of object arrays. Each buffer is counted once: a view
    counts as the whole array that owns its memory (a small slice keeps all of it alive), and an
    array reached twice or through a reference cycle is counted once. Classes, modules and
    functions are not entered, so class-level constants and closures are not counted.
    """
    visited: set[int] = set()
    owners: dict[int, int] = {}
    alive: list[object] = []  # keeps every visited object referenced, so ids stay unique
    stack: list[object] = [obj]
    while stack:
        item = stack.pop()
        if id(item) in visited:
            continue
        visited.add(id(item))
        alive.append(item)
        if isinstance(item, np.ndarray):
            owner = _memory_owner(item)
            alive.append(owner)
            owners[id(owner)] = owner.nbytes
            if item.dtype.hasobject:
                stack.extend(item.ravel().tolist())
        elif not isinstance(item, _SCALARS + _NOT_ENTERED):
            stack.extend(_children(item))
    return sum(owners.values())


# --------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Wall-clock time of single calls, in milliseconds, over ``n`` timed calls."""

    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    n: int


def measure_latency(
    fn: Callable[[_T], object], inputs: Iterable[_T], warmup: int = 2
) -> LatencyStats:
    """Time ``fn(x)`` once per input with ``time.perf_counter``, after ``warmup`` untimed calls.

    The warm-up calls (on the first inputs, cycling if there are few) absorb one-off costs
    (lazy initialisation, first-touch allocation, cold caches) that a robot pays once at start,
    not per frame. The median is the headline because latency is right-skewed (garbage
    collection, scheduling); p90 and p99 are what a real-time frame budget must accommodate.
    """
    items = list(inputs)
    if not items:
        raise ValueError("measure_latency needs at least one input")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0; got {warmup}")
    for i in range(warmup):
        fn(items[i % len(items)])
    elapsed = np.empty(len(items))
    for i, x in enumerate(items):
        start = time.perf_counter()
        fn(x)
        elapsed[i] = time.perf_counter() - start
    ms = elapsed * 1e3
    return LatencyStats(
        median_ms=float(np.median(ms)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        n=len(items),
    )


# --------------------------------------------------------------------------------------------
# Peak memory
# --------------------------------------------------------------------------------------------


def _max_rss_bytes() -> int:
    """The process's lifetime peak resident set size (``getrusage``; KiB on Linux, bytes on
    macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


class PeakMemory:
    """Peak memory of a ``with`` block: resident set size (RSS) and traced Python allocations.

    RSS is what the operating system charges the process, including native allocations that
    Python cannot see (OpenCV, BLAS, ONNX runtimes). With ``/proc`` (Linux), a background thread
    reads the current RSS from ``/proc/self/statm`` every ``interval_s`` seconds; the peak is the
    largest sample, or the kernel's exact high-water mark (``getrusage``) when that rose during
    the block, since then the process's all-time peak happened inside it. Spikes shorter than
    the sampling interval that stay below an earlier high-water mark can be missed.

    Without ``/proc`` (macOS, or ``statm_path`` not readable) only ``getrusage`` is available:
    ``peak_rss_mb`` is then the process's lifetime peak (an upper bound for the block) and
    ``delta_rss_mb`` how much that lifetime peak grew during the block (a lower bound);
    ``source`` says which method was used ("proc" or "getrusage").

    ``peak_traced_mb`` is the peak, above the level at entry, of memory allocated through
    Python's allocator and numpy (``tracemalloc``); it is exact but misses native libraries, and
    tracing slows allocation-heavy Python code, so pass ``trace=False`` when timing such code
    inside the block. If ``tracemalloc`` was already tracing, its peak is reset at entry and
    tracing is left running.
    """

    def __init__(
        self,
        interval_s: float = 0.002,
        *,
        trace: bool = True,
        statm_path: str | os.PathLike[str] = "/proc/self/statm",
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0; got {interval_s}")
        self.interval_s = interval_s
        self.trace = trace
        self.statm_path = Path(statm_path)
        self._fd: int | None = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled_peak = 0
        self._results: tuple[float, float, float] | None = None
        self._started_tracing = False
        self._traced_at_entry = 0
        self._max_rss_at_entry = 0
        self._rss_at_entry = 0
        self.source = ""

    # RSS sampling ---------------------------------------------------------------------------

    def _rss_bytes(self) -> int:
        assert self._fd is not None
        return int(os.pread(self._fd, 128, 0).split()[1]) * self._page

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sampled_peak = max(self._sampled_peak, self._rss_bytes())

    # context manager ------------------------------------------------------------------------

    def __enter__(self) -> PeakMemory:
        self._results = None
        self._stop.clear()
        try:
            self._fd = os.open(self.statm_path, os.O_RDONLY)
            self._rss_bytes()
            self.source = "proc"
        except (OSError, ValueError, IndexError):
            if self._fd is not None:
                os.close(self._fd)
            self._fd = None
            self.source = "getrusage"
        self._started_tracing = False
        self._traced_at_entry = 0
        if self.trace:
            if tracemalloc.is_tracing():
                tracemalloc.reset_peak()
            else:
                tracemalloc.start()
                self._started_tracing = True
            self._traced_at_entry = tracemalloc.get_traced_memory()[0]
        self._max_rss_at_entry = _max_rss_bytes()
        if self._fd is not None:
            self._rss_at_entry = self._rss_bytes()
            self._sampled_peak = self._rss_at_entry
            self._thread = threading.Thread(target=self._sample, name="PeakMemory", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        peak_traced = 0.0
        if self.trace:
            peak_traced = max(tracemalloc.get_traced_memory()[1] - self._traced_at_entry, 0)
            if self._started_tracing:
                tracemalloc.stop()
        max_rss = _max_rss_bytes()
        if self._fd is not None:
            assert self._thread is not None
            self._stop.set()
            self._thread.join()
            self._thread = None
            peak = max(self._sampled_peak, self._rss_bytes())
            os.close(self._fd)
            self._fd = None
            if max_rss > self._max_rss_at_entry:
                peak = max(peak, max_rss)
            delta = peak - self._rss_at_entry
        else:
            peak = max_rss
            delta = max_rss - self._max_rss_at_entry
        self._results = (peak / _MB, delta / _MB, peak_traced / _MB)

    # results --------------------------------------------------------------------------------

    def _result(self, index: int) -> float:
        if self._results is None:
            raise RuntimeError("PeakMemory results are available once the with block has ended")
        return self._results[index]

    @property
    def peak_rss_mb(self) -> float:
        """Peak resident set size during the block, MiB."""
        return self._result(0)

    @property
    def delta_rss_mb(self) -> float:
        """Peak RSS minus RSS at entry, MiB: what the block added on top of the process."""
        return self._result(1)

    @property
    def peak_traced_mb(self) -> float:
        """Peak of ``tracemalloc``-traced allocations above the level at entry, MiB."""
        return self._result(2)


class ProcessCpu:
    """User + system CPU seconds of a process (this one by default), so a run can report cores
    used (CPU seconds over wall seconds; 1.0 = one core busy). Another process is read from
    ``/proc/<pid>/stat`` (Linux)."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self._tick = os.sysconf("SC_CLK_TCK") if pid is not None else 0

    def seconds(self) -> float:
        if self.pid is None:
            times = os.times()
            return times.user + times.system
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._tick
