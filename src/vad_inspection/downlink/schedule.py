"""When the downlink windows open and how many bytes each carries.

A rover's or an orbiter's contacts are planned on the ground and uplinked as a list (a start time
and a volume each); a ground robot on a metered link has a period instead. Both are written here
as one kind of thing, a :class:`Contact`, so the recorder has a single clock to watch.

An entry of a schedule is ``START=BYTES``:

- ``START``: ``+SECONDS`` after the recorder is activated, an ISO 8601 time with its zone
  (``2026-12-02T06:00:00Z``) or UNIX seconds (``1795000000``);
- ``BYTES``: a count with an optional decimal suffix (``500k``, ``2M``, ``1.5G``).

An absolute time already past when the schedule is read is refused with the entry named: a plan
that silently dropped its first contacts would sit on its data until the next one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ..errors import SetupError

NS = 1_000_000_000
_SUFFIX = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKMG]?)B?\s*$")


class ScheduleError(SetupError):
    """A window schedule that cannot be used (unreadable, empty windows, in the past)."""


@dataclass(frozen=True, order=True)
class Contact:
    """One downlink window: when it opens (UNIX ns, wall clock) and the bytes it carries."""

    start_ns: int
    bytes: int


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _how_long(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def parse_bytes(text: str) -> int:
    """``500k`` -> 500000 (decimal units, as link budgets are quoted)."""
    match = _BYTES.match(text)
    if not match:
        raise ScheduleError(f"{text!r} is not a byte count (like 500000, 500k, 2M)")
    return round(float(match.group(1)) * _SUFFIX[match.group(2)])


def parse_start(text: str, activated_ns: int) -> tuple[int, bool]:
    """The start in UNIX ns, and whether it was absolute (relative starts cannot be past)."""
    text = text.strip()
    if text.startswith("+"):
        try:
            return activated_ns + round(float(text[1:]) * NS), False
        except ValueError:
            raise ScheduleError(f"{text!r}: expected +SECONDS after activation") from None
    try:
        return round(float(text) * NS), True
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ScheduleError(
            f"{text!r} is not a time: use +SECONDS, UNIX seconds or ISO 8601 with a zone"
        ) from None
    if when.tzinfo is None:
        raise ScheduleError(f"{text!r} has no time zone (add Z for UTC): ambiguous on a robot")
    return round(when.timestamp() * NS), True


def parse_schedule(entries: Sequence[str], now_ns: int) -> list[Contact]:
    """The contacts of ``entries`` (``START=BYTES``), in time order; ``now_ns`` is both the
    activation time for relative starts and the present for absolute ones."""
    contacts, past = [], []
    for k, entry in enumerate(e for e in entries if e.strip()):
        start, _, volume = entry.partition("=")
        if not volume:
            raise ScheduleError(f"window {k + 1} {entry!r}: expected START=BYTES")
        try:
            start_ns, absolute = parse_start(start, now_ns)
            size = parse_bytes(volume)
        except ScheduleError as error:
            raise ScheduleError(f"window {k + 1} {entry!r}: {error}") from None
        if size <= 0:
            raise ScheduleError(f"window {k + 1} {entry!r} carries no bytes")
        if absolute and start_ns < now_ns:
            past.append(f"window {k + 1} {entry!r} opened {_how_long((now_ns - start_ns) / NS)} "
                        f"ago ({_utc(start_ns)})")  # fmt: skip
        contacts.append(Contact(start_ns, size))
    if past:
        raise ScheduleError(
            f"a window schedule in the past (now {_utc(now_ns)}): " + "; ".join(past)
            + ". Remove those entries or give future times; nothing would be sent in them."
        )  # fmt: skip
    return sorted(contacts)


def periodic(first_s: float, period_s: float, size: int, now_ns: int, count: int) -> list[Contact]:
    """``count`` windows ``period_s`` apart, the first ``first_s`` after ``now_ns``."""
    if first_s < 0:
        raise ScheduleError(f"first window {first_s:g} s after activation: a schedule in the past")
    if period_s <= 0:
        raise ScheduleError(f"window period {period_s:g} s: must be positive")
    if size <= 0:
        raise ScheduleError(f"window of {size} bytes: a window must carry some bytes")
    return [Contact(now_ns + round((first_s + k * period_s) * NS), size) for k in range(count)]
