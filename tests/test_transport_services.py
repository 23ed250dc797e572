"""Services on the Bus: the service types in the codec, request/response on the local binding,
the parameter services, and the dds binding on rmw_cyclonedds' wire (one process, and a server
in a separate process checked with plain Cyclone DDS readers).

Also a peer process for the multi-process tests::

    python tests/test_transport_services.py server --name detector

runs a dds bus named ``detector`` serving a small lifecycle (``~/change_state``,
``~/get_state``), ``~/fit`` (std_srvs/Trigger) and ``~/fail`` (a callback that raises), with the
parameters ``threshold`` and ``rate``, until SIGTERM.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

if __package__ in (None, ""):  # run as a peer script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np
import pytest

from vad_inspection.msgs import cdr
from vad_inspection.msgs.types import MessageError, msg_class, srv_types, typestore
from vad_inspection.transport import (
    ParameterError,
    ServiceError,
    TransportError,
    create_bus,
)
from vad_inspection.transport.local import LocalGraph

ROOT = Path(__file__).resolve().parents[1]
TRIGGER = "std_srvs/srv/Trigger"
CHANGE_STATE = "lifecycle_msgs/srv/ChangeState"
GET_STATE = "lifecycle_msgs/srv/GetState"
WAIT = 30.0  # s: generous bound for anything that crosses processes on a loaded 2-core box


def req(srvtype: str, **fields: Any) -> Any:
    return msg_class(srv_types(srvtype)[0])(**fields)


def resp(srvtype: str, **fields: Any) -> Any:
    return msg_class(srv_types(srvtype)[1])(**fields)


def transition(tid: int, label: str = "") -> Any:
    return msg_class("lifecycle_msgs/msg/Transition")(id=tid, label=label)


class Lifecycle:
    """A minimal REP-2006 state machine behind ~/change_state and ~/get_state (the nodes' own
    lives elsewhere; this one only exercises the services)."""

    STATES: ClassVar[dict[int, str]] = {1: "unconfigured", 2: "inactive", 3: "active"}
    MOVES: ClassVar[dict[tuple[int, int], int]] = {(1, 1): 2, (2, 3): 3, (3, 4): 2, (2, 2): 1}

    def __init__(self, bus: Any) -> None:
        self.state = 1
        self.calls: list[int] = []
        bus.create_service("~/change_state", CHANGE_STATE, self.change_state)
        bus.create_service("~/get_state", GET_STATE, self.get_state)

    def change_state(self, request: Any) -> Any:
        self.calls.append(int(request.transition.id))
        goal = self.MOVES.get((self.state, int(request.transition.id)))
        if goal is not None:
            self.state = goal
        return resp(CHANGE_STATE, success=goal is not None)

    def get_state(self, request: Any) -> Any:
        state = msg_class("lifecycle_msgs/msg/State")(id=self.state, label=self.STATES[self.state])
        return resp(GET_STATE, current_state=state)


def trigger_ok(request: Any) -> Any:
    return resp(TRIGGER, success=True, message="fitted")


def trigger_fails(request: Any) -> Any:
    raise RuntimeError("no images to fit on")


# --------------------------------------------------------------------------------------------
# service types in the codec


def test_srv_types_are_registered_in_both_distros() -> None:
    assert srv_types(CHANGE_STATE) == (
        "lifecycle_msgs/srv/ChangeState_Request",
        "lifecycle_msgs/srv/ChangeState_Response",
    )
    assert srv_types("std_srvs/Trigger") == srv_types(TRIGGER)
    wanted = [
        "lifecycle_msgs/srv/" + s
        for s in ("ChangeState", "GetState", "GetAvailableStates", "GetAvailableTransitions")
    ]
    wanted += ["std_srvs/srv/" + s for s in ("Trigger", "SetBool", "Empty")]
    wanted += [
        "rcl_interfaces/srv/" + s
        for s in (
            "GetParameters",
            "SetParameters",
            "SetParametersAtomically",
            "ListParameters",
            "DescribeParameters",
            "GetParameterTypes",
        )
    ]
    for distro in ("humble", "jazzy"):
        for srvtype in wanted:
            srv_types(srvtype, distro)  # both halves known, or MessageError
    with pytest.raises(MessageError, match="invalid service type 'Trigger'"):
        srv_types("Trigger")
    with pytest.raises(MessageError, match="unknown service type 'std_srvs/srv/Nope'"):
        srv_types("std_srvs/srv/Nope", "jazzy")


def test_srv_cdr_round_trip_and_empty_sides_are_one_byte() -> None:
    name = srv_types(CHANGE_STATE)[0]
    data = cdr.serialize(req(CHANGE_STATE, transition=transition(1, "configure")), name)
    assert data == b"\x00\x01\x00\x00\x01\x00\x00\x00\x0a\x00\x00\x00configure\x00"
    assert cdr.deserialize(data, name).transition.label == "configure"
    # rosidl gives a structure without fields one uint8 member: ROS 2 sends one byte
    empty = srv_types(GET_STATE)[0]
    assert typestore().fielddefs[empty][1][0][0] == "structure_needs_at_least_one_member"
    assert cdr.serialize(msg_class(empty)(structure_needs_at_least_one_member=0), empty) == (
        b"\x00\x01\x00\x00\x00"
    )
    # relative field types of a .srv resolve to the package's msg types
    fields = dict(typestore().fielddefs["rcl_interfaces/srv/GetParameters_Response"][1])
    assert fields["values"][1][0][1] == "rcl_interfaces/msg/ParameterValue"
    consts = dict(
        (c[0], c[2])
        for c in typestore().fielddefs[srv_types("rcl_interfaces/srv/ListParameters")[0]][0]
    )
    assert consts == {"DEPTH_RECURSIVE": 0}


def test_srv_definitions_are_package_data() -> None:
    setup = (ROOT / "setup.py").read_text()
    assert '"definitions/srv/*/*.srv"' in setup
    folder = ROOT / "src" / "vad_inspection" / "msgs" / "definitions" / "srv"
    assert (
        (folder / "lifecycle_msgs" / "ChangeState.srv")
        .read_text()
        .startswith("# The requested transition.")
    )


# --------------------------------------------------------------------------------------------
# local binding


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


@contextlib.contextmanager
def spinning(bus: Any, seconds: float = WAIT) -> Iterator[None]:
    """Spin ``bus`` on another thread for the block."""
    stop = threading.Event()
    thread = threading.Thread(target=bus.spin_until, args=(stop.is_set, seconds), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def test_local_round_trip_names_and_listing(buses, graph: LocalGraph) -> None:
    server, client = buses("detector", namespace="robot1"), buses("operator")
    lifecycle = Lifecycle(server)
    fit = server.create_service("~/fit", TRIGGER, trigger_ok)
    assert fit.name == "/robot1/detector/fit"
    names = {s.name for s in server.services}
    assert {"/robot1/detector/change_state", "/robot1/detector/get_state", fit.name} <= names
    assert graph.services()[fit.name] == {TRIGGER}
    change = client.create_client("/robot1/detector/change_state", CHANGE_STATE)
    get = client.create_client("/robot1/detector/get_state", GET_STATE)
    assert change.wait_for_service(1.0) and client.clients == [change, get]
    with spinning(server):
        assert change.call(req(CHANGE_STATE, transition=transition(1))).success
        state = get.call(req(GET_STATE, structure_needs_at_least_one_member=0)).current_state
        assert (state.id, state.label) == (2, "inactive")
        assert not change.call(req(CHANGE_STATE, transition=transition(4))).success
        future = change.call_async(req(CHANGE_STATE, transition=transition(3)))
        assert future.result(5).success
    assert lifecycle.calls == [1, 4, 3] and lifecycle.state == 3


def test_local_call_from_another_thread_while_the_server_spins_here(buses) -> None:
    server, client = buses("server"), buses("client")
    server.create_service("~/fit", TRIGGER, trigger_ok)
    fit = client.create_client("/server/fit", TRIGGER)
    replies: list[Any] = []
    caller = threading.Thread(target=lambda: replies.append(fit.call(req(TRIGGER), 10)))
    caller.start()
    assert server.spin_until(lambda: bool(replies), 10)  # the callback ran on this thread
    caller.join(5)
    assert replies[0].message == "fitted"


def test_local_unknown_service_and_wrong_type(buses) -> None:
    server, client = buses("server"), buses("client")
    server.create_service("~/fit", TRIGGER, trigger_ok)
    nobody = client.create_client("/nobody/home", TRIGGER)
    t0 = time.monotonic()
    assert not nobody.wait_for_service(0.2)
    assert time.monotonic() - t0 >= 0.2
    with pytest.raises(TransportError, match=r"no server of /nobody/home \[std_srvs/srv/Trigger\]"):
        nobody.call(req(TRIGGER), 1)
    other = client.create_client("/server/fit", "std_srvs/srv/Empty")
    assert not other.service_is_ready()
    with pytest.raises(TransportError, match=r"its servers use std_srvs/srv/Trigger"):
        other.call(req("std_srvs/srv/Empty"), 1)
    with pytest.raises(TransportError, match="unknown service type 'std_srvs/srv/Nope'"):
        client.create_client("/x", "std_srvs/srv/Nope")
    fit = client.create_client("/server/fit", TRIGGER)
    with pytest.raises(MessageError, match="message object is a std_srvs/srv/Empty_Request"):
        fit.call_async(req("std_srvs/srv/Empty"))


def test_local_failing_callback_is_logged_and_the_call_fails_clearly(buses, caplog) -> None:
    server, client = buses("server"), buses("client")
    failing = server.create_service("~/fail", TRIGGER, trigger_fails)
    server.create_service(
        "~/wrong", TRIGGER, lambda r: resp("std_srvs/srv/SetBool", success=True, message="")
    )
    server.create_service("~/fit", TRIGGER, trigger_ok)
    with spinning(server):
        with pytest.raises(ServiceError, match="callback raised RuntimeError: no images to fit"):
            client.create_client("/server/fail", TRIGGER).call(req(TRIGGER), 5)
        with pytest.raises(ServiceError, match="returned a std_srvs/srv/SetBool_Response"):
            client.create_client("/server/wrong", TRIGGER).call(req(TRIGGER), 5)
        # the node goes on serving
        assert client.create_client("/server/fit", TRIGGER).call(req(TRIGGER), 5).success
    assert failing.failed == 1 and failing.handled == 0
    assert "service /server/fail [std_srvs/srv/Trigger]: the callback raised" in caplog.text
    assert "RuntimeError: no images to fit on" in caplog.text  # with the traceback


def test_local_call_times_out_when_nobody_spins_the_server(buses) -> None:
    server, client = buses("server"), buses("client")
    served = server.create_service("~/fit", TRIGGER, trigger_ok)
    fit = client.create_client("/server/fit", TRIGGER)
    with pytest.raises(
        TransportError,
        match=r"/server/fit \[std_srvs/srv/Trigger\]: no reply "
        r"within 0.2 s",
    ):
        fit.call(req(TRIGGER), 0.2)
    server.spin_once(0)  # the abandoned request is skipped, not served late
    assert served.handled == 0


def test_local_destroy_and_shutdown_release_services(buses, graph: LocalGraph) -> None:
    server, client = buses("server", parameter_services=False), buses("client")
    fit = server.create_service("~/fit", TRIGGER, trigger_ok)
    caller = client.create_client("/server/fit", TRIGGER)
    pending = caller.call_async(req(TRIGGER))
    caller.destroy()
    with pytest.raises(TransportError, match="client of /server/fit was destroyed"):
        pending.result(1)
    with pytest.raises(TransportError, match="client of /server/fit is destroyed"):
        caller.call(req(TRIGGER))
    assert client.clients == []
    fit.destroy()
    assert server.services == [] and "/server/fit" not in graph.services()
    server.create_service("~/fit", TRIGGER, trigger_ok)
    server.shutdown()
    assert "/server/fit" not in graph.services()


def test_local_without_serialization_passes_objects(buses) -> None:
    server, client = buses("server", serialize=False), buses("client", serialize=False)
    seen: list[Any] = []
    answer = resp(TRIGGER, success=True, message="same object")

    def serve(request: Any) -> Any:
        seen.append(request)
        return answer

    server.create_service("~/fit", TRIGGER, serve)
    request = req(TRIGGER)
    with spinning(server):
        assert client.create_client("/server/fit", TRIGGER).call(request, 5) is answer
    assert seen == [request]


# --------------------------------------------------------------------------------------------
# parameter services (local; the same code serves the dds binding)


def _value(ptype: int, value: Any) -> Any:
    from vad_inspection.transport.params import ParamType
    from vad_inspection.transport.service import parameter_value_msg

    return parameter_value_msg(ParamType(ptype), value)


def param(name: str, ptype: int, value: Any) -> Any:
    return msg_class("rcl_interfaces/msg/Parameter")(name=name, value=_value(ptype, value))


def test_parameter_services_answer_like_rclpy(buses) -> None:
    node, tool = buses("detector"), buses("ros2cli")
    params = node.parameters
    params.declare("threshold", 0.5, description="score cut")
    params.declare("camera.topic", "/camera/image")
    params.declare("camera.fps", 30)
    params.declare("mask", b"\x01\x02", read_only=True)
    params.declare("ids", [], type=list[int])
    refused: list[str] = []

    def guard(name: str, value: Any) -> None:
        if name == "threshold" and not 0.0 <= value <= 1.0:
            refused.append(name)
            raise ParameterError(f"parameter 'threshold': {value} is outside [0, 1]")

    params.add_on_set_callback(guard)
    srv = "rcl_interfaces/srv/"

    def call(name: str, srvtype: str, **fields: Any) -> Any:
        client = tool.create_client(f"/detector/{name}", srv + srvtype)
        return client.call(req(srv + srvtype, **fields), 5)

    with spinning(node):
        got = call("get_parameters", "GetParameters", names=["threshold", "mask", "ids"])
        assert [int(v.type) for v in got.values] == [3, 5, 7]
        assert got.values[0].double_value == 0.5
        assert bytes(np.asarray(got.values[1].byte_array_value, dtype=np.uint8)) == b"\x01\x02"
        # an undeclared name empties the answer, as rclpy's ParameterService does
        assert call("get_parameters", "GetParameters", names=["threshold", "nope"]).values == []
        types = call("get_parameter_types", "GetParameterTypes", names=["camera.fps", "ids"])
        assert list(types.types) == [2, 7]
        desc = call("describe_parameters", "DescribeParameters", names=["threshold", "mask"])
        assert [(d.name, d.description, d.read_only) for d in desc.descriptors] == [
            ("threshold", "score cut", False),
            ("mask", "", True),
        ]
        listed = call("list_parameters", "ListParameters", prefixes=[], depth=0).result
        assert set(listed.names) == {
            "use_sim_time", "threshold", "camera.topic", "camera.fps", "mask", "ids"
        }  # fmt: skip
        assert listed.prefixes == ["camera"]
        listed = call("list_parameters", "ListParameters", prefixes=["camera"], depth=1).result
        assert listed.names == ["camera.topic", "camera.fps"]

        # ros2 param set: an integer for a double is accepted (as on every binding)
        results = call(
            "set_parameters",
            "SetParameters",
            parameters=[
                param("threshold", 2, 1),
                param("threshold", 3, 7.0),  # refused by the node's callback
                param("mask", 5, b"\x03"),  # read-only
                param("camera.fps", 4, "fast"),  # wrong type
                param("nope", 1, True),  # undeclared
            ],
        ).results
        assert [r.successful for r in results] == [True, False, False, False, False]
        assert results[1].reason == "parameter 'threshold': 7.0 is outside [0, 1]"
        assert "read-only" in results[2].reason and "expected integer" in results[3].reason
        assert "'nope' is not declared" in results[4].reason
        assert params.get("threshold") == 1.0 and isinstance(params.get("threshold"), float)
        # atomically: all or nothing
        result = call(
            "set_parameters_atomically",
            "SetParametersAtomically",
            parameters=[param("camera.fps", 2, 15), param("threshold", 3, -1.0)],
        ).result
        assert not result.successful and "outside [0, 1]" in result.reason
        assert params.get("camera.fps") == 30
        result = call(
            "set_parameters_atomically",
            "SetParametersAtomically",
            parameters=[param("camera.fps", 2, 15), param("ids", 7, [4, 5])],
        ).result
        assert result.successful and params.get("camera.fps") == 15
        assert params.get("ids") == [4, 5]
    assert refused == ["threshold", "threshold"]


def test_parameter_services_can_be_turned_off(buses, graph: LocalGraph) -> None:
    buses("quiet", parameter_services=False)
    buses("chatty")
    assert not any(name.startswith("/quiet/") for name in graph.services())
    assert "/chatty/set_parameters" in graph.services()


# --------------------------------------------------------------------------------------------
# dds binding


cy = None  # the Cyclone wrapper, imported by the dds tests only (skips without cyclonedds)


def _cy() -> Any:
    return pytest.importorskip("vad_inspection.transport._cyclone", exc_type=ImportError)


def test_wire_header_layout() -> None:
    _cy()
    from vad_inspection.transport._dds_service import csid_string, pack, unpack

    body = cdr.serialize(
        req(CHANGE_STATE, transition=transition(1, "configure")), srv_types(CHANGE_STATE)[0]
    )
    wire = pack(body, 0x1122334455667788, 7)
    # encapsulation, then the header inside the CDR stream, then the body
    assert wire[:4] == b"\x00\x01\x00\x00"
    assert wire[4:20] == struct.pack("<Qq", 0x1122334455667788, 7)
    assert wire[20:] == body[4:]
    assert unpack(wire) == (0x1122334455667788, 7, body)
    big = b"\x00\x00\x00\x00" + struct.pack(">Qq", 5, -1) + b"\x01"  # a big-endian writer
    assert unpack(big) == (5, -1, b"\x00\x00\x00\x00\x01")
    with pytest.raises(MessageError, match="too short"):
        unpack(wire[:19])
    # rmw_cyclonedds' csid_to_string: hex, '.'-separated, first byte right-aligned in two
    assert csid_string(bytes(range(1, 13)), 258) == " 1.2.3.4.5.6.7.8.9.a.b.c.0.0.1.2"


def test_dds_topics_types_qos_and_user_data_as_rmw_cyclonedds(dds_buses, domain: int) -> None:
    cy = _cy()
    from cyclonedds.builtin import (
        BuiltinDataReader,
        BuiltinTopicDcpsPublication,
        BuiltinTopicDcpsSubscription,
    )
    from cyclonedds.core import Policy

    server = dds_buses("detector", namespace="robot1", parameter_services=False)
    server.create_service("~/change_state", CHANGE_STATE, Lifecycle(server).change_state)
    client_bus = dds_buses("operator", parameter_services=False)
    client_bus.create_client("/robot1/detector/change_state", CHANGE_STATE)
    observer = cy.DomainParticipant(domain)
    seen: dict[tuple[str, str], Any] = {}
    readers = [
        ("w", BuiltinDataReader(observer, BuiltinTopicDcpsPublication)),
        ("r", BuiltinDataReader(observer, BuiltinTopicDcpsSubscription)),
    ]
    deadline = time.monotonic() + WAIT
    while len(seen) < 4 and time.monotonic() < deadline:
        for kind, reader in readers:
            for ep in reader.take(N=50):
                if "change_state" in ep.topic_name:
                    seen[(kind, ep.topic_name)] = ep
        time.sleep(0.02)
    cy.delete(observer)
    rq, rr = "rq/robot1/detector/change_stateRequest", "rr/robot1/detector/change_stateReply"
    assert set(seen) == {("r", rq), ("w", rr), ("w", rq), ("r", rr)}
    assert seen[("r", rq)].type_name == "lifecycle_msgs::srv::dds_::ChangeState_Request_"
    assert seen[("w", rr)].type_name == "lifecycle_msgs::srv::dds_::ChangeState_Response_"
    for ep in seen.values():
        qos = ep.qos
        assert isinstance(qos[Policy.Reliability], Policy.Reliability.Reliable)
        assert qos[Policy.Durability] == Policy.Durability.Volatile
        assert qos[Policy.History] == Policy.History.KeepLast(10)
    server_ids = {seen[k].qos[Policy.Userdata].data.split(b";")[0] for k in [("r", rq), ("w", rr)]}
    client_ids = {seen[k].qos[Policy.Userdata].data.split(b";")[0] for k in [("w", rq), ("r", rr)]}
    assert len(server_ids) == 1 and server_ids.pop().startswith(b"serviceid=")
    assert len(client_ids) == 1 and client_ids.pop().startswith(b"clientid=")
    assert b"typehash=RIHS01_" in seen[("r", rq)].qos[Policy.Userdata].data  # Jazzy


def test_dds_round_trip_failing_callback_and_timeout(dds_buses, caplog) -> None:
    server, client = dds_buses("server"), dds_buses("client", parameter_services=False)
    server.create_service("~/fit", TRIGGER, trigger_ok)
    failing = server.create_service("~/fail", TRIGGER, trigger_fails)
    fit = client.create_client("/server/fit", TRIGGER)
    fail = client.create_client("/server/fail", TRIGGER)
    nobody = client.create_client("/server/nobody", TRIGGER)
    assert fit.wait_for_service(WAIT) and fail.wait_for_service(WAIT)
    assert not nobody.wait_for_service(0.3)
    with spinning(server):
        assert fit.call(req(TRIGGER), WAIT).message == "fitted"  # nobody spins the client
        with pytest.raises(TransportError, match=r"/server/fail .*no reply within 1 s"):
            fail.call(req(TRIGGER), 1.0)  # ROS 2's wire has no error reply
        assert fit.call(req(TRIGGER), WAIT).success  # the server goes on
        futures = [fit.call_async(req(TRIGGER)) for _ in range(5)]
        # the client's bus spun elsewhere: replies taken there complete the futures too
        with spinning(client):
            assert all(f.result(WAIT).success for f in futures)
    assert failing.failed == 1
    assert "service /server/fail [std_srvs/srv/Trigger]: the callback raised" in caplog.text
    with pytest.raises(TransportError, match=r"no reply within 0.2 s \(no server found\)"):
        nobody.call(req(TRIGGER), 0.2)


def test_dds_plain_cyclone_client_gets_rmw_layout_replies(dds_buses, domain: int) -> None:
    """A client written against the documented layout with Cyclone's own (typed) serialiser,
    as rmw_cyclonedds' client would send it, gets the reply for its id and sequence."""
    cy = _cy()
    from cyclonedds.core import Policy, Qos

    from vad_inspection.transport._dds_service import header_idl_class
    from vad_inspection.transport.qos import DEFAULT

    server = dds_buses("detector", parameter_services=False)
    Lifecycle(server)
    request_t, response_t = (header_idl_class(t) for t in srv_types(CHANGE_STATE))
    participant = cy.DomainParticipant(domain)
    qos = Qos(Policy.Userdata(b"clientid=plain;"), base=cy.cyclone_qos(DEFAULT))
    writer = cy.DataWriter(
        participant, cy.Topic(participant, "rq/detector/change_stateRequest", request_t), qos
    )
    reader = cy.DataReader(
        participant, cy.Topic(participant, "rr/detector/change_stateReply", response_t), qos
    )
    try:
        with spinning(server):
            deadline = time.monotonic() + WAIT
            while (
                not (cy.publication_matched(writer) and cy.subscription_matched(reader))
                and time.monotonic() < deadline
            ):
                time.sleep(0.02)
            body = request_t.__annotations__["transition"]
            sample = request_t(
                cdds_request_header_guid=0xFEEDFACE12345678,
                cdds_request_header_seq=41,
                transition=body(id=1, label="configure"),
            )
            writer.write(sample)
            replies: list[Any] = []
            while not replies and time.monotonic() < deadline:
                replies = reader.take(N=5)
                time.sleep(0.01)
    finally:
        cy.delete(participant)
    assert len(replies) == 1
    reply = replies[0]
    assert (reply.cdds_request_header_guid, reply.cdds_request_header_seq) == (
        0xFEEDFACE12345678, 41,
    )  # fmt: skip
    assert reply.success is True


# --------------------------------------------------------------------------------------------
# dds binding, a server in another process


class Peer:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.log = tmp_path / "server.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__)), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ.copy(),
            )

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


@contextlib.contextmanager
def server_process(tmp_path: Path, name: str = "detector") -> Iterator[Peer]:
    peer = Peer(tmp_path, "server", "--name", name)
    try:
        yield peer
    finally:
        if peer.proc.poll() is None:
            peer.proc.kill()
            peer.proc.wait()


@pytest.mark.slow
def test_two_processes_lifecycle_requests_on_the_rmw_wire(domain: int, tmp_path: Path) -> None:
    cy = _cy()
    from vad_inspection.transport._dds_service import header_idl_class
    from vad_inspection.transport.qos import DEFAULT

    with server_process(tmp_path) as peer, create_bus("dds", "operator") as bus:
        # a plain Cyclone reader on the request topic, as any DDS tool would see it
        request_t = header_idl_class(srv_types(CHANGE_STATE)[0])
        spy_topic = cy.Topic(bus.participant, "rq/detector/change_stateRequest", request_t)
        spy = cy.DataReader(bus.participant, spy_topic, cy.cyclone_qos(DEFAULT))
        change = bus.create_client("/detector/change_state", CHANGE_STATE)
        get = bus.create_client("/detector/get_state", GET_STATE)
        assert change.wait_for_service(WAIT) and get.wait_for_service(WAIT), peer.text()
        deadline = time.monotonic() + WAIT
        while not cy.subscription_matched(spy) and time.monotonic() < deadline:
            time.sleep(0.02)

        empty = req(GET_STATE, structure_needs_at_least_one_member=0)
        assert get.call(empty, WAIT).current_state.label == "unconfigured"
        request = req(CHANGE_STATE, transition=transition(1, "configure"))
        assert change.call(request, WAIT).success, peer.text()
        assert get.call(empty, WAIT).current_state.label == "inactive"
        assert not change.call(req(CHANGE_STATE, transition=transition(4)), WAIT).success

        raw: list[bytes] = []
        while len(raw) < 2 and time.monotonic() < deadline:
            raw += cy.take(spy, 10)
            time.sleep(0.01)
        assert peer.stop() == 0, peer.text()
    assert len(raw) == 2
    first = raw[0]
    body = cdr.serialize(request, srv_types(CHANGE_STATE)[0])
    assert first[:4] == b"\x00\x01\x00\x00"  # encapsulation (CDR little endian) first
    client_id, sequence = struct.unpack_from("<Qq", first, 4)  # then the 16-byte header
    assert client_id == change.client_id and sequence >= 1
    assert first[20:] == body[4:]  # then the request, exactly rosbags' CDR body
    assert struct.unpack_from("<Qq", raw[1], 4) == (change.client_id, sequence + 2)
    typed = request_t.deserialize(first)  # Cyclone's own decoder agrees
    assert (typed.cdds_request_header_guid, typed.cdds_request_header_seq) == (
        client_id, sequence,
    )  # fmt: skip
    assert typed.transition.label == "configure"


@pytest.mark.slow
def test_two_clients_each_get_only_their_own_replies(domain: int, tmp_path: Path) -> None:
    cy = _cy()
    from vad_inspection.transport._dds_service import header_idl_class
    from vad_inspection.transport.qos import DEFAULT

    describe = "rcl_interfaces/srv/DescribeParameters"
    with (
        server_process(tmp_path) as peer,
        create_bus("dds", "a", parameter_services=False) as a,
        create_bus("dds", "b", parameter_services=False) as b,
    ):
        reply_t = header_idl_class(srv_types(describe)[1])
        spy = cy.DataReader(
            a.participant,
            cy.Topic(a.participant, "rr/detector/describe_parametersReply", reply_t),
            cy.cyclone_qos(DEFAULT),
        )
        clients = {
            "threshold": a.create_client("/detector/describe_parameters", describe),
            "rate": b.create_client("/detector/describe_parameters", describe),
        }
        for client in clients.values():
            assert client.wait_for_service(WAIT), peer.text()
        deadline = time.monotonic() + WAIT
        while not cy.subscription_matched(spy) and time.monotonic() < deadline:
            time.sleep(0.02)

        def ask(name: str) -> list[list[str]]:
            """10 calls in a row (nobody spins a or b: call() takes its replies itself)."""
            client = clients[name]
            return [
                [d.name for d in client.call(req(describe, names=[name]), WAIT).descriptors]
                for _ in range(10)
            ]

        with concurrent.futures.ThreadPoolExecutor(2) as pool:  # both at once: replies interleave
            jobs = {name: pool.submit(ask, name) for name in clients}
            answers = {name: job.result(WAIT) for name, job in jobs.items()}
        assert answers == {name: [[name]] * 10 for name in clients}, peer.text()
        with spinning(a), spinning(b):  # call_async: the spinning thread takes the replies
            futures = {
                name: [c.call_async(req(describe, names=[name])) for _ in range(5)]
                for name, c in clients.items()
            }
            asynced = {
                name: [[d.name for d in f.result(WAIT).descriptors] for f in fs]
                for name, fs in futures.items()
            }
        assert asynced == {name: [[name]] * 5 for name in clients}
        seen: list[int] = []
        while len(seen) < 30 and time.monotonic() < deadline:
            seen += [s.cdds_request_header_guid for s in spy.take(N=50)]
            time.sleep(0.01)
        print("SEEN", len(seen), time.monotonic() - deadline)
        assert peer.stop() == 0, peer.text()
    # every reply reaches every client's reader: the id in the header is what separates them
    assert sorted(set(seen)) == sorted({c.client_id for c in clients.values()})


# --------------------------------------------------------------------------------------------
# the peer process


def run_server(name: str) -> int:
    with create_bus("dds", name) as bus:
        bus.install_signal_handlers()
        bus.parameters.declare("threshold", 0.5, description="score cut")
        bus.parameters.declare("rate", 10.0)
        Lifecycle(bus)
        bus.create_service("~/fit", TRIGGER, trigger_ok)
        bus.create_service("~/fail", TRIGGER, trigger_fails)
        print(f"serving {[s.name for s in bus.services]}", flush=True)
        bus.spin()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="service peer for the dds tests")
    parser.add_argument("role", choices=["server"])
    parser.add_argument("--name", default="detector")
    args = parser.parse_args(argv)
    return run_server(args.name)


if __name__ == "__main__":
    sys.exit(main())
