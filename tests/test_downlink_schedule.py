"""Downlink window schedules: the entry syntax, order, and refusals that name the entry."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vad_inspection.downlink.schedule import (
    Contact,
    ScheduleError,
    parse_bytes,
    parse_schedule,
    periodic,
)

NS = 1_000_000_000
NOW = round(datetime(2026, 12, 2, 6, 0, tzinfo=UTC).timestamp()) * NS


def test_relative_absolute_and_unix_starts_come_out_in_time_order() -> None:
    contacts = parse_schedule(
        ["2026-12-02T07:00:00Z=2M", "+90=500k", f"{NOW // NS + 3600 * 3}=1.5G", " "], NOW
    )
    assert contacts == [
        Contact(NOW + 90 * NS, 500_000),
        Contact(NOW + 3600 * NS, 2_000_000),
        Contact(NOW + 3 * 3600 * NS, 1_500_000_000),
    ]
    offset = parse_schedule(["2026-12-02T08:00:00+02:00=10"], NOW)  # 06:00 UTC: now, not past
    assert offset == [Contact(NOW, 10)]


@pytest.mark.parametrize("text, size", [("500000", 500_000), ("500k", 500_000), ("2MB", 2_000_000)])
def test_byte_counts(text: str, size: int) -> None:
    assert parse_bytes(text) == size


def test_a_schedule_in_the_past_is_refused_naming_each_past_entry() -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(["+60=1M", "2026-12-02T05:00:00Z=1M", "2026-12-01T06:00:00Z=2M"], NOW)
    message = str(caught.value)
    assert "in the past" in message and "2026-12-02T06:00:00Z" in message  # now, stated
    assert "window 2" in message and "60 min ago" in message
    assert "window 3" in message and "24.0 h ago" in message
    assert "window 1" not in message


@pytest.mark.parametrize(
    "entry, said",
    [
        ("+60", "START=BYTES"),
        ("+60=lots", "not a byte count"),
        ("+60=0", "carries no bytes"),
        ("tomorrow=1M", "not a time"),
        ("2026-12-03T06:00:00=1M", "no time zone"),
        ("+soon=1M", "+SECONDS"),
    ],
)
def test_unreadable_entries_are_refused_with_the_reason(entry: str, said: str) -> None:
    with pytest.raises(ScheduleError, match="window 1") as caught:
        parse_schedule([entry], NOW)
    assert said in str(caught.value)


def test_periodic_windows_and_their_refusals() -> None:
    assert periodic(10, 60, 1000, NOW, 3) == [
        Contact(NOW + 10 * NS, 1000),
        Contact(NOW + 70 * NS, 1000),
        Contact(NOW + 130 * NS, 1000),
    ]
    with pytest.raises(ScheduleError, match="in the past"):
        periodic(-1, 60, 1000, NOW, 1)
    with pytest.raises(ScheduleError, match="some bytes"):
        periodic(0, 60, 0, NOW, 1)
