"""Cyclone DDS binding: the Bus on a real middleware, speaking ROS 2's wire conventions.

A ROS topic ``/camera/image`` is the DDS topic ``rt/camera/image`` with the type
``sensor_msgs::msg::dds_::Image_``, samples are the same CDR bytes rclpy and rosbag2 carry, and the
QoS maps one to one; so nodes on this binding and ROS 2 nodes using rmw_cyclonedds on the same
domain (``ROS_DOMAIN_ID``, default 0) see each other's topics.

Each bus is one participant that presents itself to ROS 2 as rmw_cyclonedds does
(:mod:`.graph_info`): USER_DATA ``enclave=/;`` on the participant, the node's name and its
endpoints' GIDs on ``ros_discovery_info`` (republished whenever an endpoint comes or goes), so
``ros2 node list`` and ``ros2 topic info -v`` show the node; on Jazzy every reader and writer
carries ``typehash=RIHS01_...;`` in its USER_DATA, as Jazzy peers expect. Transient-local
endpoints keep ``depth`` samples for late joiners (Cyclone's durability service history). A peer
whose QoS does not match (a best-effort publisher for a reliable subscription, volatile for
transient local, ...) is logged once per endpoint and policy, as rclpy does by default; the
check runs in the spin loop at most once a second. Actions are not provided.

Configuration is Cyclone's own: ``CYCLONEDDS_URI``. ``loopback=True`` (or
:func:`use_loopback_config`) points it, when unset, at the shipped
``config/cyclonedds_loopback.xml`` (loopback interface, no multicast, the local peer named,
buffers sized for 1080p images): what CI, containers and single hosts need.

Samples are taken by a WaitSet in the spinning thread, so callbacks run there, as in rclpy's
single-threaded executor.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _cyclone as cy
from . import graph_info as gi
from .bus import Bus, Publisher, Subscription, TransportError, _Throttle
from .naming import dds_topic, dds_typename
from .qos import QoS

LOOPBACK_CONFIG = "cyclonedds_loopback.xml"
_MAX_WAIT_S = 1.0  # a blocked wait returns at least this often (signals are handled in between)
_TAKE_BATCH = 32
_DOMAIN_MAX = 232  # highest domain id whose RTPS ports fit in 16 bits with the default mapping
_QOS_CHECK_S = 1.0  # how often the spin loop looks for peers refused for incompatible QoS


def loopback_config_path() -> Path:
    """The shipped loopback configuration: in a source checkout, or installed under
    ``share/vad_inspection/config`` (pip data_files, colcon/ament)."""
    candidates = [Path(__file__).resolve().parents[3] / "config" / LOOPBACK_CONFIG]
    prefixes = [sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    candidates += [
        Path(p) / "share" / "vad_inspection" / "config" / LOOPBACK_CONFIG for p in prefixes if p
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{LOOPBACK_CONFIG} not found (looked in {', '.join(str(c.parent) for c in candidates)})"
    )


def use_loopback_config(force: bool = False) -> str:
    """Point ``CYCLONEDDS_URI`` at the loopback configuration unless it is already set (or
    ``force``); return the value in effect. Must run before the process's first participant."""
    current = os.environ.get("CYCLONEDDS_URI")
    if current and not force:
        return current
    uri = loopback_config_path().as_uri()
    os.environ["CYCLONEDDS_URI"] = uri
    return uri


def domain_id_from_env() -> int:
    value = os.environ.get("ROS_DOMAIN_ID", "").strip()
    if not value:
        return 0
    try:
        domain = int(value)
    except ValueError:
        raise TransportError(f"ROS_DOMAIN_ID={value!r} is not an integer") from None
    return domain


class DdsPublisher(Publisher):
    _bus: DdsBus

    def __init__(self, bus: DdsBus, topic: str, typename: str, qos: QoS, writer: Any) -> None:
        super().__init__(bus, topic, typename, qos)
        self.writer = writer
        self.unsent = 0
        self._throttle = _Throttle()

    def _write(self, data: bytes) -> None:
        try:
            sent = cy.write(self.writer, data)
        except cy.DDSException as exc:
            raise TransportError(
                f"{self.topic}: Cyclone DDS refused the sample ({exc}); "
                "is it CDR with a 4-byte encapsulation header?"
            ) from exc
        if not sent:
            self.unsent += 1
            if self._throttle.ready():
                self._bus.logger.warning(
                    "%s: a reliable subscriber did not keep up for %.1f s; sample not sent "
                    "(%d so far)",
                    self.topic,
                    self._bus.max_blocking_s,
                    self.unsent,
                )

    @property
    def subscription_count(self) -> int:
        return 0 if self._destroyed or self._bus._closed else cy.publication_matched(self.writer)


class DdsSubscription(Subscription):
    _bus: DdsBus

    def __init__(self, *args: Any, reader: Any, condition: Any) -> None:
        super().__init__(*args)
        self.reader = reader
        self.condition = condition

    def _poll(self) -> int:
        done = 0
        try:
            samples = cy.take(self.reader, _TAKE_BATCH, normalise=False)
        except cy.DDSException:
            if self._destroyed:  # destroyed by another thread meanwhile
                return 0
            raise
        for data in samples:
            self._deliver(cy.unpad(data) if self.raw else cy.unpadded_view(data))
            done += 1
        return done

    @property
    def publisher_count(self) -> int:
        return 0 if self._destroyed or self._bus._closed else cy.subscription_matched(self.reader)


@dataclass
class _Endpoint:
    """A reader or writer of this node as the graph sees it, and what was said about it."""

    entity: Any
    is_reader: bool
    name: str  # the ROS name warnings use (topic, or service)
    qos: QoS | None
    what: str  # "subscription", "publisher", "service server", ...
    gid: bytes
    refused: int = 0  # peers refused for incompatible QoS, as last seen
    warned: set[int] = field(default_factory=set)  # policies already logged


class _GraphPresence:
    """One node's presence in the ROS 2 graph: its ``ros_discovery_info`` writer, the GIDs it
    announces, and the incompatible-QoS watch over its endpoints.

    Its own lock (never held while taking the bus's entity lock), so endpoints can be
    (un)registered with or without the bus's lock held."""

    def __init__(self, bus: DdsBus) -> None:
        self._bus = bus
        self._distro = bus.distro
        self._lock = threading.Lock()
        self._endpoints: dict[int, _Endpoint] = {}  # id(entity) -> endpoint, in creation order
        self._next_check = 0.0
        self._closed = False
        self.participant_gid = gi.gid_bytes(cy.guid(bus.participant), bus.distro)
        self.topic = cy.Topic(
            bus.participant, gi.DISCOVERY_TOPIC, cy.idl_class(gi.DISCOVERY_TYPE, bus.distro)
        )
        user_data = gi.endpoint_user_data(gi.DISCOVERY_TYPE, bus.distro)
        qos = cy.cyclone_qos(gi.DISCOVERY_QOS, bus.max_blocking_s, user_data)
        self.writer = cy.DataWriter(bus.participant, self.topic, qos)

    def add(self, entity: Any, name: str, qos: QoS | None, what: str) -> None:
        gid = gi.gid_bytes(cy.guid(entity), self._distro)
        is_reader = isinstance(entity, cy.DataReader)
        with self._lock:
            self._endpoints[id(entity)] = _Endpoint(entity, is_reader, name, qos, what, gid)
            self._publish()

    def remove(self, entity: Any) -> None:
        with self._lock:
            if self._endpoints.pop(id(entity), None) is not None:
                self._publish()

    def publish(self) -> None:
        with self._lock:
            self._publish()

    def _publish(self) -> None:
        if self._closed:
            return
        readers = [e.gid for e in self._endpoints.values() if e.is_reader]
        writers = [e.gid for e in self._endpoints.values() if not e.is_reader]
        node = gi.NodeEntities(self._bus.namespace, self._bus.name, readers, writers)
        self._write([node])

    def _write(self, nodes: list[gi.NodeEntities]) -> None:
        data = gi.encode_participant_entities_info(self.participant_gid, nodes, self._distro)
        try:
            cy.write(self.writer, data)
        except cy.DDSException as exc:  # the graph view is advisory: never fail an endpoint
            self._bus.logger.warning("could not publish %s: %s", gi.DISCOVERY_TOPIC, exc)

    def check_qos(self) -> None:
        """Log peers refused for incompatible QoS, once per endpoint and policy; cheap enough
        to call on every dispatch (looks at the statuses at most every ``_QOS_CHECK_S``)."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + _QOS_CHECK_S
        with self._lock:
            eps = list(self._endpoints.values())
        for ep in eps:
            try:
                total, policy = cy.incompatible_qos(ep.entity)
            except cy.DDSException:  # deleted by another thread meanwhile
                continue
            if total <= ep.refused:
                continue
            ep.refused = total
            if policy not in ep.warned:
                ep.warned.add(policy)
                self._bus.logger.warning(
                    gi.incompatible_qos_message(ep.name, policy, ep.qos, ep.is_reader, ep.what)
                )

    def close(self) -> None:
        """Announce the node gone (rmw_destroy_node does the same) and delete the writer."""
        with self._lock:
            if self._closed:
                return
            self._write([])
            self._closed = True
            self._endpoints.clear()
        cy.delete(self.writer)
        cy.delete(self.topic)


class DdsBus(Bus):
    """Cyclone DDS binding. Options: ``domain_id`` (default ``ROS_DOMAIN_ID`` or 0),
    ``loopback`` (use the shipped loopback configuration when ``CYCLONEDDS_URI`` is unset),
    ``max_blocking_s`` (how long a reliable publish may wait for a slow subscriber, default 1)."""

    kind = "dds"

    def __init__(
        self,
        node_name: str,
        *,
        domain_id: int | None = None,
        loopback: bool = False,
        max_blocking_s: float = 1.0,
        **options: Any,
    ) -> None:
        self.domain_id = domain_id_from_env() if domain_id is None else int(domain_id)
        if not 0 <= self.domain_id <= _DOMAIN_MAX:
            raise TransportError(f"DDS domain id {self.domain_id} is outside 0..{_DOMAIN_MAX}")
        self.loopback = loopback
        self.max_blocking_s = max_blocking_s
        self._entities_lock = threading.Lock()
        self._topics: dict[str, tuple[Any, str]] = {}
        super().__init__(node_name, **options)

    # lifecycle -----------------------------------------------------------------------------

    def _open(self) -> None:
        if self.loopback:
            use_loopback_config()
        self.participant = cy.participant(self.domain_id, gi.participant_user_data())
        try:
            self._waitset = cy.WaitSet(self.participant)
            self._guard = cy.GuardCondition(self.participant)
            self._waitset.attach(self._guard)
            self._graph = _GraphPresence(self)
            self._graph.publish()  # the node exists before it has endpoints
        except BaseException:
            cy.delete(self.participant)
            raise

    def _close(self) -> None:
        with self._entities_lock:
            self._graph.close()
            for sub in list(self._subscriptions):
                self._drop_reader(sub)  # type: ignore[arg-type]
            for pub in list(self._publishers):
                cy.delete(pub.writer)  # type: ignore[attr-defined]
            for topic, _ in self._topics.values():
                cy.delete(topic)
            self._topics.clear()
            cy.delete(self._guard)
            cy.delete(self._waitset)
            cy.delete(self.participant)

    # endpoints -----------------------------------------------------------------------------

    def _topic(self, name: str, typename: str) -> Any:
        dds_name = dds_topic(name)
        known = self._topics.get(dds_name)
        if known is not None:
            if known[1] != typename:
                raise TransportError(
                    f"{name}: already used with type {known[1]} on this node, not {typename}"
                )
            return known[0]
        try:
            topic = cy.Topic(self.participant, dds_name, cy.idl_class(typename, self.distro))
        except cy.DDSException as exc:
            raise TransportError(
                f"{name}: cannot create DDS topic {dds_name} [{dds_typename(typename)}]: {exc}"
            ) from exc
        self._topics[dds_name] = (topic, typename)
        return topic

    def _create_publisher(self, topic: str, typename: str, qos: QoS) -> Publisher:
        with self._entities_lock:
            user_data = gi.endpoint_user_data(typename, self.distro)
            qos_ = cy.cyclone_qos(qos, self.max_blocking_s, user_data)
            writer = cy.DataWriter(self.participant, self._topic(topic, typename), qos_)
            self._register_endpoint(writer, topic, qos)
        return DdsPublisher(self, topic, typename, qos, writer)

    def _create_subscription(
        self, topic: str, typename: str, callback: Callable[[Any], None], qos: QoS, raw: bool
    ) -> Subscription:
        with self._entities_lock:
            qos_ = cy.cyclone_qos(qos, user_data=gi.endpoint_user_data(typename, self.distro))
            reader = cy.DataReader(self.participant, self._topic(topic, typename), qos_)
            condition = cy.ReadCondition(reader, cy.ANY_STATE)
            self._waitset.attach(condition)
            self._register_endpoint(reader, topic, qos)
        self._wake()
        return DdsSubscription(
            self, topic, typename, callback, qos, raw, reader=reader, condition=condition
        )

    def _destroy_publisher(self, publisher: Publisher) -> None:
        with self._entities_lock:
            self._unregister_endpoint(publisher.writer)  # type: ignore[attr-defined]
            cy.delete(publisher.writer)  # type: ignore[attr-defined]
        super()._destroy_publisher(publisher)

    def _destroy_subscription(self, subscription: Subscription) -> None:
        with self._entities_lock:
            self._unregister_endpoint(subscription.reader)  # type: ignore[attr-defined]
            self._drop_reader(subscription)  # type: ignore[arg-type]
        super()._destroy_subscription(subscription)

    def _drop_reader(self, sub: DdsSubscription) -> None:
        if self._waitset.is_attached(sub.condition):
            self._waitset.detach(sub.condition)
        cy.delete(sub.condition)
        cy.delete(sub.reader)

    # the node in the ROS 2 graph ---------------------------------------------------------------

    def _register_endpoint(
        self, entity: Any, name: str, qos: QoS | None = None, what: str = ""
    ) -> None:
        """Announce a DataReader or DataWriter of this node on ``ros_discovery_info`` (its GID in
        the node's reader or writer list, republished now) and watch it for peers refused for
        incompatible QoS (warnings name ``name`` and, when given, ``what`` it is: "subscription"
        and "publisher" by default, e.g. "service server" for a service's request reader).

        For every endpoint the node owns: publishers and subscriptions do it here; services and
        clients register their request/reply reader and writer (rmw_cyclonedds lists a service's
        request reader and reply writer, a client's request writer and reply reader). Safe with
        or without ``_entities_lock`` held. Call :meth:`_unregister_endpoint` before deleting."""
        self._graph.add(entity, name, qos, what)

    def _unregister_endpoint(self, entity: Any) -> None:
        """Drop an endpoint from the node's announced entities (republished now); call before
        deleting it. Unknown entities are ignored."""
        self._graph.remove(entity)

    # spinning ------------------------------------------------------------------------------

    def _dispatch(self) -> int:
        self._graph.check_qos()
        done = 0
        for sub in list(self._subscriptions):
            if not sub._destroyed:
                done += sub._poll()  # type: ignore[attr-defined]
        return done

    def _wait(self, timeout: float | None) -> None:
        seconds = _MAX_WAIT_S if timeout is None else min(timeout, _MAX_WAIT_S)
        self._waitset.wait(max(0, int(seconds * 1e9)))
        self._guard.set(False)

    def _wake(self) -> None:
        guard = getattr(self, "_guard", None)
        if guard is not None and not self._closed:
            guard.set(True)

    # services (rmw_cyclonedds' wire layout, see _dds_service) ---------------------------------

    def _create_service(self, name: str, srvtype: str, callback: Any, qos: QoS) -> Any:
        from ._dds_service import DdsService

        return DdsService(self, name, srvtype, callback, qos)

    def _create_client(self, name: str, srvtype: str, qos: QoS) -> Any:
        from ._dds_service import DdsClient

        return DdsClient(self, name, srvtype, qos)
