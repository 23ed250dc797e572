"""Foxglove live view: stream a Bus's topics to the Foxglove app over its WebSocket protocol.

Why: to watch the robot's detections, images and hazard grids live without a ROS 2 install (no
``foxglove_bridge``, no rclpy): the bridge is an ordinary node on any :class:`~.bus.Bus`
binding (local, dds, ros) running the ``foxglove`` SDK's WebSocket server.

The CDR bytes of every message go through unchanged (raw subscriptions, no decode, no
re-encode). Each topic becomes a channel with message encoding ``cdr``, schema name the ROS type
name (``sensor_msgs/msg/Image``) and, as schema, the type's full ``ros2msg`` definition with its
dependencies: the very text :class:`~.bag.BagWriter` stores in a bag (both come from rosbags'
``generate_msgdef`` on the distro's typestore), so Foxglove decodes the live stream exactly as
it decodes a recorded bag. The log time is the message's header stamp when its type starts with
``std_msgs/Header`` (and the stamp is set), else the bus clock's now.

Spinning: the bridge adds subscriptions to the bus it is given and does not spin it; messages
reach Foxglove while the caller spins that bus (``bus.spin()``, ``spin_once``, ``spin_until``),
as for any node. Call :meth:`FoxgloveBridge.add_topic` before spinning or from the spinning
thread (a timer callback, say). The server itself runs on the SDK's own threads.

Each bridge has its own ``foxglove.Context``, so several bridges (and other SDK sinks in the
process) do not see each other's channels. Clients must offer the WebSocket subprotocol
``foxglove.sdk.v1`` (the Foxglove app does; it is the old ``foxglove.websocket.v1`` renamed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from ..msgs.cdr import header_stamp_ns
from ..msgs.types import MessageError, msg_class, normalize_typename, typestore
from .bus import Bus, Subscription, TransportError
from .qos import SENSOR_DATA, QoS, profile

if TYPE_CHECKING:
    import foxglove
    from foxglove.websocket import WebSocketServer

MESSAGE_ENCODING = "cdr"
SUBPROTOCOL = "foxglove.sdk.v1"
"""The WebSocket subprotocol the SDK's server accepts (same protocol as foxglove.websocket.v1)."""
HEADER = "std_msgs/msg/Header"
_IDL_MARK = "=" * 80 + "\nIDL: "  # how rosbags marks an IDL-sourced definition (ros2idl)


def message_definition(typename: str, distro: str = "jazzy") -> tuple[str, str]:
    """``(schema_encoding, text)`` of ``typename``: the concatenated definition a rosbag2 MCAP
    stores (main definition, then per dependency 80 '=', ``MSG: pkg/Type`` and its text).

    Raises :class:`~vad_inspection.msgs.MessageError` naming the type if it is unknown.
    """
    name = normalize_typename(typename)
    msg_class(name, distro)  # unknown types fail here, named
    text, _md5 = typestore(distro).generate_msgdef(name, ros_version=2)
    return ("ros2idl" if text.startswith(_IDL_MARK) else "ros2msg"), text


def _is_stamped(typename: str, distro: str) -> bool:
    """Does the type's CDR start with a ``std_msgs/Header`` (so its stamp leads the bytes)?"""
    fields = typestore(distro).fielddefs[typename][1]
    if not fields:
        return False
    _kind, ref = fields[0][1]  # a nested message's ref is its type name
    return ref == HEADER


@dataclass(frozen=True)
class _Topic:
    topic: str  # as given (the bus resolves it)
    name: str  # resolved: the channel's topic
    typename: str
    schema_encoding: str
    schema: str
    stamped: bool
    qos: QoS


class FoxgloveBridge:
    """Serve ``topics`` (``(topic, ROS type name)`` pairs) of ``bus`` to Foxglove.

    ``port=0`` binds a free port; :meth:`start` returns the one bound. ``qos`` is the
    subscriptions' QoS: by default best effort and volatile, which every publisher matches
    (pass ``LATCHED`` per topic in :meth:`add_topic` to get a latched map's last message).
    Unknown type names raise :class:`~vad_inspection.msgs.MessageError` naming the type, before
    anything is started. Use as a context manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        bus: Bus,
        topics: Iterable[tuple[str, str]] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        name: str | None = None,
        qos: QoS | str | None = None,
    ) -> None:
        self.bus = bus
        self.host = host
        self.requested_port = port
        self.name = name or f"vad_inspection {bus.fqn}"
        self.qos = SENSOR_DATA if qos is None else profile(qos)
        self._topics: dict[str, _Topic] = {}
        self._channels: dict[str, foxglove.Channel] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._context: foxglove.Context | None = None
        self._server: WebSocketServer | None = None
        self._lock = threading.Lock()
        for topic, typename in topics:
            self.add_topic(topic, typename)

    @property
    def port(self) -> int | None:
        """The port the server listens on; None when not started."""
        return None if self._server is None else self._server.port

    @property
    def topics(self) -> dict[str, str]:
        """Bridged topics (resolved names) -> ROS type names."""
        return {name: t.typename for name, t in self._topics.items()}

    def add_topic(self, topic: str, typename: str, qos: QoS | str | None = None) -> None:
        """Bridge one more topic; advertised to connected clients at once if started.
        Idempotent for the same type; another type on a bridged topic is a TransportError."""
        name = normalize_typename(typename)
        distro = self.bus.distro
        try:
            encoding, schema = message_definition(name, distro)
        except MessageError as exc:
            raise MessageError(f"cannot bridge {topic!r} to Foxglove: {exc}") from None
        resolved = self.bus.resolve(topic)
        with self._lock:
            have = self._topics.get(resolved)
            if have is not None:
                if have.typename != name:
                    raise TransportError(
                        f"{resolved} is bridged as {have.typename} already, not {name}"
                    )
                return
            entry = _Topic(
                topic,
                resolved,
                name,
                encoding,
                schema,
                _is_stamped(name, distro),
                self.qos if qos is None else profile(qos),
            )
            self._topics[resolved] = entry
            if self._server is not None:
                self._open(entry)

    def start(self) -> int:
        """Start the server and subscribe to every topic; returns the port bound (idempotent)."""
        with self._lock:
            if self._server is not None:
                return self._server.port
            import foxglove  # the SDK's native library loads only when a bridge starts

            self._context = foxglove.Context()
            try:
                self._server = foxglove.start_server(
                    name=self.name,
                    host=self.host,
                    port=self.requested_port,
                    context=self._context,
                )
            except RuntimeError as exc:  # the SDK raises RuntimeError("FoxgloveError: ...")
                self._context = None
                where = f"{self.host}:{self.requested_port}"
                raise TransportError(f"cannot start the Foxglove server on {where}: {exc}") from exc
            try:
                for entry in self._topics.values():
                    self._open(entry)
            except BaseException:
                self._close()
                raise
            return self._server.port

    def stop(self) -> None:
        """Unsubscribe, unadvertise and stop the server. Safe to call twice."""
        with self._lock:
            self._close()

    def __enter__(self) -> FoxgloveBridge:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self._server is not None else "stopped"
        return f"<FoxgloveBridge {self.bus.fqn} {where} {len(self._topics)} topics>"

    # internals (called with the lock held) -------------------------------------------------

    def _open(self, entry: _Topic) -> None:
        import foxglove

        schema = foxglove.Schema(
            name=entry.typename, encoding=entry.schema_encoding, data=entry.schema.encode()
        )
        channel = foxglove.Channel(
            entry.name, schema=schema, message_encoding=MESSAGE_ENCODING, context=self._context
        )
        self._channels[entry.name] = channel
        self._subscriptions[entry.name] = self.bus.create_subscription(
            entry.topic,
            entry.typename,
            self._forwarder(channel, entry.stamped),
            entry.qos,
            raw=True,
        )

    def _forwarder(self, channel: foxglove.Channel, stamped: bool) -> Callable[[bytes], None]:
        now_ns = self.bus.now_ns

        def forward(data: bytes) -> None:
            stamp = header_stamp_ns(data) if stamped else None
            channel.log(data, log_time=stamp if stamp is not None and stamp > 0 else now_ns())

        return forward

    def _close(self) -> None:
        live = self.bus.subscriptions  # empty once the bus is shut down: nothing to destroy
        for subscription in self._subscriptions.values():
            if subscription in live:
                subscription.destroy()
        self._subscriptions.clear()
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._context = None


def serve(
    bus: Bus, topics: Iterable[tuple[str, str]], host: str = "127.0.0.1", port: int = 8765
) -> FoxgloveBridge:
    """Start a :class:`FoxgloveBridge` of ``topics`` on ``host:port`` (the CLI's entry point).

    The caller spins ``bus`` and calls ``stop()`` on the returned bridge when done.
    """
    bridge = FoxgloveBridge(bus, topics, host=host, port=port)
    bridge.start()
    return bridge
