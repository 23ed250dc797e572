"""The ros binding against rclpy (skips where ROS 2 is absent), and the promise that nothing
imports rclpy unless the ros binding is chosen (runs everywhere)."""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from vad_inspection.msgs import cdr
from vad_inspection.msgs.types import msg_class
from vad_inspection.transport import DEFAULT, LATCHED, SENSOR_DATA, QoS, create_bus

ROOT = Path(__file__).resolve().parents[1]
HAVE_RCLPY = importlib.util.find_spec("rclpy") is not None
needs_rclpy = pytest.mark.skipif(
    not HAVE_RCLPY,
    reason="rclpy not installed (no ROS 2 here): the ros binding is tested on a ROS 2 host",
)
STRING = "std_msgs/msg/String"


def test_bindings_are_imported_only_when_chosen(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from vad_inspection.transport import create_bus
        with create_bus("local", "a"):
            pass
        assert "cyclonedds" not in sys.modules  # nor Cyclone DDS unless dds is chosen
        with create_bus("dds", "b", domain_id={random.randint(1, 230)}, loopback=True):
            pass
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("rclpy", "rcl_interfaces"))
        assert not leaked, leaked
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("CYCLONEDDS_URI", None)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.skipif(HAVE_RCLPY, reason="rclpy is installed here")
def test_choosing_ros_without_rclpy_says_what_to_do() -> None:
    message = r"the 'ros' transport needs rclpy .* use the 'dds' transport"
    with pytest.raises(ImportError, match=message):
        create_bus("ros", "node")


# --------------------------------------------------------------------------------------------
# with rclpy


@pytest.fixture
def ros_buses():
    made: list[Any] = []

    def make(name: str, **options: Any) -> Any:
        bus = create_bus("ros", name, **options)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.shutdown()


@pytest.mark.ros
@needs_rclpy
def test_qos_maps_one_to_one() -> None:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy

    from vad_inspection.transport.ros import ros_qos

    sensor = ros_qos(SENSOR_DATA)
    assert sensor.reliability == ReliabilityPolicy.BEST_EFFORT and sensor.depth == 5
    latched = ros_qos(LATCHED)
    assert latched.durability == DurabilityPolicy.TRANSIENT_LOCAL and latched.depth == 1
    assert ros_qos(QoS(history="keep_all")).history == HistoryPolicy.KEEP_ALL
    assert ros_qos(DEFAULT).reliability == ReliabilityPolicy.RELIABLE


@pytest.mark.ros
@needs_rclpy
def test_raw_cdr_round_trip_between_two_nodes(ros_buses) -> None:
    a, b = ros_buses("talker"), ros_buses("listener")
    got: list[str] = []
    raw: list[bytes] = []
    sub = b.create_subscription("chatter", STRING, lambda m: got.append(m.data), DEFAULT)
    b.create_subscription("chatter", STRING, raw.append, DEFAULT, raw=True)
    pub = a.create_publisher("chatter", STRING, DEFAULT)
    assert pub.wait_for_subscribers(2, 10)
    texts = [f"hello {i}" for i in range(5)]
    for text in texts:
        pub.publish(msg_class(STRING)(data=text))
    pub.publish(b"\x00\x01\x00\x00\xff\xff\xff\x7f")  # a String claiming 2 GB: dropped
    pub.publish(msg_class(STRING)(data="after"))

    def spin_both() -> bool:  # rclpy runs one callback per spin_once
        a.spin_once(0.01)
        b.spin_once(0.01)
        return len(got) == 6 and len(raw) == 7

    for _ in range(1000):
        if spin_both():
            break
    assert got == [*texts, "after"]
    assert raw[0] == cdr.serialize(msg_class(STRING)(data="hello 0"), STRING)
    assert sub.dropped == 1


@pytest.mark.ros
@needs_rclpy
def test_parameters_are_declared_on_the_node(ros_buses, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("detector:\n  ros__parameters:\n    threshold: 0.4\n    ids: []\n")
    bus = ros_buses("detector", params_file=path)
    assert bus.parameters.declare("threshold", 0.5, description="score cut") == 0.4
    assert bus.parameters.declare("ids", [], type=list[int]) == []
    assert bus.parameters.declare("frame", "map", read_only=True) == "map"
    described = bus.node.describe_parameter("threshold")
    assert described.description == "score cut" and described.type == 3  # DOUBLE
    assert bus.node.get_parameter("threshold").value == 0.4
    bus.parameters.set("threshold", 0.6)
    assert bus.node.get_parameter("threshold").value == 0.6


@pytest.mark.ros
@needs_rclpy
def test_ros_node_and_dds_bus_interoperate(ros_buses) -> None:
    if os.environ.get("RMW_IMPLEMENTATION", "rmw_cyclonedds_cpp") != "rmw_cyclonedds_cpp":
        pytest.skip("interop is checked against rmw_cyclonedds_cpp")
    ros = ros_buses("ros_side")
    with create_bus("dds", "dds_side") as dds:
        got: list[str] = []
        ros.create_subscription("/interop", STRING, lambda m: got.append(m.data), DEFAULT)
        pub = dds.create_publisher("/interop", STRING, DEFAULT)
        assert pub.wait_for_subscribers(1, 20)
        pub.publish(msg_class(STRING)(data="from the dds binding"))
        for _ in range(500):
            ros.spin_once(0.02)
            if got:
                break
        assert got == ["from the dds binding"]
