"""Time stamps and headers: integer nanoseconds in the domain, builtin_interfaces/Time on the wire.

The domain side keeps one ``int`` of nanoseconds since the epoch (exact, sortable, no float
rounding); messages carry ``sec`` (int32) and ``nanosec`` (uint32, always < 1e9, also for times
before the epoch, as rclpy does).
"""

from __future__ import annotations

from typing import Any

from .types import MessageError, msg_class

_NS = 1_000_000_000
_INT32 = (-(2**31), 2**31 - 1)


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/msg/Time (anything with ``sec`` and ``nanosec``) -> nanoseconds."""
    return int(stamp.sec) * _NS + int(stamp.nanosec)


def ns_to_stamp(ns: int, distro: str = "jazzy") -> Any:
    """Nanoseconds -> builtin_interfaces/msg/Time; raises :class:`MessageError` outside int32 s."""
    sec, nanosec = divmod(int(ns), _NS)
    if not _INT32[0] <= sec <= _INT32[1]:
        raise MessageError(f"builtin_interfaces/msg/Time: {ns} ns does not fit an int32 of seconds")
    return msg_class("builtin_interfaces/msg/Time", distro)(sec=sec, nanosec=nanosec)


def header(stamp_ns: int, frame_id: str, distro: str = "jazzy") -> Any:
    """std_msgs/msg/Header with the given stamp (ns) and frame."""
    return msg_class("std_msgs/msg/Header", distro)(
        stamp=ns_to_stamp(stamp_ns, distro), frame_id=str(frame_id)
    )
