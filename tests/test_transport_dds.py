"""The dds binding on a real Cyclone DDS: names, types and QoS as ROS 2 puts them on the wire;
delivery, latching, malformed samples; and images between two and three separate processes.

Every test gets its own random ROS_DOMAIN_ID and the shipped loopback configuration
(config/cyclonedds_loopback.xml), so tests neither see each other nor need a network.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

cy = pytest.importorskip("vad_inspection.transport._cyclone", exc_type=ImportError)

import transport_peer as peer  # noqa: E402
from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication  # noqa: E402
from cyclonedds.core import Policy  # noqa: E402

from vad_inspection.msgs import cdr  # noqa: E402
from vad_inspection.msgs.types import msg_class  # noqa: E402
from vad_inspection.transport import (  # noqa: E402
    DEFAULT,
    LATCHED,
    SENSOR_DATA,
    TransportError,
    create_bus,
)
from vad_inspection.transport.dds import (  # noqa: E402
    domain_id_from_env,
    loopback_config_path,
    use_loopback_config,
)

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "sensor_msgs/msg/Image"
STRING = "std_msgs/msg/String"
WAIT = 30.0  # s: generous bound for anything that crosses processes on a loaded 2-core box


def string(text: str) -> Any:
    return msg_class(STRING)(data=text)


# --------------------------------------------------------------------------------------------
# the binding itself (one process)


def test_version_is_pinned_in_setup_py_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = (ROOT / "setup.py").read_text()
    assert f'"cyclonedds=={cy.PINNED_VERSION}"' in setup
    assert cy.check_version() == cy.PINNED_VERSION
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "99.0.0")
    with pytest.raises(cy.CycloneError, match=r"cyclonedds==11\.0\.1, but 99\.0\.0 is installed"):
        cy.check_version()


def test_topic_type_and_qos_as_ros2_puts_them_on_the_wire(dds_buses, domain: int) -> None:
    node = dds_buses("camera", namespace="robot1")
    node.create_publisher("image_raw", IMAGE, SENSOR_DATA)
    node.create_publisher("/map", "nav_msgs/msg/OccupancyGrid", LATCHED)
    node.create_publisher("~/status", STRING, DEFAULT)
    # what another participant learns from discovery
    observer = cy.DomainParticipant(domain)
    reader = BuiltinDataReader(observer, BuiltinTopicDcpsPublication)
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + WAIT
    while len(seen) < 3 and time.monotonic() < deadline:
        for ep in reader.take(N=20):
            if ep.topic_name.startswith("rt/"):
                seen[ep.topic_name] = ep
        time.sleep(0.02)
    cy.delete(observer)
    assert set(seen) == {"rt/robot1/image_raw", "rt/map", "rt/robot1/camera/status"}
    assert seen["rt/robot1/image_raw"].type_name == "sensor_msgs::msg::dds_::Image_"
    assert seen["rt/map"].type_name == "nav_msgs::msg::dds_::OccupancyGrid_"

    image = seen["rt/robot1/image_raw"].qos
    assert image[Policy.Reliability] == Policy.Reliability.BestEffort
    assert image[Policy.Durability] == Policy.Durability.Volatile
    assert image[Policy.History] == Policy.History.KeepLast(5)
    grid = seen["rt/map"].qos
    assert isinstance(grid[Policy.Reliability], Policy.Reliability.Reliable)
    assert grid[Policy.Durability] == Policy.Durability.TransientLocal
    assert grid[Policy.History] == Policy.History.KeepLast(1)
    status = seen["rt/robot1/camera/status"].qos
    assert isinstance(status[Policy.Reliability], Policy.Reliability.Reliable)
    assert status[Policy.History] == Policy.History.KeepLast(10)


def test_delivery_in_order_raw_and_decoded(dds_buses) -> None:
    a, b = dds_buses("a"), dds_buses("b")
    got: list[str] = []
    raw: list[bytes] = []
    b.create_subscription("chatter", STRING, lambda m: got.append(m.data), DEFAULT)
    b.create_subscription("chatter", STRING, raw.append, DEFAULT, raw=True)
    pub = a.create_publisher("chatter", STRING, DEFAULT)
    assert pub.wait_for_subscribers(2, WAIT)
    texts = [f"message {i}" + "!" * (i % 5) for i in range(10)]
    for text in texts:
        pub.publish(string(text))
    assert b.spin_until(lambda: len(got) == len(raw) == 10, WAIT)
    assert got == texts
    assert raw == [cdr.serialize(string(t), STRING) for t in texts]


def test_latched_topic_reaches_a_late_subscriber(dds_buses) -> None:
    a = dds_buses("a")
    pub = a.create_publisher("map", STRING, LATCHED)
    pub.publish(string("old"))
    pub.publish(string("current"))
    b = dds_buses("b")
    got: list[str] = []
    b.create_subscription("map", STRING, lambda m: got.append(m.data), LATCHED)
    assert b.spin_until(lambda: got == ["current"], WAIT)


def test_best_effort_publisher_does_not_match_a_reliable_subscription(dds_buses) -> None:
    a, b = dds_buses("a"), dds_buses("b")
    sub = b.create_subscription("s", STRING, print, DEFAULT)
    best_effort = a.create_publisher("s", STRING, SENSOR_DATA)
    reliable = a.create_publisher("s", STRING, DEFAULT)
    assert reliable.wait_for_subscribers(1, WAIT)
    assert best_effort.subscription_count == 0 and sub.publisher_count == 1


def test_malformed_samples_from_the_wire_are_dropped_and_counted(dds_buses, caplog) -> None:
    a, b = dds_buses("a"), dds_buses("b")
    got: list[str] = []
    sub = b.create_subscription(
        "camera/image", IMAGE, lambda m: got.append(m.header.frame_id), DEFAULT
    )
    pub = a.create_publisher("camera/image", IMAGE, DEFAULT)
    assert pub.wait_for_subscribers(1, WAIT) and b.spin_until(lambda: sub.publisher_count, WAIT)
    good = cdr.serialize(peer.make_image(1, 8, 4), IMAGE)
    # Cyclone checks the structure of what it is given: these pass it but are not valid messages
    pub.publish(peer.make_image(0, 8, 4))
    pub.publish(good[:-3])  # truncated (the missing bytes hide in the padding)
    pub.publish(good + b"trailing garbage")  # wrong length
    # header: 4 encapsulation, 8 stamp, 4 length of frame_id, then frame_id "1"
    assert good[12:18] == b"\x02\x00\x00\x001\x00"
    pub.publish(good[:16] + b"\xff" + good[17:])  # frame_id not UTF-8
    pub.publish(good)
    assert b.spin_until(lambda: len(got) == 2 and sub.dropped == 3, WAIT)
    assert got == ["0", "1"] and sub.received == 2
    assert "dropped a malformed message on /camera/image [sensor_msgs/msg/Image]" in caplog.text
    # and what Cyclone itself refuses to send is an error at the publisher, not a crash later
    for bad in (b"garbage", cdr.serialize(string("a String"), STRING)):
        with pytest.raises(TransportError, match="Cyclone DDS refused the sample"):
            pub.publish(bad)
    pub.publish(good)
    assert b.spin_until(lambda: len(got) == 3, WAIT)


def test_sim_time_over_dds(dds_buses) -> None:
    player, node = dds_buses("player"), dds_buses("node", use_sim_time=True)
    clock = player.create_publisher("/clock", "rosgraph_msgs/msg/Clock", DEFAULT)
    assert clock.wait_for_subscribers(1, WAIT)
    stamp = msg_class("builtin_interfaces/msg/Time")(sec=1234, nanosec=5)
    clock.publish(msg_class("rosgraph_msgs/msg/Clock")(clock=stamp))
    assert node.spin_until(lambda: node.now_ns() == 1234 * 10**9 + 5, WAIT)


def test_domain_and_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROS_DOMAIN_ID", "42")
    assert domain_id_from_env() == 42
    monkeypatch.delenv("ROS_DOMAIN_ID")
    assert domain_id_from_env() == 0
    monkeypatch.setenv("ROS_DOMAIN_ID", "robot")
    with pytest.raises(TransportError, match="ROS_DOMAIN_ID='robot' is not an integer"):
        domain_id_from_env()
    with pytest.raises(TransportError, match="domain id 300 is outside"):
        create_bus("dds", "n", domain_id=300)

    monkeypatch.setenv("CYCLONEDDS_URI", "file:///etc/mine.xml")
    assert use_loopback_config() == "file:///etc/mine.xml"  # an explicit choice is kept
    monkeypatch.delenv("CYCLONEDDS_URI")
    uri = use_loopback_config()
    assert uri == os.environ["CYCLONEDDS_URI"] and uri.endswith("config/cyclonedds_loopback.xml")
    text = loopback_config_path().read_text()
    for setting in ('name="lo"', "<AllowMulticast>false", 'Peer address="127.0.0.1"'):
        assert setting in text


def test_shutdown_releases_the_participant(dds_buses) -> None:
    a = dds_buses("a")
    a.create_subscription("s", STRING, print)
    pub = a.create_publisher("s", STRING)
    a.shutdown()
    assert pub.subscription_count == 0
    with pytest.raises(TransportError, match="shut down"):
        pub.publish(string("late"))


# --------------------------------------------------------------------------------------------
# separate processes


Peers = peer.Peers
peers = peer.peers


def wait_for_file(path: Path, timeout: float) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.05)
    return None


N_FRAMES = 30
W, H = 640, 480


def collect(bus: Any, topic: str, name: str) -> tuple[list[tuple[int, int]], Any]:
    frames: list[tuple[int, int]] = []
    sub = bus.create_subscription(
        topic,
        IMAGE,
        lambda m: frames.append((int(m.header.frame_id), peer.checksum(m.data))),
        DEFAULT,
    )
    return frames, sub


def expected() -> list[tuple[int, int]]:
    return list(enumerate(peer.expected_checksums(N_FRAMES, W, H)))


@pytest.mark.slow
def test_two_processes_exchange_images_reliably(domain: int, tmp_path: Path) -> None:
    with peers(tmp_path) as group, create_bus("dds", "collector") as bus:
        frames, sub = collect(bus, "/images", "collector")
        group.start("pub", "--count", str(N_FRAMES), "--rate", "50", "--ready", "1")
        assert peer.announce_ready(bus, "collector", sub, WAIT), group.logs()
        done = bus.spin_until(lambda: len(frames) >= N_FRAMES, WAIT)
        assert done, f"{len(frames)}/{N_FRAMES} frames\n{group.logs()}"
        assert frames == expected()  # all, in order, pixels intact
        assert sub.dropped == 0
        t0 = time.monotonic()
        assert group.stop_all() == [0], group.logs()
        assert time.monotonic() - t0 < 10
        assert "pub: sent 30" in group.logs()


@pytest.mark.slow
def test_three_processes_one_publisher_two_subscribers(domain: int, tmp_path: Path) -> None:
    outs = [tmp_path / "sub_a.json", tmp_path / "sub_b.json"]
    with peers(tmp_path) as group:
        for name, out in zip(("sub_a", "sub_b"), outs, strict=True):
            group.start("sub", "--count", str(N_FRAMES), "--out", str(out), "--name", name)
        group.start("pub", "--count", str(N_FRAMES), "--rate", "50", "--ready", "2")
        results = [wait_for_file(out, WAIT + 40) for out in outs]
        codes = group.stop_all()
        logs = group.logs()
    for result, name in zip(results, ("sub_a", "sub_b"), strict=True):
        assert result is not None, f"{name} wrote no result\n{logs}"
        assert [tuple(f) for f in result["frames"]] == expected(), f"{name}\n{logs}"
        assert result["dropped"] == 0
    assert codes == [0, 0, 0], logs


@pytest.mark.slow
def test_relay_chain_across_three_processes(domain: int, tmp_path: Path) -> None:
    with peers(tmp_path) as group, create_bus("dds", "collector") as bus:
        frames, sub = collect(bus, "/relayed", "collector")
        group.start("relay", "--topic-in", "/images", "--topic-out", "/relayed", "--name", "relay")
        group.start(
            "pub", "--count", str(N_FRAMES), "--rate", "50", "--ready", "2", "--matched", "1"
        )
        assert peer.announce_ready(bus, "collector", sub, WAIT), group.logs()
        done = bus.spin_until(lambda: len(frames) >= N_FRAMES, WAIT)
        assert done, f"{len(frames)}/{N_FRAMES} frames\n{group.logs()}"
        assert frames == expected()
        assert group.stop_all() == [0, 0], group.logs()


def test_peer_checksums_are_deterministic() -> None:
    a = peer.expected_checksums(3, 8, 4)
    assert a == peer.expected_checksums(3, 8, 4) and len(set(a)) == 3
    img = peer.make_image(2, 8, 4)
    assert peer.checksum(img.data) == a[2]
    assert re.fullmatch(r"\d+", img.header.frame_id)
    assert np.asarray(img.data).size == 8 * 4 * 3
