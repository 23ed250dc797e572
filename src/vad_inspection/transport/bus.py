"""The Bus: what a node needs from a middleware, written once and bound three ways.

A node talks to a :class:`Bus`: typed publishers and subscriptions with a :class:`~.qos.QoS`,
services and service clients (:mod:`.service`), timers on the node's clock, a logger, parameters
(served to ``ros2 param`` on every binding), and ``spin``/``shutdown``. Bindings:

- ``local`` (:mod:`.local`): in-process and deterministic, for composition and tests;
- ``dds`` (:mod:`.dds`): Cyclone DDS speaking ROS 2's wire conventions, no ROS needed;
- ``ros`` (:mod:`.ros`): rclpy, for robots with ROS 2.

:func:`create_bus` imports a binding only when it is chosen (rclpy never, unless ``"ros"``).

Messages are rosbags message objects (:mod:`vad_inspection.msgs`) and travel as CDR bytes on
every binding: ``publish`` takes a message (serialised here) or ready CDR bytes (sent as they
are); a subscription gets the decoded message, or the bytes when created with ``raw=True``. A
message that does not decode is logged with its topic and type, counted in the subscription's
``dropped`` and skipped: one bad sample never stops a subscriber.

Callbacks (subscriptions, service requests, timers) run on the thread that calls
:meth:`Bus.spin` / :meth:`Bus.spin_once`, one at a time. ``publish`` and a service client's
``call`` may be called from any thread.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import logging
import os
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import SetupError
from ..msgs import cdr
from ..msgs.types import MessageError, check_distro, msg_class, normalize_typename, srv_types
from .clock import NS, Clock
from .naming import node_fqn, normalize_namespace, resolve_topic, validate_node_name
from .params import Parameters
from .qos import CLOCK, QoS, profile

if TYPE_CHECKING:
    from .service import Client, Service, ServiceCallback

KINDS = ("local", "dds", "ros")
_BINDINGS = {
    "local": ("vad_inspection.transport.local", "LocalBus"),
    "dds": ("vad_inspection.transport.dds", "DdsBus"),
    "ros": ("vad_inspection.transport.ros", "RosBus"),
}
_BYTES = (bytes, bytearray, memoryview)
_SPIN_SLICE = 0.1  # s: how long spin() blocks before it looks at the shutdown flag again


class TransportError(SetupError):
    """The middleware refused an operation (closed bus, failed write, incompatible topic)."""


def create_bus(kind: str, node_name: str, **options: Any) -> Bus:
    """A :class:`Bus` of the given binding (``"local"``, ``"dds"`` or ``"ros"``) for one node.

    Common options: ``namespace``, ``parameters`` (dict of overrides), ``params_file`` (a ROS 2
    parameter YAML path or a list of them), ``use_sim_time``, ``clock``, ``remappings``,
    ``distro``, ``parameter_services`` (default True: serve rcl_interfaces' parameter services
    so ``ros2 param`` reaches the node; rclpy nodes always have their own). Binding options:
    see :class:`~.local.LocalBus`, :class:`~.dds.DdsBus`, :class:`~.ros.RosBus`.
    """
    try:
        module_name, class_name = _BINDINGS[kind]
    except KeyError:
        raise ValueError(f"unknown bus kind {kind!r}; choose one of {', '.join(KINDS)}") from None
    module = importlib.import_module(module_name)
    return getattr(module, class_name)(node_name, **options)


class _Throttle:
    """At most one log line per ``period`` seconds (the first one always passes)."""

    def __init__(self, period: float = 1.0) -> None:
        self.period = period
        self._last = -float("inf")

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.period:
            self._last = now
            return True
        return False


class Publisher:
    """Publishes on one topic with one message type; see :meth:`publish`."""

    def __init__(self, bus: Bus, topic: str, typename: str, qos: QoS) -> None:
        self._bus = bus
        self.topic = topic
        self.typename = typename
        self.qos = qos
        self.published = 0
        self._destroyed = False

    def publish(self, msg: Any) -> None:
        """Send a message object (serialised to CDR here) or CDR bytes (sent as they are)."""
        if self._destroyed:
            raise TransportError(f"publisher on {self.topic} is destroyed")
        self._bus._check_open()
        data = bytes(msg) if isinstance(msg, _BYTES) else self._bus._encode(msg, self.typename)
        self._write(data)
        self.published += 1

    def _write(self, data: bytes) -> None:  # pragma: no cover - every binding overrides
        raise NotImplementedError

    @property
    def subscription_count(self) -> int:
        """Matched subscriptions (on DDS: matched readers, as discovery has found them)."""
        return 0

    def wait_for_subscribers(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until ``count`` subscriptions match (True) or ``timeout`` s pass (False)."""
        deadline = time.monotonic() + timeout
        while self.subscription_count < count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def destroy(self) -> None:
        if not self._destroyed:
            self._destroyed = True
            self._bus._destroy_publisher(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.topic} [{self.typename}]>"


class Subscription:
    """Delivers messages of one topic to a callback; counts ``received`` and ``dropped``."""

    def __init__(
        self,
        bus: Bus,
        topic: str,
        typename: str,
        callback: Callable[[Any], None],
        qos: QoS,
        raw: bool,
    ) -> None:
        self._bus = bus
        self.topic = topic
        self.typename = typename
        self.callback = callback
        self.qos = qos
        self.raw = raw
        self.received = 0
        self.dropped = 0
        self._destroyed = False
        self._throttle = _Throttle()

    def _deliver(self, data: bytes | memoryview) -> bool:
        """Decode (unless raw) and run the callback; a decode failure is logged and dropped."""
        if self.raw:
            self.received += 1
            self.callback(bytes(data))
            return True
        try:
            msg = cdr.deserialize(data, self.typename, self._bus.distro)
        except MessageError as exc:
            self._drop(str(exc))
            return False
        except Exception as exc:  # nothing from the wire may crash the node
            self._drop(f"{type(exc).__name__}: {exc}")
            return False
        self.received += 1
        self.callback(msg)
        return True

    def _deliver_message(self, msg: Any) -> bool:
        """Hand over an already decoded message (in-process path without serialisation)."""
        self.received += 1
        self.callback(msg)
        return True

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        if self._throttle.ready():
            self._bus.logger.warning(
                "dropped a malformed message on %s [%s]: %s (%d dropped so far)",
                self.topic,
                self.typename,
                reason,
                self.dropped,
            )

    @property
    def publisher_count(self) -> int:
        return 0

    def destroy(self) -> None:
        if not self._destroyed:
            self._destroyed = True
            self._bus._destroy_subscription(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.topic} [{self.typename}]{' raw' if self.raw else ''}>"


class Timer:
    """Calls ``callback()`` every ``period`` seconds of the node's clock."""

    _ids = itertools.count()

    def __init__(self, bus: Bus, period_s: float, callback: Callable[[], None]) -> None:
        if not period_s > 0:
            raise ValueError(f"timer period must be > 0 s, got {period_s!r}")
        self._bus = bus
        self.period_ns = max(1, round(period_s * NS))
        self.callback = callback
        self.canceled = False
        self.calls = 0
        self._id = next(self._ids)
        self._next_ns = bus.clock.now_ns() + self.period_ns

    @property
    def period(self) -> float:
        return self.period_ns / NS

    def cancel(self) -> None:
        self.canceled = True

    def reset(self) -> None:
        """Restart the period from now (and un-cancel)."""
        self.canceled = False
        self._next_ns = self._bus.clock.now_ns() + self.period_ns
        self._bus._wake()

    def time_until_next_call(self) -> float:
        return max(0.0, (self._next_ns - self._bus.clock.now_ns()) / NS)


class Bus(ABC):
    """One node's view of the middleware. Use :func:`create_bus` to get one.

    ``with create_bus(...) as bus:`` shuts it down on exit. Typical main::

        with create_bus("dds", "detector", params_file="config/uav.yaml") as bus:
            bus.install_signal_handlers()      # SIGINT/SIGTERM end spin() cleanly
            Detector(bus)
            bus.spin()
    """

    kind = "abstract"
    handles_sim_time = False  # True when the middleware follows /clock itself (rclpy)
    provides_parameter_services = False  # True when the middleware serves them itself (rclpy)

    def __init__(
        self,
        node_name: str,
        *,
        namespace: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        params_file: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
        use_sim_time: bool | None = None,
        clock: Clock | None = None,
        remappings: Mapping[str, str] | None = None,
        distro: str = "jazzy",
        parameter_services: bool = True,
    ) -> None:
        self.name = validate_node_name(node_name)
        self.namespace = normalize_namespace(namespace)
        self.fqn = node_fqn(self.name, self.namespace)
        self.distro = check_distro(distro)
        self.remappings = dict(remappings or {})
        self.logger = logging.getLogger(self.fqn[1:].replace("/", "."))
        self._publishers: list[Publisher] = []
        self._subscriptions: list[Subscription] = []
        self._timers: list[Timer] = []
        self._services: list[Service] = []
        self._clients: list[Client] = []
        self._spin_owner: int | None = None  # thread running spin()/spin_until(), if any
        self._shutdown = threading.Event()
        self._closed = False
        self._signals: dict[int, Any] = {}
        self._last_now: int | None = None
        if isinstance(params_file, (str, os.PathLike)):
            files: list[str | os.PathLike] = [params_file]
        else:
            files = list(params_file or [])
        overrides = dict(parameters or {})
        if use_sim_time is not None:
            overrides["use_sim_time"] = bool(use_sim_time)
        self._open()
        try:
            self.parameters = self._make_parameters(files, overrides)
            sim = self.parameters.declare(
                "use_sim_time", False, description="follow /clock instead of the system time"
            )
            self.clock = self._make_clock(clock, sim)
            self.clock.add_listener(self._wake)
            self._clock_subscription: Subscription | None = None
            if sim and not self.handles_sim_time:
                self._clock_subscription = self.create_subscription(
                    "/clock", "rosgraph_msgs/msg/Clock", self._on_clock, CLOCK
                )
            if parameter_services and not self.provides_parameter_services:
                from .service import ParameterServices

                self.parameter_services: ParameterServices | None = ParameterServices(self)
            else:
                self.parameter_services = None
        except BaseException:
            self._closed = True
            try:
                self._destroy_service_endpoints()
            finally:
                self._close()
            raise

    # hooks for the bindings ----------------------------------------------------------------

    def _open(self) -> None:  # noqa: B027 - optional hook
        """Connect to the middleware (called before parameters and clock exist)."""

    def _make_parameters(self, files: list, overrides: dict[str, Any]) -> Parameters:
        return Parameters(self.fqn, files, overrides)

    def _make_clock(self, clock: Clock | None, sim: bool) -> Clock:
        clock = clock or Clock()
        if sim:
            clock.enable_sim_time()
        return clock

    @abstractmethod
    def _create_publisher(self, topic: str, typename: str, qos: QoS) -> Publisher: ...

    @abstractmethod
    def _create_subscription(
        self, topic: str, typename: str, callback: Callable[[Any], None], qos: QoS, raw: bool
    ) -> Subscription: ...

    def _destroy_publisher(self, publisher: Publisher) -> None:
        if publisher in self._publishers:
            self._publishers.remove(publisher)

    def _destroy_subscription(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def _create_service(
        self, name: str, srvtype: str, callback: ServiceCallback, qos: QoS
    ) -> Service:
        raise TransportError(f"the {self.kind} binding has no services")

    def _create_client(self, name: str, srvtype: str, qos: QoS) -> Client:
        raise TransportError(f"the {self.kind} binding has no services")

    def _forget_service(self, service: Service) -> None:
        if service in self._services:
            self._services.remove(service)

    def _forget_client(self, client: Client) -> None:
        if client in self._clients:
            self._clients.remove(client)

    @abstractmethod
    def _dispatch(self) -> int:
        """Deliver the messages ready now; return how many callbacks ran."""

    @abstractmethod
    def _wait(self, timeout: float | None) -> None:
        """Block until a message may be ready, :meth:`_wake` is called, or ``timeout`` s pass."""

    @abstractmethod
    def _wake(self) -> None:
        """Make a blocked :meth:`_wait` return (any thread, signal handlers included)."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release middleware resources (called once by :meth:`shutdown`)."""

    # the node API --------------------------------------------------------------------------

    def resolve(self, topic: str) -> str:
        """The fully qualified name ``topic`` resolves to for this node (namespace, ~, remaps)."""
        return resolve_topic(topic, self.namespace, self.name, self.remappings)

    def create_publisher(
        self, topic: str, typename: str, qos: QoS | str | None = None
    ) -> Publisher:
        self._check_open()
        name = self.resolve(topic)
        typename = self._check_type(typename)
        publisher = self._create_publisher(name, typename, profile(qos))
        self._publishers.append(publisher)
        return publisher

    def create_subscription(
        self,
        topic: str,
        typename: str,
        callback: Callable[[Any], None],
        qos: QoS | str | None = None,
        raw: bool = False,
    ) -> Subscription:
        self._check_open()
        name = self.resolve(topic)
        typename = self._check_type(typename)
        subscription = self._create_subscription(name, typename, callback, profile(qos), raw)
        self._subscriptions.append(subscription)
        return subscription

    def create_service(
        self,
        name: str,
        srvtype: str,
        callback: ServiceCallback,
        qos: QoS | str | None = None,
    ) -> Service:
        """Serve ``name`` (resolved like a topic) with the service type ``srvtype``
        (``pkg/srv/Name``): ``callback(request)`` returns the response; it runs on the spinning
        thread. QoS: rmw's service default (reliable, volatile, keep last 10) unless given."""
        self._check_open()
        resolved = self.resolve(name)
        srvtype = self._check_srv_type(srvtype)
        service = self._create_service(resolved, srvtype, callback, self._service_qos(qos))
        self._services.append(service)
        return service

    def create_client(self, name: str, srvtype: str, qos: QoS | str | None = None) -> Client:
        """A client of the service ``name`` (resolved like a topic) of type ``srvtype``."""
        self._check_open()
        resolved = self.resolve(name)
        srvtype = self._check_srv_type(srvtype)
        client = self._create_client(resolved, srvtype, self._service_qos(qos))
        self._clients.append(client)
        return client

    def create_timer(self, period_s: float, callback: Callable[[], None]) -> Timer:
        self._check_open()
        timer = Timer(self, period_s, callback)
        self._timers.append(timer)
        self._wake()
        return timer

    def destroy_timer(self, timer: Timer) -> None:
        timer.cancel()
        if timer in self._timers:
            self._timers.remove(timer)

    def now_ns(self) -> int:
        return self.clock.now_ns()

    @property
    def publishers(self) -> list[Publisher]:
        return list(self._publishers)

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions)

    @property
    def services(self) -> list[Service]:
        """The services this node serves (its parameter services included)."""
        return list(self._services)

    @property
    def clients(self) -> list[Client]:
        return list(self._clients)

    # spinning ------------------------------------------------------------------------------

    def ok(self) -> bool:
        """False once shutdown has been requested (signal, :meth:`request_shutdown`)."""
        return not self._shutdown.is_set() and not self._closed

    def spin_once(self, timeout: float | None = None) -> int:
        """Run what is ready: messages (in arrival order), then due timers. If nothing is ready,
        wait up to ``timeout`` s (None: until something is) for work. Returns callbacks run."""
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            done = self._dispatch()
            done += self._poll_service_endpoints()
            done += self._fire_timers()
            if done or self._shutdown.is_set():
                return done
            wait = self._until_next_timer()
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return 0
                wait = remaining if wait is None else min(wait, remaining)
            self._wait(wait)

    def spin(self) -> None:
        """Run callbacks until shutdown is requested (SIGINT/SIGTERM once
        :meth:`install_signal_handlers` ran, or :meth:`request_shutdown`)."""
        with self._spinning():
            while self.ok():
                self.spin_once(_SPIN_SLICE)

    def spin_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Spin until ``predicate()`` is true (True) or ``timeout`` s pass / shutdown (False)."""
        deadline = time.monotonic() + timeout
        with self._spinning():
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.ok():
                    return predicate()
                self.spin_once(min(remaining, _SPIN_SLICE))
        return True

    @contextlib.contextmanager
    def _spinning(self) -> Iterator[None]:
        """Mark this thread as the one spinning the bus (so a service client called from
        another thread waits for it instead of spinning the bus itself)."""
        outer = self._spin_owner
        self._spin_owner = threading.get_ident()
        try:
            yield
        finally:
            self._spin_owner = outer

    def request_shutdown(self) -> None:
        """Make :meth:`spin` return soon; safe from signal handlers and other threads."""
        self._shutdown.set()
        self._wake()

    def shutdown(self) -> None:
        """Stop spinning, cancel timers, release the middleware, restore signal handlers."""
        if self._closed:
            return
        self._shutdown.set()
        self._wake()
        for timer in self._timers:
            timer.cancel()
        self.clock.remove_listener(self._wake)
        try:
            self._destroy_service_endpoints()
            self._close()
        finally:
            self._closed = True
            self._publishers.clear()
            self._subscriptions.clear()
            self._services.clear()
            self._clients.clear()
            self._timers.clear()
            self._restore_signal_handlers()

    def install_signal_handlers(
        self, signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)
    ) -> None:
        """SIGINT/SIGTERM request shutdown, so :meth:`spin` returns and the caller cleans up.
        A second signal raises KeyboardInterrupt (a stuck callback can still be interrupted).
        Only from the main thread."""

        def handler(signum: int, frame: Any) -> None:
            if self._shutdown.is_set():
                raise KeyboardInterrupt
            self.logger.info("%s received: shutting down", signal.Signals(signum).name)
            self.request_shutdown()

        for signum in signals:
            self._signals.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, handler)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._signals.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._signals.clear()

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.fqn}{' closed' if self._closed else ''}>"

    # shared machinery ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"bus of node {self.fqn} is shut down")

    def _check_type(self, typename: str) -> str:
        name = normalize_typename(typename)
        msg_class(name, self.distro)  # unknown types fail here, with the type named
        return name

    def _check_srv_type(self, srvtype: str) -> str:
        """``pkg/srv/Name`` (``pkg/Name`` accepted), both halves known to the codec."""
        try:
            request, _response = srv_types(srvtype, self.distro)
        except MessageError as exc:
            raise TransportError(str(exc)) from None
        return request.removesuffix("_Request")

    def _srv_names(self, srvtype: str) -> tuple[str, str]:
        """The request and response type names of ``srvtype``."""
        return srv_types(srvtype)

    def _service_qos(self, qos: QoS | str | None) -> QoS:
        from .service import SERVICE_QOS

        return SERVICE_QOS if qos is None else profile(qos)

    def _encode(self, msg: Any, typename: str) -> bytes:
        return cdr.serialize(msg, typename, self.distro)

    def _decode(self, data: bytes | bytearray | memoryview, typename: str) -> Any:
        return cdr.deserialize(data, typename, self.distro)

    def _poll_service_endpoints(self) -> int:
        """Serve ready requests and take ready replies (bindings whose endpoints poll)."""
        done = 0
        for endpoint in [*self._services, *self._clients]:
            if not endpoint._destroyed:
                done += endpoint._poll()
        return done

    def _destroy_service_endpoints(self) -> None:
        for endpoint in [*self._services, *self._clients]:
            try:
                endpoint.destroy()
            except Exception:  # shutting down: release the rest regardless
                self.logger.exception("could not destroy %r", endpoint)

    def _on_clock(self, msg: Any) -> None:
        self.clock.set_sim_time(int(msg.clock.sec) * NS + int(msg.clock.nanosec))

    def _live_timers(self) -> list[Timer]:
        return [t for t in self._timers if not t.canceled]

    def _fire_timers(self) -> int:
        if not self._timers or not self.clock.active:
            return 0
        now = self.clock.now_ns()
        if self._last_now is not None and now < self._last_now:  # time jumped back (bag loop)
            for timer in self._timers:
                timer._next_ns = now + timer.period_ns
        self._last_now = now
        fired = 0
        for timer in sorted(self._live_timers(), key=lambda t: (t._next_ns, t._id)):
            if timer.canceled or now < timer._next_ns:
                continue
            missed = (now - timer._next_ns) // timer.period_ns + 1
            timer._next_ns += missed * timer.period_ns
            timer.calls += 1
            timer.callback()
            fired += 1
        return fired

    def _until_next_timer(self) -> float | None:
        """Seconds until the next timer is due, when that can be slept on the wall clock."""
        timers = self._live_timers()
        if not timers or not self.clock.follows_wall_time:
            return None
        due = min(t._next_ns for t in timers)
        return max(0.0, (due - self.clock.now_ns()) / NS)
