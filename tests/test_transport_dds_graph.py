"""The dds binding as a ROS 2 graph citizen, checked the way ROS 2 would see it: through a plain
Cyclone DDS participant that reads ``ros_discovery_info`` and the DDS builtin topics itself.

What rmw_cyclonedds_cpp does and these tests hold the binding to (rmw_node.cpp, humble and jazzy
branches; rmw_dds_common graph_cache.cpp and qos.cpp): participant USER_DATA ``enclave=/;``; a
ParticipantEntitiesInfo on ``ros_discovery_info`` naming the node and its endpoints' GIDs (the
16-byte GUID, zero-padded to 24 bytes on Humble); ``typehash=RIHS01_...;`` in endpoint USER_DATA
on Jazzy; transient-local history kept for late joiners at the endpoint's depth; and, like rclpy,
a warning when a peer is refused for incompatible QoS.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

cy = pytest.importorskip("vad_inspection.transport._cyclone", exc_type=ImportError)

import transport_peer as peer  # noqa: E402
from cyclonedds.builtin import (  # noqa: E402
    BuiltinDataReader,
    BuiltinTopicDcpsParticipant,
    BuiltinTopicDcpsPublication,
    BuiltinTopicDcpsSubscription,
)
from cyclonedds.core import Policy, Qos  # noqa: E402
from cyclonedds.util import duration  # noqa: E402

from vad_inspection.msgs import cdr  # noqa: E402
from vad_inspection.msgs.types import msg_class, typestore  # noqa: E402
from vad_inspection.transport import (  # noqa: E402
    DEFAULT,
    LATCHED,
    SENSOR_DATA,
    QoS,
    create_bus,
)
from vad_inspection.transport import graph_info as gi  # noqa: E402

STRING = "std_msgs/msg/String"
IMAGE = "sensor_msgs/msg/Image"
WAIT = 30.0  # s: generous bound for discovery on a loaded 2-core box


class Observer:
    """A plain Cyclone DDS participant in the role of a ROS 2 process: it reads
    ``ros_discovery_info`` as rmw_cyclonedds subscribes it (reliable, transient local, keep all)
    and the DCPSParticipant/Publication/Subscription builtin topics. Nothing of the binding's
    own QoS or GID code is used here."""

    def __init__(self, domain: int, distro: str = "jazzy") -> None:
        self.distro = distro
        self.participant = cy.DomainParticipant(domain)
        topic = cy.Topic(
            self.participant, "ros_discovery_info", cy.idl_class(gi.DISCOVERY_TYPE, distro)
        )
        qos = Qos(
            Policy.Reliability.Reliable(duration(seconds=1)),
            Policy.Durability.TransientLocal,
            Policy.History.KeepAll,
            Policy.DataRepresentation(use_cdrv0_representation=True),
        )
        self.reader = cy.DataReader(self.participant, topic, qos)
        self._builtin = {
            "participants": BuiltinDataReader(self.participant, BuiltinTopicDcpsParticipant),
            "publications": BuiltinDataReader(self.participant, BuiltinTopicDcpsPublication),
            "subscriptions": BuiltinDataReader(self.participant, BuiltinTopicDcpsSubscription),
        }
        self.infos: dict[bytes, Any] = {}  # participant GID -> latest ParticipantEntitiesInfo
        self.history: list[Any] = []
        self.seen: dict[str, dict[uuid.UUID, Any]] = {k: {} for k in self._builtin}

    def poll(self) -> None:
        for data in cy.take(self.reader, 64):
            msg = cdr.deserialize(data, gi.DISCOVERY_TYPE, self.distro)
            self.infos[bytes(msg.gid.data)] = msg
            self.history.append(msg)
        for kind, reader in self._builtin.items():
            for sample in reader.take(N=64):
                self.seen[kind][sample.key] = sample

    def wait(self, predicate: Callable[[], Any], timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            result = predicate()
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.02)

    def endpoint(self, kind: str, topic: str) -> Any:
        """The one discovered publication/subscription on DDS topic ``topic``, or None."""
        found = [s for s in self.seen[kind].values() if s.topic_name == topic]
        return found[0] if len(found) == 1 else None

    def endpoints_of(self, participant_key: uuid.UUID) -> dict[str, set[bytes]]:
        """GUIDs of a participant's user endpoints (ros_discovery_info's own writer excluded,
        as rmw_cyclonedds does not list it under a node)."""
        return {
            kind: {
                s.key.bytes
                for s in self.seen[kind].values()
                if s.participant_key == participant_key and s.topic_name != "ros_discovery_info"
            }
            for kind in ("publications", "subscriptions")
        }

    def close(self) -> None:
        cy.delete(self.participant)


@pytest.fixture
def observe(domain: int):
    made: list[Observer] = []

    def make(distro: str = "jazzy") -> Observer:
        obs = Observer(domain, distro)
        made.append(obs)
        return obs

    yield make
    for obs in made:
        obs.close()


def padded(guid: uuid.UUID | bytes, distro: str) -> bytes:
    """A GUID as rmw_cyclonedds's convert_guid_to_gid lays it in rmw_gid_t (memcpy of the 16
    bytes, memset 0 of the rest), written out independently of graph_info.gid_bytes."""
    raw = guid.bytes if isinstance(guid, uuid.UUID) else guid
    return raw + b"\x00" * ({"humble": 24, "jazzy": 16}[distro] - 16)


# --------------------------------------------------------------------------------------------
# graph_info: the pure rules


def test_user_data_formats_as_rmw_cyclonedds_writes_them() -> None:
    assert gi.participant_user_data() == b"enclave=/;"
    string_hash = "RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18"
    assert gi.type_hash(STRING, "jazzy") == string_hash  # `ros2 topic info -v` on Jazzy
    assert gi.endpoint_user_data(STRING, "jazzy") == f"typehash={string_hash};".encode()
    assert gi.endpoint_user_data(STRING, "jazzy", "clientid=1.2;") == (
        f"clientid=1.2;typehash={string_hash};".encode()
    )
    assert gi.type_hash(STRING, "humble") is None
    assert gi.endpoint_user_data(STRING, "humble") is None  # Humble endpoints carry none
    assert gi.endpoint_user_data(STRING, "humble", "clientid=1.2;") == b"clientid=1.2;"
    assert gi.parse_user_data(b"enclave=/;typehash=RIHS01_ab;junk;") == {
        "enclave": "/",
        "typehash": "RIHS01_ab",
    }
    assert gi.parse_user_data(None) == {}


def test_type_hash_is_rosbags_except_that_char_is_hashed_as_uint8() -> None:
    store = typestore("jazzy")
    for typename in (STRING, IMAGE, "nav_msgs/msg/OccupancyGrid"):
        assert gi.type_hash(typename, "jazzy") == store.hash_rihs01(typename)
    # rosidl_adapter turns `char` into IDL uint8 before hashing; the value ROS 2 Jazzy publishes
    # for std_msgs/msg/Char (the same in several independent type-hash tables):
    char_hash = "RIHS01_3ad2d04dd29ba19d04b16659afa3ccaedd691914b02a64e82e252f2fa6a586a9"
    assert gi.type_hash("std_msgs/msg/Char", "jazzy") == char_hash
    assert store.hash_rihs01("std_msgs/msg/Char") != char_hash  # rosbags' own reading of char
    # Gid is char[16]: the discovery type is affected through its nested Gid
    assert gi.type_hash(gi.DISCOVERY_TYPE, "jazzy") != store.hash_rihs01(gi.DISCOVERY_TYPE)


@pytest.mark.parametrize(("distro", "size"), [("humble", 24), ("jazzy", 16)])
def test_gids_and_the_discovery_message(distro: str, size: int) -> None:
    guid = uuid.UUID("0110c6d8-6432-2b66-c6d3-80f500000203")
    assert gi.gid_size(distro) == size
    assert gi.gid_bytes(guid, distro) == padded(guid, distro)
    with pytest.raises(ValueError, match="16 bytes"):
        gi.gid_bytes(b"short", distro)
    ppant = gi.gid_bytes(uuid.uuid4(), distro)
    node = gi.NodeEntities("/robot1", "camera", [gi.gid_bytes(guid, distro)], [])
    data = gi.encode_participant_entities_info(ppant, [node], distro)
    msg = cdr.deserialize(data, gi.DISCOVERY_TYPE, distro)
    assert bytes(msg.gid.data) == ppant
    (info,) = msg.node_entities_info_seq
    assert (info.node_namespace, info.node_name) == ("/robot1", "camera")
    assert [bytes(g.data) for g in info.reader_gid_seq] == [padded(guid, distro)]
    assert info.writer_gid_seq == []


def test_incompatible_qos_messages_name_topic_and_policy() -> None:
    text = gi.incompatible_qos_message("/camera/image", 11, DEFAULT, is_reader=True)
    assert text.startswith("/camera/image: a publisher offers RELIABILITY incompatible")
    assert "this subscription's reliable request" in text
    text = gi.incompatible_qos_message("/map", 2, LATCHED, is_reader=False)
    assert "a subscription requests DURABILITY" in text
    assert "this publisher's transient local offer" in text
    assert "DEADLINE" in gi.incompatible_qos_message("/t", 4, None, True, "service server")
    assert "QoS policy 99" in gi.incompatible_qos_message("/t", 99, None, True)


# --------------------------------------------------------------------------------------------
# on the wire


@pytest.mark.parametrize("distro", ["jazzy", "humble"])
def test_ros_discovery_info_names_the_node_and_its_endpoint_gids(
    dds_buses, observe, distro: str
) -> None:
    node = dds_buses("camera", namespace="robot1", distro=distro)
    image = node.create_publisher("image_raw", IMAGE, SENSOR_DATA)
    node.create_publisher("~/status", STRING, DEFAULT)
    node.create_subscription("/cmd", STRING, print, DEFAULT)
    obs = observe(distro)

    # what DDS discovery alone says about the node's participant and endpoints
    assert obs.wait(lambda: obs.endpoint("publications", "rt/robot1/image_raw")), obs.seen
    ppant_key = obs.endpoint("publications", "rt/robot1/image_raw").participant_key
    expected = {}

    def complete() -> bool:
        eps = obs.endpoints_of(ppant_key)
        expected.update(eps)
        info = obs.infos.get(padded(ppant_key, distro))
        return bool(
            info
            and len(eps["publications"]) >= 2
            and len(eps["subscriptions"]) >= 1
            and len(info.node_entities_info_seq) == 1
            and len(info.node_entities_info_seq[0].writer_gid_seq) == len(eps["publications"])
            and len(info.node_entities_info_seq[0].reader_gid_seq) == len(eps["subscriptions"])
        )

    assert obs.wait(complete), (obs.infos, expected)
    info = obs.infos[padded(ppant_key, distro)]
    (entry,) = info.node_entities_info_seq
    assert (entry.node_namespace, entry.node_name) == ("/robot1", "camera")
    writers = {bytes(g.data) for g in entry.writer_gid_seq}
    readers = {bytes(g.data) for g in entry.reader_gid_seq}
    # every endpoint the participant has on DDS is listed, GUID laid out as rmw_cyclonedds does
    assert writers == {padded(k, distro) for k in expected["publications"]}
    assert readers == {padded(k, distro) for k in expected["subscriptions"]}
    image_guid = obs.endpoint("publications", "rt/robot1/image_raw").key
    assert padded(image_guid, distro) in writers
    assert padded(image.writer.guid, distro) in writers  # and it is the writer's own GUID

    # the discovery writer's QoS is rmw_cyclonedds's: reliable, transient local, keep last 1
    disc = obs.endpoint("publications", "ros_discovery_info")
    assert disc.type_name == "rmw_dds_common::msg::dds_::ParticipantEntitiesInfo_"
    assert isinstance(disc.qos[Policy.Reliability], Policy.Reliability.Reliable)
    assert disc.qos[Policy.Durability] == Policy.Durability.TransientLocal
    assert disc.qos[Policy.History] == Policy.History.KeepLast(1)
    assert disc.qos[Policy.DurabilityService].history == Policy.History.KeepLast(1)

    # destroying a publisher is announced
    image.destroy()

    def updated() -> bool:
        entry = obs.infos[padded(ppant_key, distro)].node_entities_info_seq[0]
        return len(entry.writer_gid_seq) == len(writers) - 1

    assert obs.wait(updated), obs.infos
    entry = obs.infos[padded(ppant_key, distro)].node_entities_info_seq[0]
    assert {bytes(g.data) for g in entry.writer_gid_seq} == writers - {padded(image_guid, distro)}
    assert {bytes(g.data) for g in entry.reader_gid_seq} == readers

    # shutdown announces the node gone before the participant leaves
    node.shutdown()
    assert obs.wait(lambda: obs.history[-1].node_entities_info_seq == []), obs.history[-1]


def test_user_data_enclave_and_jazzy_type_hashes(dds_buses, observe) -> None:
    jazzy = dds_buses("jazzy_node", distro="jazzy")
    jazzy.create_publisher("/chatter", STRING, DEFAULT)
    jazzy.create_subscription("/image", IMAGE, print, SENSOR_DATA)
    obs = observe()
    assert obs.wait(
        lambda: (
            obs.endpoint("publications", "rt/chatter")
            and obs.endpoint("subscriptions", "rt/image")
            and obs.endpoint("publications", "ros_discovery_info")
        )
    ), obs.seen
    pub = obs.endpoint("publications", "rt/chatter")
    assert obs.wait(lambda: pub.participant_key in obs.seen["participants"])
    ppant = obs.seen["participants"][pub.participant_key]
    assert ppant.qos[Policy.Userdata].data == b"enclave=/;"

    store = typestore("jazzy")
    assert pub.qos[Policy.Userdata].data == f"typehash={store.hash_rihs01(STRING)};".encode()
    sub = obs.endpoint("subscriptions", "rt/image")
    assert sub.qos[Policy.Userdata].data == f"typehash={store.hash_rihs01(IMAGE)};".encode()
    disc = obs.endpoint("publications", "ros_discovery_info")
    assert gi.parse_user_data(disc.qos[Policy.Userdata].data)["typehash"].startswith("RIHS01_")


def test_humble_endpoints_carry_no_type_hash(dds_buses, observe) -> None:
    humble = dds_buses("humble_node", distro="humble")
    humble.create_publisher("/chatter", STRING, DEFAULT)
    obs = observe("humble")
    assert obs.wait(lambda: obs.endpoint("publications", "rt/chatter")), obs.seen
    pub = obs.endpoint("publications", "rt/chatter")
    assert pub.qos[Policy.Userdata] is None
    assert obs.wait(lambda: pub.participant_key in obs.seen["participants"])
    ppant = obs.seen["participants"][pub.participant_key]
    assert ppant.qos[Policy.Userdata].data == b"enclave=/;"  # Humble sets the enclave too


def test_late_transient_local_subscriber_gets_depth_samples(dds_buses) -> None:
    keep5 = QoS("reliable", "transient_local", "keep_last", 5)
    pub = dds_buses("talker").create_publisher("/log", STRING, keep5)
    for i in range(8):
        pub.publish(msg_class(STRING)(data=str(i)))
    late = dds_buses("late")
    got: list[str] = []
    late.create_subscription("/log", STRING, lambda m: got.append(m.data), keep5)
    assert late.spin_until(lambda: len(got) >= 5, WAIT), got
    late.spin_until(lambda: len(got) > 5, 0.5)  # nothing more may come
    assert got == ["3", "4", "5", "6", "7"]


def _records(caplog: pytest.LogCaptureFixture, logger: str, *needles: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == logger and all(n in r.getMessage() for n in needles)
    ]


@pytest.mark.slow
def test_incompatible_qos_is_logged_once_per_endpoint_and_policy(
    dds_buses, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING")
    listener, talker, other = dds_buses("listener"), dds_buses("talker"), dds_buses("other")
    sub = listener.create_subscription("/camera/image", STRING, print, DEFAULT)
    talker.create_publisher("/camera/image", STRING, SENSOR_DATA)  # best effort: refused

    def spin_all(predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            for bus in (listener, talker, other):
                bus.spin_once(0.02)
        return True

    def warned() -> bool:
        return bool(
            _records(caplog, "listener", "/camera/image", "RELIABILITY")
            and _records(caplog, "talker", "/camera/image", "RELIABILITY")
        )

    assert spin_all(warned, WAIT), caplog.text
    # a second best-effort publisher is refused too, but the policy was already reported
    other.create_publisher("/camera/image", STRING, SENSOR_DATA)
    spin_all(lambda: False, 2.5)  # more than two status checks
    (text,) = _records(caplog, "listener", "/camera/image", "RELIABILITY")
    assert text.startswith("/camera/image: a publisher offers RELIABILITY incompatible")
    assert "subscription's reliable request" in text
    (offered,) = _records(caplog, "talker", "/camera/image")
    assert "a subscription requests RELIABILITY" in offered
    assert len(_records(caplog, "other", "/camera/image", "RELIABILITY")) == 1
    assert sub.publisher_count == 0


def test_durability_mismatch_is_logged(dds_buses, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING")
    listener, talker = dds_buses("listener"), dds_buses("talker")
    listener.create_subscription("/map", STRING, print, LATCHED)
    talker.create_publisher("/map", STRING, DEFAULT)  # volatile offer, transient local request

    def warned() -> bool:
        talker.spin_once(0.01)
        return bool(_records(caplog, "listener", "/map", "DURABILITY"))

    assert listener.spin_until(warned, WAIT), caplog.text
    (text,) = _records(caplog, "listener", "/map")
    assert "this subscription's transient local request" in text


# --------------------------------------------------------------------------------------------
# another process


@pytest.mark.slow
def test_a_node_in_another_process_is_visible_and_updates(
    domain: int, observe, tmp_path: Path
) -> None:
    obs = observe()
    with peer.peers(tmp_path) as group:
        group.start("node", "--name", "inspector", "--namespace", "uav1", "--topic", "status")

        def node_info() -> Any:
            for info in obs.infos.values():
                for entry in info.node_entities_info_seq:
                    if (entry.node_namespace, entry.node_name) == ("/uav1", "inspector"):
                        return info
            return None

        def status_listed() -> bool:
            pub = obs.endpoint("publications", "rt/uav1/status")
            info = node_info()
            if pub is None or info is None:
                return False
            (entry,) = info.node_entities_info_seq
            return padded(pub.key, "jazzy") in {bytes(g.data) for g in entry.writer_gid_seq}

        assert obs.wait(status_listed), group.logs()
        pub = obs.endpoint("publications", "rt/uav1/status")
        assert bytes(node_info().gid.data) == padded(pub.participant_key, "jazzy")
        (entry,) = node_info().node_entities_info_seq
        assert len(entry.reader_gid_seq) == len(
            obs.endpoints_of(pub.participant_key)["subscriptions"]
        )

        with create_bus("dds", "operator") as op:
            control = op.create_publisher(peer.CONTROL_TOPIC, STRING, LATCHED)
            control.publish(msg_class(STRING)(data="destroy"))
            key = padded(pub.key, "jazzy")

            def writer_gone() -> bool:
                # the node's own list, not the endpoint's disposal: those two updates travel
                # separately, and under load the disposal can come first
                info = node_info()
                return info is not None and key not in {
                    bytes(g.data) for g in info.node_entities_info_seq[0].writer_gid_seq
                }

            assert obs.wait(writer_gone), group.logs()
        (entry,) = node_info().node_entities_info_seq
        assert key not in {bytes(g.data) for g in entry.writer_gid_seq}
        assert "node: publisher destroyed" in group.logs()
        assert group.stop_all() == [0], group.logs()
