"""Services on the dds binding, on the wire as rmw_cyclonedds_cpp puts them (Humble and Jazzy).

Read from ros2/rmw_cyclonedds, branches ``humble`` and ``jazzy`` (the service code is the same on
both; line numbers ``jazzy`` / ``humble`` where they differ):

Topics and types (``rmw_node.cpp`` ``rmw_init_cs``, L4975-4991 / L4598-4607; prefixes in
``namespace_prefix.hpp`` L19-20): the service ``/a/b`` is the request topic ``rq/a/bRequest`` and
the reply topic ``rr/a/bReply``, of the types ``<pkg>::srv::dds_::<Srv>_Request_`` and
``<pkg>::srv::dds_::<Srv>_Response_``. QoS: ``rmw_qos_profile_services_default`` (rmw's
``qos_profiles.h``: reliable, volatile, keep last 10). USER_DATA of both endpoints of a server
``serviceid=<id>;``, of a client ``clientid=<id>;`` (L5027 / L4648), followed on Jazzy by
``typehash=RIHS01_...;`` (``create_readwrite_qos`` L2251); ``<id>`` is the participant's GUID
prefix and a per-participant counter, printed by ``csid_to_string`` (L4599 / L4221).

The sample (``Serialization.cpp`` ``serialize_top_level(CDRCursor *, const
cdds_request_wrapper_t &)``, L260-274 on both)::

    offset 0   4 bytes  encapsulation: 00 01 00 00 (CDR, little endian; ``put_rtps_header`` L278)
    offset 4   8 bytes  uint64 client id   ``cdds_request_header_t.guid`` (``serdata.hpp`` L73-77)
    offset 12  8 bytes  int64 sequence     ``cdds_request_header_t.seq``
    offset 20  ...      the request (or response) body, XCDR1, aligned from offset 4

The header comes after the encapsulation, inside the CDR stream: the cursor is rebased past the
encapsulation (L265) and the two integers are copied raw, in the writer's byte order (L267-268),
so the body's alignment is unchanged (16 is a multiple of 8). Replies carry the same header as
the request they answer. ``serdata_rmw_from_sample`` (``serdata.cpp`` L254 / L250) serialises
that through ``serialize_into_serdata_rmw`` (L119 / L115), ``serdata_rmw_to_ser`` (L314 / L310)
hands those very bytes to the network, and the reader's ``cycdeser`` skips the encapsulation
(``serdes.cpp`` L32) before the ``prefix`` lambda reads guid and seq (``serdata.cpp`` L374 /
L370).

Who is who (``rmw_node.cpp``): ``rmw_send_request`` (L4831 / L4455) sets the client id to the
request *writer's instance handle* and the sequence to a process-wide counter starting at 1
(L4845-4846 / L4470-4471). A server answers with that id and sequence (``rmw_send_response``
L4780 / L4403), after waiting up to 100 ms until it has matched the reply reader whose
``clientid`` equals the request writer's (``check_for_response_reader`` L4750 / L4373), and does
not answer otherwise. Every client's reply reader receives every reply; a client keeps those
whose id is its own (``rmw_take_response_request``, ``srcfilter == wrap.header.guid``, L4642 /
L4263). A client sees a server available when its request reader and reply writer are matched,
paired by ``serviceid`` when given (``check_for_service_reader_writer`` L5420 / L5053).

One difference from rmw, forced by Cyclone's Python binding: the DDS type is declared with the
two header integers as its first two members (``cdds_request_header_guid`` uint64,
``cdds_request_header_seq`` int64), the service type's fields after them, under the same type
name. rmw's sertype never looks inside a sample, but the Python binding's does: it validates
every sample against the type, both what ``ddspy_write`` is given and what arrives from the
network (``clayer/pysertype.c``, cyclonedds-python 11.0.1, ``dds_stream_normalize`` in
``ddspy_serdata_populate_key`` L195, reached from ``serdata_from_ser`` and
``serdata_from_ser_iov``), so a sample whose header is not part of the type is refused
(``DDS_RETCODE_BAD_PARAMETER`` on write) or silently dropped on receipt. With the header as
members the bytes are exactly rmw's (checked: Cyclone serialises such a struct to the layout
above), and rmw endpoints, which send no XTypes type information, match by type name.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import struct
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from cyclonedds import _clayer  # private, like _cyclone's (whose import checks the version)
from cyclonedds.core import Policy
from cyclonedds.idl import IdlStruct, make_idl_struct
from cyclonedds.idl import types as idl

from ..msgs.types import MessageError
from . import _cyclone as cy
from . import graph_info as gi
from .bus import TransportError, _Throttle
from .naming import dds_typename
from .qos import QoS
from .service import Client, Service, ServiceCallback, ServiceError, resolve_future

if TYPE_CHECKING:
    from .dds import DdsBus

REQUEST_PREFIX = "rq"
REPLY_PREFIX = "rr"
HEADER_SIZE = 16
HEADER_MEMBERS = ("cdds_request_header_guid", "cdds_request_header_seq")
_HEADER = {"<": struct.Struct("<Qq"), ">": struct.Struct(">Qq")}
_ENCAPSULATIONS = {b"\x00\x01": "<", b"\x00\x00": ">"}  # plain CDR LE / BE (XCDR1, as ROS 2)
_REPLY_MATCH_S = 0.5  # how long a server waits for a new client's reply reader (rmw: 100 ms)
_WAIT_SLICE_S = 0.05  # a client's call() looks at its future at least this often
_TAKE_BATCH = 32

_classes: dict[tuple[int, str], type[IdlStruct]] = {}
_classes_lock = threading.Lock()
# per participant, as rmw's per-context ``client_service_id`` counter (starts at 1)
_csid_counters: weakref.WeakKeyDictionary[Any, itertools.count] = weakref.WeakKeyDictionary()


def request_topic(name: str) -> str:
    """Service ``/a/b`` -> its DDS request topic ``rq/a/bRequest``."""
    return f"{REQUEST_PREFIX}{name}Request"


def reply_topic(name: str) -> str:
    """Service ``/a/b`` -> its DDS reply topic ``rr/a/bReply``."""
    return f"{REPLY_PREFIX}{name}Reply"


def pack(cdr: bytes, client_id: int, sequence: int) -> bytes:
    """rosbags CDR of a request or response -> the sample rmw_cyclonedds sends: encapsulation,
    16-byte header (in the encapsulation's byte order), body."""
    order = _ENCAPSULATIONS.get(bytes(cdr[:2]))
    if order is None or len(cdr) < 4:
        raise MessageError(f"not plain CDR: {bytes(cdr[:4]).hex(' ')}")
    return bytes(cdr[:4]) + _HEADER[order].pack(client_id, sequence) + bytes(cdr[4:])


def unpack(data: bytes | memoryview) -> tuple[int, int, bytes]:
    """A received sample -> (client id, sequence number, rosbags CDR of the body)."""
    if len(data) < 4 + HEADER_SIZE:
        raise MessageError(f"{len(data)} bytes is too short for a service sample's header")
    order = _ENCAPSULATIONS.get(bytes(data[:2]))
    if order is None:
        raise MessageError(f"unsupported encapsulation {bytes(data[:2]).hex(' ')}")
    client_id, sequence = _HEADER[order].unpack_from(data, 4)
    return client_id, sequence, bytes(data[:4]) + bytes(data[4 + HEADER_SIZE :])


def header_idl_class(typename: str, distro: str = "jazzy") -> type[IdlStruct]:
    """The IdlStruct a request/response topic is declared with: named as ROS 2 names the type
    (``pkg::srv::dds_::Srv_Request_``), the two header integers first (see the module notes)."""
    body = cy.idl_class(typename, distro)
    key = (id(body), typename)
    with _classes_lock:
        cls = _classes.get(key)
        if cls is None:
            members: dict[str, Any] = {
                HEADER_MEMBERS[0]: idl.uint64,
                HEADER_MEMBERS[1]: idl.int64,
            }
            members.update(body.__annotations__)
            short = typename.rpartition("/")[2]
            cls = _classes[key] = make_idl_struct(f"{short}_", dds_typename(typename), members)
    return cls


def csid_string(participant_guid: bytes, counter: int) -> str:
    """rmw_cyclonedds' client/service id text: the participant's 12-byte GUID prefix and a
    big-endian counter, printed by ``csid_to_string`` (hex, '.'-separated, the first byte
    right-aligned in two characters)."""
    raw = bytes(participant_guid[:12]) + counter.to_bytes(4, "big")
    return f"{raw[0]:>2x}" + "".join(f".{b:x}" for b in raw[1:])


def _user_data_key(qos: Any, key: str) -> str | None:
    try:
        data = qos[Policy.Userdata].data
    except (KeyError, TypeError, AttributeError):
        return None
    return gi.parse_user_data(data).get(key)


class _Endpoints:
    """The request/reply topics, reader and writer of one service or client."""

    def __init__(
        self,
        bus: DdsBus,
        name: str,
        qos: QoS,
        reader_type: str,
        writer_type: str,
        reader_topic: str,
        writer_topic: str,
        role: str,
        what: str,
    ) -> None:
        self._bus = bus
        counter = _csid_counters.setdefault(bus, itertools.count(1))
        self.ident = csid_string(cy.guid(bus.participant), next(counter))
        extra = f"{role}={self.ident};"
        participant = bus.participant
        self.topics = [
            cy.Topic(participant, reader_topic, header_idl_class(reader_type, bus.distro)),
            cy.Topic(participant, writer_topic, header_idl_class(writer_type, bus.distro)),
        ]
        self.reader = cy.DataReader(
            participant,
            self.topics[0],
            cy.cyclone_qos(qos, user_data=gi.endpoint_user_data(reader_type, bus.distro, extra)),
        )
        self.writer = cy.DataWriter(
            participant,
            self.topics[1],
            cy.cyclone_qos(
                qos, bus.max_blocking_s, gi.endpoint_user_data(writer_type, bus.distro, extra)
            ),
        )
        self.condition = cy.ReadCondition(self.reader, cy.ANY_STATE)
        bus._waitset.attach(self.condition)
        bus._register_endpoint(self.reader, name, qos, what)
        bus._register_endpoint(self.writer, name, qos, what)

    def release(self) -> None:
        bus = self._bus
        with bus._entities_lock:
            bus._unregister_endpoint(self.reader)
            bus._unregister_endpoint(self.writer)
            if bus._waitset.is_attached(self.condition):
                bus._waitset.detach(self.condition)
            for entity in (self.condition, self.reader, self.writer, *self.topics):
                cy.delete(entity)


class DdsService(Service):
    """A server: takes requests on ``rq/<name>Request``, answers on ``rr/<name>Reply``."""

    _bus: DdsBus

    def __init__(
        self, bus: DdsBus, name: str, srvtype: str, callback: ServiceCallback, qos: QoS
    ) -> None:
        request_type, response_type = bus._srv_names(srvtype)
        super().__init__(bus, name, srvtype, request_type, response_type, callback, qos)
        with bus._entities_lock:
            self._ep = _Endpoints(
                bus, name, qos, request_type, response_type,
                request_topic(name), reply_topic(name), "serviceid", "service server",
            )  # fmt: skip
        self.unanswered = 0  # replies not sent: the client's reply reader never matched
        self._unanswered_throttle = _Throttle()
        bus._wake()

    def _poll(self) -> int:
        try:
            got = _clayer.ddspy_take(self._ep.reader._ref, cy.ANY_STATE, _TAKE_BATCH)
        except cy.DDSException:
            return 0
        if isinstance(got, int):  # a DDS error code: the reader went away meanwhile
            return 0
        done = 0
        for data, info in got:
            if not info.valid_data:
                continue
            done += 1
            try:
                client_id, sequence, body = unpack(cy.unpad(data))
            except MessageError as exc:
                self._decode_failed(str(exc))
                continue
            request = self._decode_request(body)
            if request is None:
                continue
            try:
                response = self._handle(request)
                reply = pack(self._bus._encode(response, self.response_type), client_id, sequence)
            except ServiceError:
                continue  # logged; ROS 2's wire has no error reply: the client times out
            except MessageError as exc:
                self.failed += 1
                self._bus.logger.error("service %s: cannot send the response: %s", self.name, exc)
                continue
            self._reply(reply, info.publication_handle)
        return done

    def _decode_failed(self, reason: str) -> None:
        self.dropped += 1
        if self._throttle.ready():
            self._bus.logger.warning(
                "service %s: dropped a malformed request: %s (%d so far)",
                self.name, reason, self.dropped,
            )  # fmt: skip

    def _reply(self, data: bytes, request_writer: int) -> None:
        """Send a reply once the requesting client's reply reader is matched (as rmw does)."""
        deadline = time.monotonic() + _REPLY_MATCH_S
        while True:
            present = self._client_present(request_writer)
            if present == "gone":
                return
            if present == "yes":
                break
            if time.monotonic() >= deadline:
                self.unanswered += 1
                if self._unanswered_throttle.ready():
                    self._bus.logger.warning(
                        "service %s: the client's reply reader is not matched after %.1f s; "
                        "reply not sent (%d so far)",
                        self.name, _REPLY_MATCH_S, self.unanswered,
                    )  # fmt: skip
                return
            time.sleep(0.005)
        try:
            if not cy.write(self._ep.writer, data):
                self._bus.logger.warning("service %s: reply not sent (writer blocked)", self.name)
        except cy.DDSException as exc:
            self._bus.logger.error("service %s: Cyclone DDS refused the reply: %s", self.name, exc)

    def _client_present(self, request_writer: int) -> str:
        """rmw's ``check_for_response_reader``: "yes", "maybe" (not matched yet) or "gone"."""
        try:
            writer = self._ep.reader.get_matched_publication_data(request_writer)
        except cy.DDSException:
            writer = None
        if writer is None:
            return "gone"
        clientid = _user_data_key(writer.qos, "clientid")
        if clientid is None:
            return "yes"  # a client without an id (older rmw): assume all is well, as rmw
        reply_writer = self._ep.writer
        for handle in reply_writer.get_matched_subscriptions():
            try:
                reader = reply_writer.get_matched_subscription_data(handle)
            except cy.DDSException:
                continue
            if reader is not None and _user_data_key(reader.qos, "clientid") == clientid:
                return "yes"
        return "maybe"

    def _release(self) -> None:
        self._ep.release()


class DdsClient(Client):
    """A client: requests on ``rq/<name>Request``, replies from ``rr/<name>Reply`` (only those
    carrying its own id). :meth:`call` takes the replies itself, so it needs no spinning."""

    _bus: DdsBus

    def __init__(self, bus: DdsBus, name: str, srvtype: str, qos: QoS) -> None:
        request_type, response_type = bus._srv_names(srvtype)
        super().__init__(bus, name, srvtype, request_type, response_type, qos)
        with bus._entities_lock:
            self._ep = _Endpoints(
                bus, name, qos, response_type, request_type,
                reply_topic(name), request_topic(name), "clientid", "service client",
            )  # fmt: skip
            # call() waits on its own WaitSet, so it works whether or not the bus is spun
            self._waitset = cy.WaitSet(bus.participant)
            self._wait_condition = cy.ReadCondition(self._ep.reader, cy.ANY_STATE)
            self._waitset.attach(self._wait_condition)
        # as rmw: the request writer's instance handle (a uint64; Python's binding may give it
        # as a signed int64)
        self.client_id = int(self._ep.writer.get_instance_handle()) & 0xFFFF_FFFF_FFFF_FFFF
        self.dropped = 0
        self._take_lock = threading.Lock()
        self._wait_lock = threading.Lock()
        self._throttle = _Throttle()
        bus._wake()

    def service_is_ready(self) -> bool:
        """rmw's ``check_for_service_reader_writer``: a request reader and a reply writer
        matched, of the same server when the servers say which they are (``serviceid``)."""
        if self._destroyed or self._bus._closed:
            return False
        try:
            readers = self._ep.writer.get_matched_subscriptions()
            writers = self._ep.reader.get_matched_publications()
            ids = {
                _user_data_key(self._ep.writer.get_matched_subscription_data(h).qos, "serviceid")
                for h in readers
            } - {None}
            if not ids:
                return bool(readers) and bool(writers)
            return any(
                _user_data_key(self._ep.reader.get_matched_publication_data(h).qos, "serviceid")
                in ids
                for h in writers
            )
        except (cy.DDSException, AttributeError):  # an endpoint vanished meanwhile
            return False

    def _send(
        self, sequence: int, data: bytes, request: Any, future: concurrent.futures.Future
    ) -> None:
        try:
            sent = cy.write(self._ep.writer, pack(data, self.client_id, sequence))
        except cy.DDSException as exc:
            raise TransportError(
                f"service {self.name}: Cyclone DDS refused the request: {exc}"
            ) from exc
        if not sent:
            resolve_future(
                future,
                error=TransportError(f"service {self.name}: request not sent (writer blocked)"),
            )

    def _poll(self) -> int:
        if not self._take_lock.acquire(blocking=False):
            return 0  # another thread is taking right now
        try:
            if self._destroyed:
                return 0
            samples = cy.take(self._ep.reader, _TAKE_BATCH)
        except cy.DDSException:
            return 0
        finally:
            self._take_lock.release()
        done = 0
        for data in samples:
            try:
                client_id, sequence, body = unpack(data)
            except MessageError as exc:
                self.dropped += 1
                if self._throttle.ready():
                    self._bus.logger.warning("service %s: malformed reply: %s", self.name, exc)
                continue
            if client_id != self.client_id:
                continue  # another client's reply
            future = self._take_pending(sequence)
            if future is not None:
                self._complete(future, body)
                done += 1
        return done

    def _wait(self, future: concurrent.futures.Future, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not future.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise concurrent.futures.TimeoutError
            self._poll()
            if future.done():
                break
            slice_s = min(remaining, _WAIT_SLICE_S)
            if self._wait_lock.acquire(blocking=False):  # one waiter per WaitSet
                try:
                    if not self._destroyed:
                        self._waitset.wait(max(0, int(slice_s * 1e9)))
                finally:
                    self._wait_lock.release()
            else:
                time.sleep(slice_s)
        return future.result(0)

    def _release(self) -> None:
        with self._bus._entities_lock, self._wait_lock, self._take_lock:
            self._waitset.detach(self._wait_condition)
            cy.delete(self._wait_condition)
            cy.delete(self._waitset)
        self._ep.release()
