"""Node clocks: wall time, simulated time from ``/clock``, and a manual clock for tests.

As in ROS 2, a node's clock reads the system time unless ``use_sim_time`` is true; then it reads
the last ``rosgraph_msgs/Clock`` received on ``/clock`` (zero until the first one arrives, and
timers do not fire before that). Timers run on the node's clock, so a bag replayed at 10x fires a
1 Hz timer ten times per wall second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

NS = 1_000_000_000


class Clock:
    """Wall clock (``time.time_ns``); follows ``/clock`` after :meth:`enable_sim_time`."""

    def __init__(self, source: Callable[[], int] = time.time_ns) -> None:
        self._source = source
        self._sim = False
        self._sim_ns: int | None = None
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    @property
    def sim(self) -> bool:
        """True when the clock follows ``/clock``."""
        return self._sim

    @property
    def active(self) -> bool:
        """False while in simulated time no ``/clock`` has arrived yet (time reads 0)."""
        return not self._sim or self._sim_ns is not None

    @property
    def follows_wall_time(self) -> bool:
        """True when waiting for a due time can sleep on the wall clock."""
        return not self._sim

    def enable_sim_time(self, enabled: bool = True) -> None:
        self._sim = bool(enabled)
        self._notify()

    def now_ns(self) -> int:
        if self._sim:
            return self._sim_ns or 0
        return self._source()

    def now(self) -> float:
        """Seconds (float) since the epoch of the clock."""
        return self.now_ns() / NS

    def set_sim_time(self, ns: int) -> None:
        """A ``/clock`` message arrived (called by the bus)."""
        with self._lock:
            self._sim_ns = int(ns)
        self._notify()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs whenever the time source changes (used to wake spinning buses)."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _notify(self) -> None:
        for callback in list(self._listeners):
            callback()


class ManualClock(Clock):
    """A clock that only moves when told to: deterministic timers in tests.

    >>> clock = ManualClock(start_ns=0)
    >>> clock.advance(0.5)  # seconds
    >>> clock.now_ns()
    500000000
    """

    def __init__(self, start_ns: int = 0) -> None:
        super().__init__(source=self._read)
        self._manual_ns = int(start_ns)

    @property
    def follows_wall_time(self) -> bool:
        return False

    def _read(self) -> int:
        return self._manual_ns

    def set(self, ns: int) -> None:
        self._manual_ns = int(ns)
        self._notify()

    def advance(self, seconds: float = 0.0, *, ns: int = 0) -> None:
        self.set(self._manual_ns + round(seconds * NS) + int(ns))
