"""The Bus on the local binding: order, QoS, latching, timers, /clock, parameters, bad input,
naming, shutdown. Everything here runs in one process, deterministically."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vad_inspection.msgs import cdr
from vad_inspection.msgs.types import MessageError, msg_class
from vad_inspection.transport import (
    DEFAULT,
    LATCHED,
    SENSOR_DATA,
    InvalidNameError,
    ManualClock,
    ParameterError,
    QoS,
    TransportError,
    create_bus,
    resolve_topic,
)
from vad_inspection.transport.local import LocalGraph
from vad_inspection.transport.naming import dds_topic, dds_typename
from vad_inspection.transport.qos import profile

IMAGE = "sensor_msgs/msg/Image"
STRING = "std_msgs/msg/String"
CLOCK = "rosgraph_msgs/msg/Clock"


def string(text: str) -> Any:
    return msg_class(STRING)(data=text)


def image(index: int, width: int = 4, height: int = 3) -> Any:
    header, stamp = msg_class("std_msgs/msg/Header"), msg_class("builtin_interfaces/msg/Time")
    return msg_class(IMAGE)(
        header=header(stamp=stamp(sec=index, nanosec=0), frame_id=str(index)),
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=width * 3,
        data=np.full(width * height * 3, index % 256, dtype=np.uint8),
    )


def clock_msg(ns: int) -> Any:
    t = msg_class("builtin_interfaces/msg/Time")(sec=ns // 10**9, nanosec=ns % 10**9)
    return msg_class(CLOCK)(clock=t)


@pytest.fixture
def graph() -> LocalGraph:
    return LocalGraph()


@pytest.fixture
def buses(graph: LocalGraph):
    made: list[Any] = []

    def make(name: str, **options: Any) -> Any:
        bus = create_bus("local", name, graph=graph, **options)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.shutdown()


# --------------------------------------------------------------------------------------------
# delivery


def test_messages_arrive_in_publish_order_across_topics_and_nodes(buses) -> None:
    a, b, c = buses("a"), buses("b"), buses("c")
    got: list[tuple[str, str]] = []
    deep = QoS(depth=50)  # more than are published: nothing is displaced
    c.create_subscription("x", STRING, lambda m: got.append(("x", m.data)), deep)
    c.create_subscription("y", STRING, lambda m: got.append(("y", m.data)), deep)
    px, py = a.create_publisher("x", STRING), b.create_publisher("/y", STRING)
    sent = []
    for i in range(20):
        pub, topic = (px, "x") if i % 3 else (py, "y")
        pub.publish(string(str(i)))
        sent.append((topic, str(i)))
    assert got == []  # nothing is delivered before the subscriber's node spins
    assert c.spin_once(0) == 20
    assert got == sent
    assert c.spin_once(0) == 0


def test_raw_subscription_gets_the_cdr_bytes(buses) -> None:
    a, b = buses("a"), buses("b")
    raw: list[bytes] = []
    decoded: list[Any] = []
    b.create_subscription("img", IMAGE, raw.append, raw=True)
    b.create_subscription("img", IMAGE, decoded.append)
    msg = image(7)
    a.create_publisher("img", IMAGE).publish(msg)
    b.spin_once(0)
    assert raw == [cdr.serialize(msg, IMAGE)]
    assert decoded[0].header.frame_id == "7"
    assert bytes(decoded[0].data) == bytes(msg.data)


def test_published_bytes_go_out_as_they_are(buses) -> None:
    a, b = buses("a"), buses("b")
    got: list[Any] = []
    b.create_subscription("s", STRING, got.append)
    a.create_publisher("s", STRING).publish(cdr.serialize(string("pre-encoded"), STRING))
    b.spin_once(0)
    assert got[0].data == "pre-encoded"


def test_serialize_false_passes_the_objects(buses) -> None:
    a, b = buses("a", serialize=False), buses("b", serialize=False)
    got: list[Any] = []
    raw: list[bytes] = []
    b.create_subscription("s", STRING, got.append)
    b.create_subscription("s", STRING, raw.append, raw=True)
    msg = string("same object")
    pub = a.create_publisher("s", STRING)
    pub.publish(msg)
    b.spin_once(0)
    assert got[0] is msg
    assert raw == [cdr.serialize(msg, STRING)]
    with pytest.raises(MessageError, match="message object is a sensor_msgs/msg/Image"):
        pub.publish(image(1))


def test_wrong_message_type_or_unknown_type_is_refused(buses) -> None:
    a = buses("a")
    pub = a.create_publisher("s", STRING)
    with pytest.raises(MessageError, match="std_msgs/msg/String: message object is a sensor_msgs"):
        pub.publish(image(1))
    with pytest.raises(MessageError, match="unknown message type 'my_msgs/msg/Nope'"):
        a.create_subscription("s", "my_msgs/msg/Nope", print)
    assert pub.published == 0


def test_publish_from_another_thread_is_delivered_on_the_spinning_thread(buses) -> None:
    a, b = buses("a"), buses("b")
    threads: list[threading.Thread] = []
    b.create_subscription("s", STRING, lambda m: threads.append(threading.current_thread()))
    pub = a.create_publisher("s", STRING)
    worker = threading.Thread(target=lambda: [pub.publish(string(str(i))) for i in range(5)])
    worker.start()
    assert b.spin_until(lambda: len(threads) == 5, timeout=5)
    worker.join(5)
    assert set(threads) == {threading.current_thread()}


def test_messages_published_in_callbacks_wait_for_the_next_round(buses) -> None:
    a = buses("a")
    got: list[str] = []
    relay = a.create_publisher("out", STRING)
    a.create_subscription("in", STRING, lambda m: relay.publish(string(m.data + "!")))
    a.create_subscription("out", STRING, lambda m: got.append(m.data))
    a.create_publisher("in", STRING).publish(string("ping"))
    assert a.spin_once(0) == 1 and got == []
    assert a.spin_once(0) == 1 and got == ["ping!"]


# --------------------------------------------------------------------------------------------
# QoS


def test_keep_last_depth_keeps_the_newest(buses) -> None:
    a, b = buses("a"), buses("b")
    got: list[str] = []
    b.create_subscription("s", STRING, lambda m: got.append(m.data), SENSOR_DATA)
    pub = a.create_publisher("s", STRING, SENSOR_DATA)
    for i in range(8):
        pub.publish(string(str(i)))
    b.spin_once(0)
    assert got == ["3", "4", "5", "6", "7"]  # depth 5


def test_latched_topic_reaches_late_subscribers(buses) -> None:
    a, b = buses("a"), buses("b")
    pub = a.create_publisher("map", STRING, LATCHED)
    pub.publish(string("old"))
    pub.publish(string("current"))
    latched: list[str] = []
    volatile: list[str] = []
    b.create_subscription("map", STRING, lambda m: latched.append(m.data), LATCHED)
    b.create_subscription("map", STRING, lambda m: volatile.append(m.data), DEFAULT)
    b.spin_once(0)
    assert latched == ["current"] and volatile == []
    pub.publish(string("next"))
    b.spin_once(0)
    assert latched == ["current", "next"] and volatile == ["next"]


def test_incompatible_qos_does_not_connect_and_says_why(buses, caplog) -> None:
    a, b = buses("a"), buses("b")
    got: list[str] = []
    caplog.set_level(logging.WARNING)
    best_effort = a.create_publisher("s", STRING, SENSOR_DATA)
    b.create_subscription("s", STRING, lambda m: got.append(m.data), DEFAULT)
    volatile = a.create_publisher("m", STRING, DEFAULT)
    b.create_subscription("m", STRING, lambda m: got.append(m.data), LATCHED)
    other_type = a.create_publisher("t", IMAGE)
    b.create_subscription("t", STRING, lambda m: got.append(m.data))
    best_effort.publish(string("1"))
    volatile.publish(string("2"))
    other_type.publish(image(3))
    b.spin_once(0)
    assert got == []
    assert best_effort.subscription_count == 0
    text = caplog.text
    assert "publisher is best effort, subscription requests reliable" in text
    assert "publisher is volatile, subscription requests transient local" in text
    assert "publisher type sensor_msgs/msg/Image, subscription type std_msgs/msg/String" in text
    # the other way round matches, as on DDS
    b.create_subscription("s", STRING, lambda m: got.append(m.data), SENSOR_DATA)
    reliable = a.create_publisher("r", STRING, DEFAULT)
    b.create_subscription("r", STRING, lambda m: got.append(m.data), SENSOR_DATA)
    reliable.publish(string("reliable->best effort"))
    b.spin_once(0)
    assert got == ["reliable->best effort"]


def test_qos_profiles() -> None:
    assert QoS("best_effort", "volatile", "keep_last", 5) == SENSOR_DATA
    assert QoS("reliable", "volatile", "keep_last", 10) == DEFAULT
    assert QoS("reliable", "transient_local", "keep_last", 1) == LATCHED
    assert profile("sensor_data") is SENSOR_DATA and profile(None) is DEFAULT
    with pytest.raises(ValueError, match="unknown QoS profile 'fast'"):
        profile("fast")
    with pytest.raises(ValueError, match="depth must be a positive int"):
        QoS(depth=0)


# --------------------------------------------------------------------------------------------
# malformed input


def test_malformed_messages_are_logged_dropped_counted_and_the_next_ones_arrive(
    buses, caplog
) -> None:
    a, b = buses("a"), buses("b")
    got: list[str] = []
    sub = b.create_subscription("camera/image", IMAGE, lambda m: got.append(m.header.frame_id))
    pub = a.create_publisher("camera/image", IMAGE)
    good = cdr.serialize(image(1), IMAGE)
    caplog.set_level(logging.WARNING)
    pub.publish(image(0))
    pub.publish(b"\x07garbage that is no CDR at all")  # not CDR
    pub.publish(good[: len(good) // 2])  # truncated
    pub.publish(good + b"trailing bytes")  # wrong length
    pub.publish(cdr.serialize(string("a String, not an Image"), STRING))  # another type
    pub.publish(b"")  # empty
    pub.publish(image(1))
    b.spin_once(0)
    assert got == ["0", "1"]
    assert sub.dropped == 5 and sub.received == 2
    assert "dropped a malformed message on /camera/image [sensor_msgs/msg/Image]" in caplog.text
    # the log is throttled: one line for the burst, with the count
    assert caplog.text.count("dropped a malformed message") == 1
    pub.publish(image(2))
    b.spin_once(0)
    assert got == ["0", "1", "2"]


def test_raw_subscriptions_do_not_judge_the_bytes(buses) -> None:
    a, b = buses("a"), buses("b")
    raw: list[bytes] = []
    sub = b.create_subscription("s", IMAGE, raw.append, raw=True)
    a.create_publisher("s", IMAGE).publish(b"anything")
    b.spin_once(0)
    assert raw == [b"anything"] and sub.dropped == 0


# --------------------------------------------------------------------------------------------
# timers and clocks


def test_timers_follow_a_manual_clock(buses) -> None:
    clock = ManualClock(start_ns=0)
    a = buses("a", clock=clock)
    calls: list[tuple[str, int]] = []
    fast = a.create_timer(0.1, lambda: calls.append(("fast", clock.now_ns())))
    a.create_timer(0.25, lambda: calls.append(("slow", clock.now_ns())))
    assert a.spin_once(0) == 0
    for _ in range(5):
        clock.advance(0.1)
        a.spin_once(0)
    ms = [(name, ns // 1_000_000) for name, ns in calls]
    assert ms == [
        ("fast", 100),
        ("fast", 200),
        ("slow", 300),  # due at 250: earlier than the fast one's 300
        ("fast", 300),
        ("fast", 400),
        ("fast", 500),
        ("slow", 500),
    ]
    # late by several periods: one call, then back on the original phase
    calls.clear()
    clock.advance(0.35)  # 850 ms
    a.spin_once(0)
    assert [n for n, _ in calls] == ["fast", "slow"]
    assert fast.time_until_next_call() == pytest.approx(0.05)
    fast.cancel()
    calls.clear()
    clock.advance(0.2)
    a.spin_once(0)
    assert [n for n, _ in calls] == ["slow"]
    assert fast.calls == 6


def test_wall_clock_timer_fires_while_spinning(buses) -> None:
    a = buses("a")
    calls: list[int] = []
    a.create_timer(0.02, lambda: calls.append(a.now_ns()))
    assert a.spin_until(lambda: len(calls) >= 3, timeout=5)
    assert all(b - a_ >= 15_000_000 for a_, b in itertools.pairwise(calls))


def test_sim_time_follows_clock_topic_and_drives_timers(buses) -> None:
    sim = buses("player")
    node = buses("node", use_sim_time=True)
    assert node.clock.sim and node.now_ns() == 0
    fired: list[int] = []
    node.create_timer(1.0, lambda: fired.append(node.now_ns()))
    clock_pub = sim.create_publisher("/clock", CLOCK, DEFAULT)
    assert node.spin_once(0) == 0 and fired == []  # no /clock yet: time stands still
    base = 1_700_000_000 * 10**9
    clock_pub.publish(clock_msg(base))
    node.spin_once(0)
    assert node.now_ns() == base
    fired.clear()  # first /clock jumps far ahead of creation time: one catch-up call
    for k in range(1, 8):
        clock_pub.publish(clock_msg(base + k * 500_000_000))  # 0.5 s steps
        node.spin_once(0)
    assert [(t - base) / 1e9 for t in fired] == [1.0, 2.0, 3.0]
    # a bag loop: time jumps back, timers restart from the new time
    fired.clear()
    clock_pub.publish(clock_msg(base))
    node.spin_once(0)
    clock_pub.publish(clock_msg(base + 900_000_000))
    node.spin_once(0)
    assert fired == []
    clock_pub.publish(clock_msg(base + 1_000_000_000))
    node.spin_once(0)
    assert [(t - base) / 1e9 for t in fired] == [1.0]


def test_use_sim_time_from_a_parameter_file(buses, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    use_sim_time: true\n")
    node = buses("node", params_file=path)
    assert node.parameters["use_sim_time"] is True and node.clock.sim


# --------------------------------------------------------------------------------------------
# parameters, names, logger


def test_bus_parameters_from_file_and_overrides(buses, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("detector:\n  ros__parameters:\n    threshold: 0.4\n    model: padim\n")
    node = buses("detector", params_file=[path], parameters={"model": "patchcore"})
    assert node.parameters.declare("threshold", 0.5, description="score cut") == 0.4
    assert node.parameters.declare("model", "x") == "patchcore"
    with pytest.raises(ParameterError, match="expected double"):
        buses("detector2", parameters={"t": "high"}).parameters.declare("t", 0.5)
    with pytest.raises(ParameterError, match=r"'use_sim_time' .*expected bool, got str"):
        buses("detector3", parameters={"use_sim_time": "yes"})


def test_names_resolve_like_ros(buses) -> None:
    node = buses("cam", namespace="robot1", remappings={"image": "/sensors/image_raw"})
    assert node.fqn == "/robot1/cam"
    assert node.resolve("info") == "/robot1/info"
    assert node.resolve("~/debug") == "/robot1/cam/debug"
    assert node.resolve("/abs") == "/abs"
    assert node.resolve("image") == "/sensors/image_raw"
    assert node.create_publisher("image", STRING).topic == "/sensors/image_raw"
    assert node.logger.name == "robot1.cam"
    assert resolve_topic("a/b") == "/a/b"
    assert dds_topic("/robot1/info") == "rt/robot1/info"
    assert dds_typename("sensor_msgs/msg/Image") == "sensor_msgs::msg::dds_::Image_"
    for bad in ["", "a//b", "a/", "1abc", "a b", "~x", "a/__b", "{node}/x"]:
        with pytest.raises(InvalidNameError):
            node.resolve(bad)
    with pytest.raises(InvalidNameError, match="invalid node name"):
        buses("9lives")


# --------------------------------------------------------------------------------------------
# lifecycle


def test_shutdown_releases_everything(graph: LocalGraph) -> None:
    a = create_bus("local", "a", graph=graph)
    b = create_bus("local", "b", graph=graph)
    pub = a.create_publisher("s", STRING)
    b.create_subscription("s", STRING, print)
    assert pub.subscription_count == 1
    b.shutdown()
    b.shutdown()  # idempotent
    assert pub.subscription_count == 0 and not b.ok()
    with pytest.raises(TransportError, match="shut down"):
        b.spin_once(0)
    with a:
        pass
    with pytest.raises(TransportError, match="shut down"):
        pub.publish(string("late"))
    assert graph.topics() == {}


def test_signal_ends_spin_cleanly_and_handlers_are_restored(buses) -> None:
    node = buses("node")
    before = signal.getsignal(signal.SIGTERM)
    node.install_signal_handlers()
    ticks: list[int] = []
    node.create_timer(0.01, lambda: ticks.append(1))
    killer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    killer.start()
    try:
        node.spin()  # returns on SIGTERM instead of the process dying
    finally:
        killer.cancel()
    assert not node.ok() and ticks
    node.shutdown()
    assert signal.getsignal(signal.SIGTERM) == before


def test_request_shutdown_from_another_thread_wakes_a_blocked_spin(buses) -> None:
    node = buses("node")
    threading.Timer(0.1, node.request_shutdown).start()
    node.spin_once(None)  # would block forever without the wake-up
    assert not node.ok()


def test_unknown_bus_kind() -> None:
    with pytest.raises(ValueError, match="unknown bus kind 'zmq'; choose one of local, dds, ros"):
        create_bus("zmq", "n")
