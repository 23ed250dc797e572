"""Quality of service: the three profiles the nodes use, named as in ROS 2.

A :class:`QoS` is the DDS subset every binding maps one to one (rclpy ``QoSProfile``, Cyclone DDS
``Qos``, the in-process graph): reliability, durability, history kind and depth.

Matching follows DDS's request/offer rule, so a mismatch behaves the same on every binding: a
best-effort publisher does not reach a reliable subscription, and a volatile publisher does not
reach a transient-local one (:func:`compatible`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Reliability(str, Enum):
    RELIABLE = "reliable"
    BEST_EFFORT = "best_effort"


class Durability(str, Enum):
    VOLATILE = "volatile"
    TRANSIENT_LOCAL = "transient_local"


class History(str, Enum):
    KEEP_LAST = "keep_last"
    KEEP_ALL = "keep_all"


@dataclass(frozen=True)
class QoS:
    """Reliability, durability, history and depth (depth is ignored for KEEP_ALL)."""

    reliability: Reliability = Reliability.RELIABLE
    durability: Durability = Durability.VOLATILE
    history: History = History.KEEP_LAST
    depth: int = 10

    def __post_init__(self) -> None:
        # accept the plain strings too ("reliable", ...), store the enums
        object.__setattr__(self, "reliability", Reliability(self.reliability))
        object.__setattr__(self, "durability", Durability(self.durability))
        object.__setattr__(self, "history", History(self.history))
        if self.history is History.KEEP_LAST and (
            not isinstance(self.depth, int) or isinstance(self.depth, bool) or self.depth < 1
        ):
            raise ValueError(f"QoS depth must be a positive int for KEEP_LAST, got {self.depth!r}")

    @property
    def reliable(self) -> bool:
        return self.reliability is Reliability.RELIABLE

    @property
    def latched(self) -> bool:
        return self.durability is Durability.TRANSIENT_LOCAL

    def keep(self) -> int | None:
        """How many samples a history keeps: ``depth``, or None (unbounded) for KEEP_ALL."""
        return self.depth if self.history is History.KEEP_LAST else None


SENSOR_DATA = QoS(Reliability.BEST_EFFORT, Durability.VOLATILE, History.KEEP_LAST, 5)
"""rclpy's ``qos_profile_sensor_data``: newest data wins, nothing is retransmitted."""

DEFAULT = QoS(Reliability.RELIABLE, Durability.VOLATILE, History.KEEP_LAST, 10)
"""rclpy's default profile (``QoSProfile(depth=10)``)."""

LATCHED = QoS(Reliability.RELIABLE, Durability.TRANSIENT_LOCAL, History.KEEP_LAST, 1)
"""Transient local, depth 1: late subscribers get the last message (maps, calibration, status)."""

CLOCK = QoS(Reliability.BEST_EFFORT, Durability.VOLATILE, History.KEEP_LAST, 1)
"""What rclpy's time source subscribes ``/clock`` with (``ClockQoS``)."""

TF = QoS(Reliability.RELIABLE, Durability.VOLATILE, History.KEEP_LAST, 100)
"""tf2's listener and broadcaster on ``/tf``: reliable, volatile, deep (many frames per stamp)."""

PROFILES: dict[str, QoS] = {
    "sensor_data": SENSOR_DATA,
    "default": DEFAULT,
    "latched": LATCHED,
    "transient_local": LATCHED,
    "clock": CLOCK,
}


def profile(qos: QoS | str | None) -> QoS:
    """A QoS from a profile name (``"sensor_data"``, ``"default"``, ``"latched"``) or a QoS."""
    if qos is None:
        return DEFAULT
    if isinstance(qos, QoS):
        return qos
    try:
        return PROFILES[str(qos).lower()]
    except KeyError:
        raise ValueError(
            f"unknown QoS profile {qos!r}; use a QoS or one of {', '.join(PROFILES)}"
        ) from None


def compatible(offered: QoS, requested: QoS) -> bool:
    """DDS request/offer matching: does a publisher with ``offered`` reach ``requested``?"""
    return incompatibility(offered, requested) is None


def incompatibility(offered: QoS, requested: QoS) -> str | None:
    """Why ``offered`` does not match ``requested`` (None when it does)."""
    if requested.reliable and not offered.reliable:
        return "publisher is best effort, subscription requests reliable"
    if requested.latched and not offered.latched:
        return "publisher is volatile, subscription requests transient local"
    return None
