"""What a bag replay publishes and when: the pure part of the player (no transport, no clock).

A :class:`Playback` reads a bag once it is opened (``BagReader``) and yields :class:`Due` items in
bag order: the output topic (after remapping), the message type, the CDR bytes as recorded, the
bag time, and the offset from the start of playback in bag seconds. The player divides that
offset by the rate and sleeps until it is due; a test or an offline run needs no sleeping at all.
Options are those rosbag2's player users know: topics, a start offset and duration, remapping,
looping. Topics whose message type neither the bag nor the typestore defines are left out and
listed (:attr:`Playback.skipped`), not silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import SetupError
from ..transport.bag import BagReader

NS = 1_000_000_000
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


class PlaybackError(SetupError):
    """The playback options do not fit the bag (unknown topic, offset past the end...)."""


@dataclass(frozen=True)
class PlaybackOptions:
    topics: tuple[str, ...] = ()  # empty: every topic
    start_offset_s: float = 0.0
    duration_s: float = 0.0  # 0: to the end
    remap: dict[str, str] = field(default_factory=dict)  # bag topic -> published topic
    loop: bool = False
    skip_topics: tuple[str, ...] = ()  # left out on purpose (e.g. the bag's own /clock)


@dataclass(frozen=True)
class Due:
    topic: str  # as published (remapped)
    bag_topic: str
    typename: str
    data: bytes
    stamp_ns: int  # bag (receive) time
    offset_s: float  # since the first played message, in bag seconds (loops add up)
    loop: int


def parse_remaps(rules: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["/a:=/b", ...]`` (ros2 bag play's ``--remap`` form) to a mapping."""
    remap: dict[str, str] = {}
    for rule in rules:
        source, sep, target = rule.partition(":=")
        if not sep or not source or not target:
            raise PlaybackError(f"remap rule {rule!r}: expected FROM:=TO")
        remap[source] = target
    return remap


class Playback:
    """The messages of one bag to play, with the options applied."""

    def __init__(self, bag: BagReader, options: PlaybackOptions) -> None:
        self.bag = bag
        self.options = options
        types = bag.topics()
        unknown = sorted(set(options.topics) - set(types))
        if unknown:
            raise PlaybackError(
                f"{bag.path}: no topic(s) {unknown} in the bag; it has {sorted(types)}"
            )
        wanted = set(options.topics or types) - set(options.skip_topics)
        self.skipped = {t: bag.undecodable[t] for t in sorted(wanted) if t in bag.undecodable}
        self.types = {t: types[t] for t in sorted(wanted) if t not in self.skipped}
        counts = bag.message_counts()
        self.skipped_messages = sum(counts.get(t, 0) for t in self.skipped)
        """Stored messages on the skipped topics: what the replay leaves out, as a number."""
        self.first_ns, self.last_ns = bag.time_span()
        start = self.first_ns + round(options.start_offset_s * NS)
        if options.start_offset_s < 0 or (counts and start > self.last_ns):
            span = (self.last_ns - self.first_ns) / NS
            raise PlaybackError(
                f"{bag.path}: start offset {options.start_offset_s:g} s is outside the bag "
                f"({span:.3f} s long)"
            )
        self.start_ns = start
        self.stop_ns = start + round(options.duration_s * NS) if options.duration_s > 0 else None
        self.outputs = {t: options.remap.get(t, t) for t in self.types}

    @property
    def image_topics(self) -> list[str]:
        """Played camera topics (published names), depth images excluded."""
        return [
            self.outputs[t] for t, typ in self.types.items()
            if typ in IMAGE_TYPES and "depth" not in t
        ]  # fmt: skip

    def messages(self) -> Iterator[Due]:
        """Every message to publish, in bag order; forever when looping."""
        loop = 0
        base = 0.0
        while True:
            last = 0.0
            played = False
            for m in self.bag.messages(self.types, self.start_ns, self.stop_ns):
                last = (m.timestamp_ns - self.start_ns) / NS
                played = True
                yield Due(self.outputs[m.topic], m.topic, m.typename, m.data, m.timestamp_ns,
                          base + max(last, 0.0), loop)  # fmt: skip
            if not self.options.loop or not played:
                return
            loop += 1
            base += last + 0.001  # the next pass starts right after this one ended
