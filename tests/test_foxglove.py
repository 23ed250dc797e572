"""The Foxglove bridge end to end: a local bus publishes an Image and an OccupancyGrid, the bridge
serves them on a free port, and a plain ``websockets`` client speaking the Foxglove WebSocket
protocol checks the advertised channels and receives the published CDR bytes unchanged, stamped
with the message's header stamp. Every wait has a timeout."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets

from vad_inspection.msgs import (
    Frame,
    MessageError,
    deserialize,
    frame_to_msg,
    grid_to_msg,
    msg_class,
    serialize,
)
from vad_inspection.transport import BagWriter, Bus, create_bus
from vad_inspection.transport.foxglove import SUBPROTOCOL, FoxgloveBridge, message_definition
from vad_inspection.transport.local import LocalGraph

pytestmark = pytest.mark.timeout(60)

IMAGE = "sensor_msgs/msg/Image"
GRID = "nav_msgs/msg/OccupancyGrid"
STRING = "std_msgs/msg/String"
IMAGE_TOPIC = "/camera/image_raw"
GRID_TOPIC = "/hazard/grid"
STATUS_TOPIC = "/status"
IMAGE_STAMP = 1_700_000_000_123_456_789
GRID_STAMP = 1_700_000_001_000_000_500
DATA_OP = 0x01
STEP_S = 0.2  # how long one round waits for data before publishing again


def _spin(bus: Bus) -> None:
    """Run every callback that is ready (the bridge forwards inside its subscriptions')."""
    while bus.spin_once(0.0):
        pass


async def _next_text(ws: Any, op: str, timeout: float) -> dict[str, Any]:
    """The next JSON message with ``op``; binary frames and other ops are skipped."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await asyncio.wait_for(ws.recv(), max(0.0, deadline - time.monotonic()))
        if isinstance(frame, str) and json.loads(frame)["op"] == op:
            return json.loads(frame)


async def _advertised(ws: Any, topics: set[str], timeout: float = 10.0) -> dict[str, dict]:
    """Collect ``advertise`` ops until every topic in ``topics`` has a channel: topic -> it."""
    channels: dict[str, dict] = {}
    while not topics <= channels.keys():
        for channel in (await _next_text(ws, "advertise", timeout))["channels"]:
            channels[channel["topic"]] = channel
    return channels


async def _receive(
    ws: Any, bus: Bus, publish: dict[int, Any], timeout: float = 20.0
) -> dict[int, tuple[int, bytes]]:
    """Publish (``publish``: subscription id -> a no-argument publish call), spin the bridge's
    bus and read data frames until each subscription got one: id -> (log time, payload).

    The protocol has no subscribe acknowledgement, so messages published before the server has
    processed the subscription are not sent: publish again each round until everything arrived.
    """
    got: dict[int, tuple[int, bytes]] = {}
    deadline = time.monotonic() + timeout
    while got.keys() != publish.keys():
        assert time.monotonic() < deadline, f"no data for subscriptions {publish.keys() - got}"
        for sid, send in publish.items():
            if sid not in got:
                send()
        _spin(bus)
        step_end = time.monotonic() + STEP_S
        while got.keys() != publish.keys() and time.monotonic() < step_end:
            try:
                frame = await asyncio.wait_for(ws.recv(), step_end - time.monotonic())
            except asyncio.TimeoutError:
                break
            if isinstance(frame, bytes) and frame[0] == DATA_OP:
                sid, log_time = struct.unpack_from("<IQ", frame, 1)
                got.setdefault(sid, (log_time, frame[13:]))
    return got


def _image_cdr() -> bytes:
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    return serialize(frame_to_msg(Frame(pixels, "rgb8", IMAGE_STAMP, "cam")), IMAGE)


def _grid_cdr() -> bytes:
    cells = np.array([[0, 100, -1, 50], [1, 2, 3, 4], [-1, -1, 0, 0]], dtype=np.int8)
    return serialize(grid_to_msg(cells, 0.5, (0.0, 0.0, 0.0), "map", GRID_STAMP), GRID)


def _string_cdr(text: str) -> bytes:
    return serialize(msg_class(STRING)(data=text), STRING)


def test_bridge_streams_published_cdr_with_header_stamps() -> None:
    image, grid, status = _image_cdr(), _grid_cdr(), _string_cdr("all good")
    graph = LocalGraph()
    with (
        create_bus("local", "robot", graph=graph) as robot,
        create_bus("local", "viewer", graph=graph) as viewer,
    ):
        image_pub = robot.create_publisher(IMAGE_TOPIC, IMAGE)
        grid_pub = robot.create_publisher(GRID_TOPIC, GRID)
        status_pub = robot.create_publisher(STATUS_TOPIC, STRING)
        bridge = FoxgloveBridge(viewer, [(IMAGE_TOPIC, IMAGE), (GRID_TOPIC, GRID)], port=0)
        assert bridge.port is None
        with bridge:
            port = bridge.start()  # idempotent: the port already bound
            assert port == bridge.port and port > 0

            async def session() -> None:
                url = f"ws://127.0.0.1:{port}"
                async with websockets.connect(
                    url, subprotocols=[SUBPROTOCOL], open_timeout=10, close_timeout=2
                ) as ws:
                    assert ws.subprotocol == SUBPROTOCOL
                    info = await _next_text(ws, "serverInfo", 10)
                    assert info["name"].startswith("vad_inspection")
                    channels = await _advertised(ws, {IMAGE_TOPIC, GRID_TOPIC})
                    for topic, typename in ((IMAGE_TOPIC, IMAGE), (GRID_TOPIC, GRID)):
                        channel = channels[topic]
                        assert channel["encoding"] == "cdr"
                        assert channel["schemaName"] == typename
                        assert channel["schemaEncoding"] == "ros2msg"
                        assert channel["schema"] == message_definition(typename)[1]
                    assert "MSG: std_msgs/Header" in channels[IMAGE_TOPIC]["schema"]
                    assert "MSG: nav_msgs/MapMetaData" in channels[GRID_TOPIC]["schema"]

                    subscriptions = [
                        {"id": 1, "channelId": channels[IMAGE_TOPIC]["id"]},
                        {"id": 2, "channelId": channels[GRID_TOPIC]["id"]},
                    ]
                    await ws.send(json.dumps({"op": "subscribe", "subscriptions": subscriptions}))
                    got = await _receive(
                        ws,
                        viewer,
                        {1: lambda: image_pub.publish(image), 2: lambda: grid_pub.publish(grid)},
                    )
                    (image_time, image_payload), (grid_time, grid_payload) = got[1], got[2]
                    assert image_payload == image
                    assert image_time == IMAGE_STAMP
                    msg = deserialize(image_payload, IMAGE)
                    assert (msg.width, msg.height, msg.encoding) == (6, 4, "rgb8")
                    assert bytes(msg.data) == bytes(np.arange(72, dtype=np.uint8))
                    assert grid_payload == grid
                    assert grid_time == GRID_STAMP
                    cells = deserialize(grid_payload, GRID)
                    assert (cells.info.width, cells.info.height) == (4, 3)
                    assert cells.data.tolist() == [0, 100, -1, 50, 1, 2, 3, 4, -1, -1, 0, 0]

                    # a topic found later: advertised to the connected client at once; a type
                    # without a header is logged at the bus clock's now
                    bridge.add_topic(STATUS_TOPIC, "std_msgs/String")
                    assert bridge.topics[STATUS_TOPIC] == STRING
                    late = (await _advertised(ws, {STATUS_TOPIC}))[STATUS_TOPIC]
                    assert late["schemaName"] == STRING
                    assert late["schema"] == "string data\n"
                    status_sub = {"id": 3, "channelId": late["id"]}
                    await ws.send(json.dumps({"op": "subscribe", "subscriptions": [status_sub]}))
                    before = viewer.now_ns()
                    got = await _receive(ws, viewer, {3: lambda: status_pub.publish(status)})
                    status_time, status_payload = got[3]
                    assert status_payload == status
                    assert before <= status_time <= viewer.now_ns()

            asyncio.run(asyncio.wait_for(session(), 45))
        assert bridge.port is None
        assert viewer.subscriptions == []
        bridge.stop()  # twice is fine


def test_unknown_type_is_named_before_anything_starts() -> None:
    with create_bus("local", "viewer", graph=LocalGraph()) as bus:
        with pytest.raises(MessageError, match="no_such_pkg/msg/Nope"):
            FoxgloveBridge(bus, [(IMAGE_TOPIC, IMAGE), ("/x", "no_such_pkg/msg/Nope")], port=0)
        assert bus.subscriptions == []
        bridge = FoxgloveBridge(bus, [], port=0)
        with pytest.raises(MessageError, match="other_pkg/msg/Missing"):
            bridge.add_topic("/y", "other_pkg/msg/Missing")
        assert bridge.topics == {}


def test_schema_is_the_definition_a_bag_stores(tmp_path: Path) -> None:
    """The live schema is byte for byte what BagWriter puts in the bag's MCAP schema."""
    from rosbags.rosbag2 import Reader

    bag = tmp_path / "bag"
    with BagWriter(bag) as writer:
        writer.add_topic(IMAGE_TOPIC, IMAGE)
        writer.write(IMAGE_TOPIC, IMAGE_STAMP, _image_cdr())
    with Reader(bag) as reader:
        stored = reader.connections[0].msgdef.data
    assert message_definition(IMAGE) == ("ros2msg", stored)
