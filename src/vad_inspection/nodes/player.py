"""The bag player node: any rosbag2 bag (MCAP or sqlite3, Humble or Jazzy) back onto the bus.

What ``ros2 bag play`` offers, as parameters: ``rate`` (a multiple of real time; 0 as fast as
possible), ``loop``, ``start_offset_s`` and ``duration_s``, ``topics``, ``remap``, ``clock``
(publish ``/clock`` from bag time, as ``--clock``; the bag's own ``/clock`` is then not replayed)
and per-topic QoS (``qos_overrides``: ``/topic=reliable``, ``=best_effort``, ``=transient_local``;
otherwise the QoS each topic was recorded with, so ``/tf_static`` stays latched). Two things it
adds: messages are sent as the recorded CDR bytes (nothing decoded, so a fast topic does not fall
behind at high rates), and a **closed-loop** mode that, after each camera frame, waits until the
detector's ``~/score`` for that frame's stamp has arrived (or ``closed_loop_timeout_s`` passed,
counted as unanswered): however slow the model, an offline run loses nothing and gives the same
scores every time.

Managed like the detector: ``configure`` opens the bag (a missing or corrupt bag, an unknown
topic or a start offset past the end fails it with the reason), ``activate`` plays (or resumes),
``deactivate`` pauses where it is. When the bag has played out, :attr:`finished` is set and the
node reports what it sent.

A bag that is partly bad plays what can be played and says what it could not, rather than
refusing the rest: topics of a type neither the bag nor the typestore defines are left out, logged
once each and listed in :attr:`skipped` (``counts["skipped_topics"]`` and
``counts["skipped_messages"]``); what the bag reader had to work around (no or a stale
``metadata.yaml``, an MCAP file cut off, played up to the cut) is logged at configure and kept in
:attr:`bag_warnings`; a message whose bytes are corrupt is sent as it is, since nothing here
decodes it (the subscriber drops or refuses it; in closed loop the player then waits out the
timeout for that frame); and a read error mid-bag ends playback with what was sent kept, logged,
counted (``counts["errors"]``), kept in :attr:`playback_error` and :attr:`finished` set, so a
waiting caller is never left hanging.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..errors import VadError
from ..msgs.cdr import header_stamp_ns
from ..msgs.defaults import new_message
from ..msgs.time import ns_to_stamp, stamp_to_ns
from ..replay.playback import Playback, PlaybackError, PlaybackOptions, parse_remaps
from ..transport import DEFAULT, SENSOR_DATA, Bus, QoS
from ..transport.bag import BagError, BagReader
from ..transport.qos import CLOCK, TF, Durability, Reliability
from .base import LifecycleNode, declare_parameters, parameter


@dataclass(frozen=True)
class PlayerParams:
    bag: str = parameter("", "rosbag2 bag to play (a directory, or a .mcap / .db3 file)")
    rate: float = parameter(
        1.0, "playback speed as a multiple of real time; 0: as fast as possible"
    )
    loop: bool = parameter(False, "start again at the end")
    start_offset_s: float = parameter(0.0, "skip this much of the bag (s)")
    duration_s: float = parameter(0.0, "play this much of the bag (s); 0: to the end")
    topics: list[str] = parameter([""], "topics to play; empty: all")
    remap: list[str] = parameter([""], "FROM:=TO topic remappings")
    clock: bool = parameter(True, "publish /clock from bag time (the bag's /clock is not played)")
    qos_overrides: list[str] = parameter(
        [""], "TOPIC=reliable|best_effort|transient_local: offer this QoS instead of the recorded"
    )
    closed_loop: bool = parameter(False, "after each camera frame, wait for its score")
    score_topic: str = parameter("/detector/score", "where the scores of closed_loop come from")
    closed_loop_timeout_s: float = parameter(10.0, "longest wait for one frame's score (s)")
    autostart: bool = parameter(False, "configure and activate at start-up")


class PlayerNode(LifecycleNode):
    """See the module docstring. Construct with a :class:`~vad_inspection.transport.Bus`."""

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.params = declare_parameters(bus, PlayerParams)
        bus.parameters.check_unused()
        self.counts: Counter[str] = Counter()
        self.sent_ns: dict[int, int] = {}  # frame stamp -> monotonic ns when published
        self.finished = threading.Event()
        self.skipped: dict[str, str] = {}  # topic -> why it is not played
        self.bag_warnings: list[str] = []  # what is wrong with the bag but did not stop it
        self.playback_error = ""  # why playback ended before the bag did ("" if it did not)
        self._bag: BagReader | None = None
        self._playback: Playback | None = None
        self._pubs: dict[str, Any] = {}
        self._clock_pub: Any = None
        self._answered: set[int] = set()
        self._answer = threading.Condition()
        self._run = threading.Event()  # set while active
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._score_sub: Any = None
        if self.params.autostart and self.trigger("configure"):
            self.trigger("activate")

    # -- lifecycle -------------------------------------------------------------------------------
    def on_configure(self) -> bool:
        p = self.params
        if not p.bag:
            raise VadError("parameter 'bag' is empty: name the bag to play")
        try:
            self._bag = BagReader(p.bag)
            options = PlaybackOptions(
                topics=tuple(t for t in p.topics if t), start_offset_s=p.start_offset_s,
                duration_s=p.duration_s, remap=parse_remaps([r for r in p.remap if r]),
                loop=p.loop, skip_topics=("/clock",) if p.clock else (),
            )  # fmt: skip
            self._playback = Playback(self._bag, options)
        except (BagError, PlaybackError) as error:
            self._close_bag()
            raise VadError(str(error)) from None
        self.bag_warnings = list(self._bag.warnings)
        for warning in self.bag_warnings:
            self.log.warning("%s", warning)
        counts = self._bag.message_counts()
        self.skipped = {
            topic: f"type {typename} is unknown to the bag and to us"
            for topic, typename in self._playback.skipped.items()
        }
        for topic, why in self.skipped.items():
            self.log.warning("%s: %s; its %d messages are not played", topic, why,
                             counts.get(topic, 0))  # fmt: skip
        self.counts["skipped_topics"] = len(self.skipped)
        self.counts["skipped_messages"] = self._playback.skipped_messages
        overrides = _qos_overrides(p.qos_overrides)
        offered = self._bag.offered_qos()
        for bag_topic, typename in self._playback.types.items():
            out = self._playback.outputs[bag_topic]
            qos = overrides.get(out) or offered.get(bag_topic) or _default_qos(out, typename)
            self._pubs[out] = self.bus.create_publisher(out, typename, qos)
        if p.clock:
            self._clock_pub = self.bus.create_publisher("/clock", "rosgraph_msgs/msg/Clock", CLOCK)
        if p.closed_loop:
            self._score_sub = self.bus.create_subscription(
                p.score_topic, "vision_msgs/msg/Classification", self._on_score, DEFAULT
            )
        self.log.info("%s: %d topics, %s", p.bag, len(self._pubs),
                      ", ".join(self._playback.outputs.values()))  # fmt: skip
        return True

    def on_activate(self) -> bool:
        self._run.set()
        if self._thread is None:
            self._thread = threading.Thread(target=self._play, name="player", daemon=True)
            self._thread.start()
        return True

    def on_deactivate(self) -> bool:
        self._run.clear()
        return True

    def on_cleanup(self) -> bool:
        self._halt()
        for pub in self._pubs.values():
            pub.destroy()
        self._pubs.clear()
        for endpoint in (self._clock_pub, self._score_sub):
            if endpoint is not None:
                endpoint.destroy()
        self._clock_pub = self._score_sub = None
        self._close_bag()
        return True

    def on_shutdown(self) -> bool:
        self._halt()
        self._close_bag()
        return True

    def close(self) -> None:
        self._halt()
        self._close_bag()

    def _halt(self) -> None:
        self._stop.set()
        self._run.set()  # wake a paused player so it can see the stop
        with self._answer:
            self._answer.notify_all()
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)
        self._thread = None
        self._stop.clear()
        self._run.clear()

    def _close_bag(self) -> None:
        if self._bag is not None:
            self._bag.close()
            self._bag = None

    # -- playing (its own thread) ----------------------------------------------------------------
    def _on_score(self, msg: Any) -> None:
        with self._answer:
            self._answered.add(stamp_to_ns(msg.header.stamp))
            self._answer.notify_all()

    def _play(self) -> None:
        playback = self._playback
        assert playback is not None
        p = self.params
        images = set(playback.image_topics)
        started = time.monotonic()
        paused_s = 0.0
        try:
            for due in playback.messages():
                if not self._run.is_set():
                    pause = time.monotonic()
                    self._run.wait()
                    paused_s += time.monotonic() - pause
                if self._stop.is_set():
                    return
                if p.rate > 0:
                    wait = started + paused_s + due.offset_s / p.rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    elif wait < -0.05:
                        self.counts["late"] += 1
                if self._clock_pub is not None:
                    self._clock_pub.publish(
                        new_message("rosgraph_msgs/msg/Clock", self.bus.distro,
                                    clock=ns_to_stamp(due.stamp_ns, self.bus.distro))
                    )  # fmt: skip
                self._pubs[due.topic].publish(due.data)
                self.counts["messages"] += 1
                if due.topic in images:
                    self._sent_frame(due)
        except (BagError, VadError) as error:
            self._stopped(str(error))
        except Exception as error:  # a bug or a dead bus: still end, with the reason
            if self._stop.is_set():
                return  # halted anyway (cleanup, shutdown): not the bag's fault
            self.log.exception("playback failed")
            self._stopped(f"{type(error).__name__}: {error}")
        self.log.info("played %d messages (%d frames, %d unanswered)", self.counts["messages"],
                      self.counts["frames"], self.counts["unanswered"])  # fmt: skip
        self.finished.set()

    def _stopped(self, reason: str) -> None:
        """Playback ended before the bag: keep what was sent and say why."""
        self.log.error("playback stopped after %d messages: %s", self.counts["messages"], reason)
        self.counts["errors"] += 1
        self.playback_error = reason

    def _sent_frame(self, due: Any) -> None:
        stamp = header_stamp_ns(due.data)
        self.counts["frames"] += 1
        if stamp is None:  # too short to hold a header: nothing can answer it, do not wait
            self.counts["unstamped"] += 1
            self.log.warning("%s: a %d-byte frame at %d ns has no header; sent as it is",
                             due.topic, len(due.data), due.stamp_ns)  # fmt: skip
            return
        self.sent_ns[stamp] = time.monotonic_ns()
        if not self.params.closed_loop:
            return
        deadline = time.monotonic() + self.params.closed_loop_timeout_s
        with self._answer:
            while stamp not in self._answered and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    self.counts["unanswered"] += 1
                    self.log.warning("no score for the frame at %d ns within %g s", stamp,
                                     self.params.closed_loop_timeout_s)  # fmt: skip
                    break
                self._answer.wait(left)
            self._answered.discard(stamp)


def _default_qos(topic: str, typename: str) -> QoS:
    if topic == "/tf":
        return TF
    if typename.startswith("sensor_msgs/msg/") and typename.endswith(("Image", "CameraInfo")):
        return SENSOR_DATA
    return DEFAULT


def _qos_overrides(rules: list[str]) -> dict[str, QoS]:
    presets = {
        "reliable": QoS(Reliability.RELIABLE, Durability.VOLATILE),
        "best_effort": QoS(Reliability.BEST_EFFORT, Durability.VOLATILE),
        "transient_local": QoS(Reliability.RELIABLE, Durability.TRANSIENT_LOCAL, depth=1),
    }
    out: dict[str, QoS] = {}
    for rule in (r for r in rules if r):
        topic, _, name = rule.partition("=")
        if name not in presets:
            raise VadError(f"qos_overrides {rule!r}: expected TOPIC={'|'.join(presets)}")
        out[topic] = presets[name]
    return out


def main(argv: list[str] | None = None) -> int:
    """``ros2 run vad_inspection player`` / ``vad-inspection run player``."""
    from .runner import run_node

    return run_node(PlayerNode, "player", argv)
