"""rclpy binding: the Bus on a ROS 2 node, carrying the same CDR bytes as the other bindings.

Thin on purpose: publishers publish ``bytes`` (rclpy then calls ``publish_raw``), subscriptions
are created with ``raw=True`` and decoded by the shared codec, QoS maps one to one to
``QoSProfile``, parameters are declared on the node with a ``ParameterDescriptor`` (so ``ros2
param`` sees them), timers and the clock are the node's (rclpy follows ``/clock`` itself when
``use_sim_time`` is set), and callbacks run in a single-threaded executor spun by
:meth:`~.bus.Bus.spin`.

Values from ``params_file``/``parameters`` of :func:`~.bus.create_bus` are the node's defaults;
``--ros-args -p``/``--params-file`` given to the process (``args``) still override them, as in any
ROS 2 node. Every value reaches rclpy already converted to the declared type (an integer given
for a double becomes a float), since rclpy refuses an override whose type differs from the
declared one. Run-time changes (``ros2 param set``) pass the node's on-set callbacks through
rclpy's ``add_on_set_parameters_callback``; on Jazzy an integer for a double is converted first
(``add_pre_set_parameters_callback``), on Humble rclpy refuses it before any callback runs.

Services are rclpy's (``create_service``/``create_client`` with the service classes of the ROS 2
installation); requests and responses cross between rclpy's objects and the codec's as CDR
(``rclpy.serialization``). rclpy's own parameter services answer ``ros2 param``.

The first bus on a context that is not initialised initialises it (``rclpy.init`` with ``args``,
without rclpy's signal handlers: :meth:`~.bus.Bus.install_signal_handlers` is ours); the last bus
on a context it initialised shuts it down. A context somebody else initialised is left alone, and
``args`` given to a bus joining an initialised context reach its node as ``cli_args``.

rclpy and the message packages (``sensor_msgs``, ``vision_msgs``...) must come from the ROS 2
installation; this module is imported only when the ``ros`` binding is chosen.
"""

from __future__ import annotations

import array
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

try:
    import rclpy
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message, serialize_message
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import get_default_context
    from rosidl_runtime_py.utilities import get_message, get_service
except ImportError as exc:  # pragma: no cover - depends on the host
    raise ImportError(
        "the 'ros' transport needs rclpy from a ROS 2 installation (source "
        "/opt/ros/<distro>/setup.bash); on hosts without ROS 2 use the 'dds' transport, which "
        f"speaks the same wire protocol ({exc})"
    ) from exc

from ..msgs.types import DISTROS
from .bus import Bus, Publisher, Subscription, Timer, TransportError
from .clock import Clock
from .params import Descriptor, ParameterError, Parameters, ParamType, check_value
from .qos import QoS
from .service import Client, Service, ServiceCallback, ServiceError, resolve_future

# Python level -> rclpy logger method, highest first (a custom level maps to the one below it)
_LEVELS = (
    (logging.CRITICAL, "fatal"),
    (logging.ERROR, "error"),
    (logging.WARNING, "warning"),
    (logging.INFO, "info"),
)
# rclpy's Node keeps the values given by --ros-args -p / --params-file (and by its
# parameter_overrides argument) in this dict, with no public getter: node.py, humble L167/L203,
# jazzy L179/L215 (``self._parameter_overrides = self.__node.get_parameters(Parameter)``)
_OVERRIDES = "_parameter_overrides"
_SPIN_SLICE_S = 0.05  # a client's call() spinning the node itself looks at its future this often
_CLOSE_WAIT_S = 10.0  # shutdown waits this long for a callback running on another thread


def ros_qos(qos: QoS) -> QoSProfile:
    """Our QoS -> rclpy's, one to one. KEEP_ALL gets depth 0: the middleware ignores it there,
    and rclpy's ``QoSProfile.depth`` setter asserts an ``int`` (ours is not checked for
    KEEP_ALL)."""
    keep = qos.keep()
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST if keep is not None else HistoryPolicy.KEEP_ALL,
        depth=keep if keep is not None else 0,
        reliability=ReliabilityPolicy.RELIABLE if qos.reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if qos.latched else DurabilityPolicy.VOLATILE,
    )


def _message_type(typename: str) -> Any:
    try:
        return get_message(typename)
    except (AttributeError, ModuleNotFoundError, ValueError) as exc:
        raise ImportError(
            f"{typename}: message package not found in the ROS 2 installation ({exc})"
        ) from exc


def _service_type(srvtype: str) -> Any:
    try:
        return get_service(srvtype)
    except (AttributeError, ModuleNotFoundError, ValueError) as exc:
        raise ImportError(
            f"{srvtype}: service package not found in the ROS 2 installation ({exc})"
        ) from exc


def _plain(value: Any) -> Any:
    """rclpy values -> the plain Python values our parameters hold."""
    if isinstance(value, array.array):
        return value.tolist()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return b"".join(value)
    return value


def _to_ros(value: Any, ptype: ParamType) -> Any:
    """A value of ``ptype`` -> what rclpy's ``Parameter`` holds (BYTE_ARRAY: a list of 1-byte
    ``bytes``, which ``Parameter.Type.BYTE_ARRAY.check`` requires; ``bytes`` is refused)."""
    if ptype is ParamType.BYTE_ARRAY:
        return [bytes((b,)) for b in value]
    return value


def _ros_parameter(name: str, ptype: ParamType, value: Any) -> Any:
    """An rclpy ``Parameter`` with its type given: rclpy's guess from the value would make an
    empty list a BYTE_ARRAY and refuse ``bytes``."""
    return Parameter(name, Parameter.Type(int(ptype)), _to_ros(value, ptype))


class RosParameters(Parameters):
    """Parameters declared on the rclpy node (type, description, read-only in the descriptor,
    ``dynamic_typing`` off), the node's on-set callbacks wired to rclpy's."""

    def __init__(self, node: Any, *args: Any) -> None:
        super().__init__(*args)
        self._node = node
        self._declaring = False
        node.add_on_set_parameters_callback(self._on_ros_set)
        if hasattr(node, "add_pre_set_parameters_callback"):  # Jazzy (node.py L1052), not Humble
            node.add_pre_set_parameters_callback(self._pre_ros_set)

    def _ros_given(self, name: str) -> Any:
        """The value ``--ros-args`` (``-p``, ``--params-file``) gave ``name``, unconverted, or
        None."""
        given = getattr(self._node, _OVERRIDES, {}).get(name)
        return None if given is None else _plain(given.value)

    def _override(self, descriptor: Descriptor) -> tuple[bool, Any]:
        """(True, value converted to the declared type) when the process's ``--ros-args`` gave
        this parameter a value, else (False, None)."""
        value = self._ros_given(descriptor.name)
        if value is None:
            return False, None
        return True, check_value(descriptor.name, value, descriptor.type, "--ros-args")

    def declare(
        self,
        name: str,
        default: Any = None,
        *,
        type: Any = None,
        description: str = "",
        read_only: bool = False,
    ) -> Any:
        """As :meth:`.params.Parameters.declare`, returning the node's value: a ``--ros-args``
        value wins over files and ``default`` (as in any ROS 2 node) and the base class would
        return the one it chose before :meth:`_store` applied the override. A parameter declared
        without a default is not missing when only ``--ros-args`` gives it."""
        if default is None and name not in self._given:
            default = self._ros_given(name)
        super().declare(name, default, type=type, description=description, read_only=read_only)
        return self.get(name)

    def _store(self, descriptor: Descriptor, value: Any) -> None:
        node, name, ptype = self._node, descriptor.name, descriptor.type
        self._declaring = True  # declarations are not run-time changes: no on-set callbacks
        try:
            has_override, override = self._override(descriptor)
            if node.has_parameter(name):  # declared by rclpy itself (use_sim_time)
                if name in self._given and not has_override:
                    node.set_parameters([_ros_parameter(name, ptype, value)])
            else:
                if has_override:
                    value = override  # converted: rclpy's own override may be an int for a double
                ros_descriptor = ParameterDescriptor(
                    name=name,
                    type=int(ptype),
                    description=descriptor.description,
                    read_only=descriptor.read_only,
                )
                # ignore_override: rclpy would put its unconverted override back in
                # (declare_parameters, humble node.py L474, jazzy L514)
                if ptype >= ParamType.BYTE_ARRAY and len(value) == 0:
                    # an empty array: rclpy would guess BYTE_ARRAY from []; declare the type,
                    # then set the value (read-only is applied once the value is in: rclpy
                    # keeps this descriptor object and checks read_only on set_parameters)
                    ros_descriptor.read_only = False
                    node.declare_parameter(
                        name, Parameter.Type(int(ptype)), ros_descriptor, ignore_override=True
                    )
                    node.set_parameters([_ros_parameter(name, ptype, value)])
                    ros_descriptor.read_only = descriptor.read_only
                else:
                    node.declare_parameter(
                        name, _to_ros(value, ptype), ros_descriptor, ignore_override=True
                    )
        finally:
            self._declaring = False
        value = check_value(name, _plain(node.get_parameter(name).value), ptype, "ros")
        super()._store(descriptor, value)

    def _pre_ros_set(self, parameters: list[Any]) -> list[Any]:
        """Jazzy's pre-set hook: an integer for a double parameter becomes a float (as every
        other binding accepts it) before rclpy checks the type."""
        out = []
        for p in parameters:
            d = self._descriptors.get(p.name)
            if d is not None and d.type is ParamType.DOUBLE and p.type_ == Parameter.Type.INTEGER:
                p = Parameter(p.name, Parameter.Type.DOUBLE, float(p.value))
            elif (
                d is not None
                and d.type is ParamType.DOUBLE_ARRAY
                and p.type_ == Parameter.Type.INTEGER_ARRAY
            ):
                p = Parameter(p.name, Parameter.Type.DOUBLE_ARRAY, [float(v) for v in p.value])
            out.append(p)
        return out

    def _on_ros_set(self, parameters: list[Any]) -> Any:
        """rclpy's on-set hook: the node's on-set callbacks decide (rclpy has checked the type
        and the read-only flag already)."""
        if self._declaring:
            return SetParametersResult(successful=True)
        for p in parameters:
            descriptor = self._descriptors.get(p.name)
            if descriptor is None:
                continue  # not declared through us
            try:
                value = check_value(p.name, _plain(p.value), descriptor.type, "ros2 param set")
                self._run_on_set(p.name, value)
            except ParameterError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def get(self, name: str) -> Any:
        """The node's current value (``ros2 param set`` changes it)."""
        descriptor = self.describe(name)
        value = _plain(self._node.get_parameter(name).value)
        return check_value(name, value, descriptor.type, "ros")

    __getitem__ = get

    def as_dict(self) -> dict[str, Any]:
        return {name: self.get(name) for name in self._descriptors}

    def set(self, name: str, value: Any) -> None:
        """Set on the node (its on-set callbacks run inside rclpy's set_parameters)."""
        value = self._check_set(name, value)
        ptype = self._descriptors[name].type
        result = self._node.set_parameters([_ros_parameter(name, ptype, value)])[0]
        self._raise_unless(result, f"parameter {name!r}: rclpy refused {value!r}")
        self._values[name] = value

    def set_many(self, values: Mapping[str, Any]) -> None:
        checked = {name: self._check_set(name, value) for name, value in values.items()}
        params = [
            _ros_parameter(name, self._descriptors[name].type, value)
            for name, value in checked.items()
        ]
        result = self._node.set_parameters_atomically(params)
        self._raise_unless(result, f"parameters {sorted(checked)}: rclpy refused them")
        self._values.update(checked)

    @staticmethod
    def _raise_unless(result: Any, context: str) -> None:
        if not result.successful:
            reason = result.reason or "no reason given"
            # our own callbacks' refusals come back as the reason: pass them on as they are
            ours = reason.startswith("parameter")
            raise ParameterError(reason if ours else f"{context}: {reason}")


class RosClock(Clock):
    """The node's clock (ROS time: system time, or /clock when use_sim_time)."""

    def __init__(self, node: Any) -> None:
        super().__init__()
        self._node = node

    @property
    def sim(self) -> bool:
        return bool(self._node.get_parameter("use_sim_time").value)

    @property
    def active(self) -> bool:
        """False while ``use_sim_time`` is on and no ``/clock`` has come: rclpy's ROS clock then
        reads 0 (its time source starts from a zero override), as our simulated clock does."""
        return not self.sim or self.now_ns() != 0

    @property
    def follows_wall_time(self) -> bool:
        """The base class reads its own sim flag, which this clock never sets."""
        return not self.sim

    def now_ns(self) -> int:
        return int(self._node.get_clock().now().nanoseconds)


class RosTimer(Timer):
    def __init__(self, bus: RosBus, period_s: float, callback: Callable[[], None]) -> None:
        super().__init__(bus, period_s, callback)

        def tick() -> None:
            self.calls += 1
            callback()

        self._timer = bus.node.create_timer(period_s, tick)
        self._released = False

    def _gone(self) -> bool:
        """The rclpy timer is destroyed (by destroy_timer, or with the node): its handle would
        raise ``InvalidHandle``."""
        return self._released or self._bus._closed

    def cancel(self) -> None:
        super().cancel()
        if not self._gone():
            self._timer.cancel()

    def reset(self) -> None:
        if self._gone():
            return
        self.canceled = False
        self._timer.reset()

    def time_until_next_call(self) -> float:
        # rclpy: None when cancelled, else ns (negative when overdue)
        left = None if self._gone() else self._timer.time_until_next_call()
        return 0.0 if left is None else max(0.0, left / 1e9)

    def _release(self) -> None:
        if not self._gone():
            self._released = True
            self._bus.node.destroy_timer(self._timer)  # type: ignore[attr-defined]


class RosPublisher(Publisher):
    _bus: RosBus

    def __init__(self, bus: RosBus, topic: str, typename: str, qos: QoS) -> None:
        super().__init__(bus, topic, typename, qos)
        self.handle = bus.node.create_publisher(_message_type(typename), topic, ros_qos(qos))

    def _write(self, data: bytes) -> None:
        self.handle.publish(data)  # bytes: rclpy publishes them as the serialised message

    @property
    def subscription_count(self) -> int:
        return 0 if self._destroyed or self._bus._closed else self.handle.get_subscription_count()


class RosSubscription(Subscription):
    _bus: RosBus

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.handle = self._bus.node.create_subscription(
            _message_type(self.typename), self.topic, self._deliver, ros_qos(self.qos), raw=True
        )

    @property
    def publisher_count(self) -> int:
        if self._destroyed or self._bus._closed:
            return 0
        return self._bus.node.count_publishers(self.topic)


class RosService(Service):
    """An rclpy service; the request and response cross as CDR between rclpy and the codec."""

    _bus: RosBus

    def __init__(
        self, bus: RosBus, name: str, srvtype: str, callback: ServiceCallback, qos: QoS
    ) -> None:
        super().__init__(bus, name, srvtype, *bus._srv_names(srvtype), callback, qos)
        self._srv_class = _service_type(srvtype)
        # rclpy: Node.create_service(srv_type, srv_name, callback, *, qos_profile, ...)
        # (node.py humble L1436, jazzy L1694); callback(request, response) -> response
        self.handle = bus.node.create_service(
            self._srv_class, name, self._on_request, qos_profile=ros_qos(qos)
        )

    def _on_request(self, request: Any, response: Any) -> Any:
        """rclpy sends whatever this returns (executors.py ``_execute_service``), so a failure
        answers with rclpy's default-constructed ``response`` instead of raising in the
        executor, which would end the spin."""
        msg = self._decode_request(serialize_message(request))
        if msg is None:
            return response
        try:
            result = self._handle(msg)
            data = self._bus._encode(result, self.response_type)
            return deserialize_message(data, self._srv_class.Response)
        except ServiceError:
            pass  # logged by _handle
        except Exception as exc:
            self.failed += 1
            self._bus.logger.error("service %s: cannot send the response: %s", self.name, exc)
        self._bus.logger.warning("service %s: replying with a default response", self.name)
        return response

    def _release(self) -> None:
        self._bus.node.destroy_service(self.handle)


class RosClient(Client):
    """An rclpy client. ``call`` spins the node itself when no other thread spins the bus."""

    _bus: RosBus

    def __init__(self, bus: RosBus, name: str, srvtype: str, qos: QoS) -> None:
        super().__init__(bus, name, srvtype, *bus._srv_names(srvtype), qos)
        self._srv_class = _service_type(srvtype)
        # rclpy: Node.create_client(srv_type, srv_name, *, qos_profile, ...) (humble L1394,
        # jazzy L1652)
        self.handle = bus.node.create_client(self._srv_class, name, qos_profile=ros_qos(qos))

    def service_is_ready(self) -> bool:
        return not self._destroyed and not self._bus._closed and self.handle.service_is_ready()

    # wait_for_service: the base class's, polling service_is_ready above. rclpy's
    # Client.wait_for_service (client.py humble L162, jazzy L172) sleeps in 0.25 s steps and
    # enters the client's handle, which raises InvalidHandle once the client is destroyed.

    def _send(
        self, sequence: int, data: bytes, request: Any, future: concurrent.futures.Future
    ) -> None:
        ros_future = self.handle.call_async(deserialize_message(data, self._srv_class.Request))

        def done(f: Any) -> None:  # an executor task: on the thread spinning the node
            if f.cancelled():
                resolve_future(future, error=TransportError(f"service {self.name}: cancelled"))
            elif f.exception() is not None:
                error = TransportError(f"service {self.name}: {f.exception()}")
                resolve_future(future, error=error)
            else:
                self._complete(future, serialize_message(f.result()))

        def abandoned(f: concurrent.futures.Future) -> None:
            if f.cancelled():  # call() timed out: rclpy forgets the request too
                self.handle.remove_pending_request(ros_future)

        ros_future.add_done_callback(done)
        future.add_done_callback(abandoned)

    def _wait(self, future: concurrent.futures.Future, timeout: float) -> Any:
        bus = self._bus
        deadline = time.monotonic() + timeout
        while not future.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise concurrent.futures.TimeoutError
            me = threading.get_ident()
            if me in (bus._spin_owner, bus._executing):
                raise TransportError(
                    f"service {self.name}: call() from a callback of the bus spinning it cannot "
                    "get its reply before the callback returns; use call_async"
                )
            if bus._spin_owner is None and bus._spin_lock.acquire(blocking=False):
                try:  # nobody spins the node: do it here (replies come through the executor)
                    bus._executor_step(min(remaining, _SPIN_SLICE_S))
                finally:
                    bus._spin_lock.release()
            else:
                concurrent.futures.wait([future], min(remaining, _SPIN_SLICE_S))
        return future.result(0)

    def _release(self) -> None:
        self._bus.node.destroy_client(self.handle)


class _ToRclpy(logging.Handler):
    """Forward the bus logger's records to the node's rclpy logger (console and /rosout)."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__()
        self._ros = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        level = next((name for at, name in _LEVELS if record.levelno >= at), "debug")
        try:
            getattr(self._ros, level)(self.format(record))
        except Exception:  # logging must not raise into the caller (logging.Handler's contract)
            self.handleError(record)


class RosBus(Bus):
    """rclpy binding. Options: ``args`` (command-line arguments for rclpy: ``--ros-args ...``),
    ``context`` (an rclpy Context; default: the global one, initialised here if needed)."""

    kind = "ros"
    handles_sim_time = True
    provides_parameter_services = True  # rclpy's ParameterService (start_parameter_services)
    # contexts this binding initialised -> how many open buses use each; the last one to close
    # shuts its context down (one flag and one count for all contexts would shut down a context
    # somebody else initialised, and leave ours running)
    _owned_contexts: ClassVar[dict[Any, int]] = {}
    _contexts_lock = threading.Lock()

    def __init__(
        self,
        node_name: str,
        *,
        args: list[str] | None = None,
        context: Any = None,
        **options: Any,
    ) -> None:
        if "distro" not in options and os.environ.get("ROS_DISTRO") in DISTROS:
            options["distro"] = os.environ["ROS_DISTRO"]
        self._args = args
        self._context = context
        self._owned_context: Any = None
        self._spin_lock = threading.RLock()  # one executor step at a time (rclpy is not reentrant)
        self._executing: int | None = None  # the thread inside an executor step, if any
        super().__init__(node_name, **options)

    def _open(self) -> None:
        with RosBus._contexts_lock:
            initialised = False
            if not rclpy.ok(context=self._context):
                # rclpy.init(*, args, context, domain_id, signal_handler_options) (humble and
                # jazzy __init__.py L65); rcl parses args from index 0, so "--ros-args" may
                # come first. Signal handlers: ours (Bus.install_signal_handlers), not rclpy's.
                rclpy.init(
                    args=self._args,
                    context=self._context,
                    signal_handler_options=SignalHandlerOptions.NO,
                )
                initialised = True
            context = self._context if self._context is not None else get_default_context()
            if initialised:
                RosBus._owned_contexts[context] = 0
            if context in RosBus._owned_contexts:
                RosBus._owned_contexts[context] += 1
                self._owned_context = context
        try:
            # remappings are applied by Bus.resolve, as on the other bindings: names reach rclpy
            # fully qualified (rclpy still applies --ros-args -r rules of the process on top).
            # args given to a bus joining an initialised context would be lost: the node takes
            # them as its own arguments instead (rclpy.init already applied them otherwise).
            self.node = rclpy.create_node(
                self.name,
                namespace=self.namespace,
                context=self._context,
                cli_args=None if initialised else self._args,
            )
            self._executor = SingleThreadedExecutor(context=self._context)
            self._executor.add_node(self.node)
        except BaseException:
            if getattr(self, "node", None) is not None:
                self.node.destroy_node()
            self._release_context()
            raise
        handler = _ToRclpy(self.node.get_logger())
        self.logger.addHandler(handler)
        self.logger.propagate = False
        self._log_handler = handler

    def _release_context(self) -> None:
        """Shut down the context if this bus was the last one on a context this binding
        initialised."""
        context, self._owned_context = self._owned_context, None
        if context is None:
            return
        with RosBus._contexts_lock:
            RosBus._owned_contexts[context] -= 1
            if RosBus._owned_contexts[context] > 0:
                return
            del RosBus._owned_contexts[context]
            if self._context is None and context is get_default_context():
                # context=None: rclpy replaces its default context (utilities.try_shutdown),
                # so a later bus can initialise a fresh one (a Context inits only once)
                rclpy.try_shutdown()
            else:
                rclpy.try_shutdown(context=context)

    def _make_parameters(self, files: list, overrides: dict[str, Any]) -> Parameters:
        return RosParameters(self.node, self.fqn, files, overrides)

    def _make_clock(self, clock: Clock | None, sim: bool) -> Clock:
        if clock is not None:
            raise ValueError("the ros binding uses the node's clock; use use_sim_time and /clock")
        return RosClock(self.node)

    def _create_publisher(self, topic: str, typename: str, qos: QoS) -> Publisher:
        return RosPublisher(self, topic, typename, qos)

    def _create_subscription(
        self, topic: str, typename: str, callback: Callable[[Any], None], qos: QoS, raw: bool
    ) -> Subscription:
        return RosSubscription(self, topic, typename, callback, qos, raw)

    def _create_service(
        self, name: str, srvtype: str, callback: ServiceCallback, qos: QoS
    ) -> Service:
        return RosService(self, name, srvtype, callback, qos)

    def _create_client(self, name: str, srvtype: str, qos: QoS) -> Client:
        return RosClient(self, name, srvtype, qos)

    def _destroy_publisher(self, publisher: Publisher) -> None:
        self.node.destroy_publisher(publisher.handle)  # type: ignore[attr-defined]
        super()._destroy_publisher(publisher)

    def _destroy_subscription(self, subscription: Subscription) -> None:
        self.node.destroy_subscription(subscription.handle)  # type: ignore[attr-defined]
        super()._destroy_subscription(subscription)

    def create_timer(self, period_s: float, callback: Callable[[], None]) -> Timer:
        self._check_open()
        timer = RosTimer(self, period_s, callback)
        self._timers.append(timer)
        return timer

    def destroy_timer(self, timer: Timer) -> None:
        """Cancel and forget it, and destroy the rclpy timer (the base class only cancels)."""
        super().destroy_timer(timer)
        if isinstance(timer, RosTimer):
            timer._release()

    def spin_once(self, timeout: float | None = None) -> int:
        """One executor step (rclpy runs one ready callback per call); returns 0. Not from a
        callback of this bus: rclpy's executor is not reentrant."""
        self._check_open()
        if self._executing == threading.get_ident():
            raise TransportError(
                f"bus of node {self.fqn}: spin_once() from one of its own callbacks"
            )
        with self._spin_lock:
            if not self._closed:  # shut down while this thread waited for the lock
                self._executor_step(timeout)
        return 0

    def _executor_step(self, timeout: float | None) -> None:
        """``executor.spin_once``, marking this thread as the one running callbacks (the caller
        holds ``_spin_lock``)."""
        outer, self._executing = self._executing, threading.get_ident()
        try:
            self._executor.spin_once(timeout_sec=timeout)
        finally:
            self._executing = outer

    def _dispatch(self) -> int:  # pragma: no cover - spin_once is rclpy's
        return 0

    def _wait(self, timeout: float | None) -> None:  # pragma: no cover - spin_once is rclpy's
        pass

    def _wake(self) -> None:
        executor = getattr(self, "_executor", None)
        if executor is not None and not self._closed:
            executor.wake()

    def _close(self) -> None:
        """Stop the executor, wait for a callback running on another thread, destroy the node
        (with its publishers, subscriptions and timers), then release the context.

        ``Executor.shutdown`` gets timeout 0: on Humble ``shutdown(None)`` waits until no
        callback runs (executors.py humble L208-224), for ever when called from a callback of
        this bus; on Jazzy it does not wait at all (jazzy L222-238). The wait for other threads
        is ``_spin_lock`` instead, held for each executor step, the same on both."""
        executor = self._executor
        executor.remove_node(self.node)  # triggers the guard condition: a blocked wait returns
        executor.shutdown(timeout_sec=0.0)
        locked = self._spin_lock.acquire(timeout=_CLOSE_WAIT_S)  # at once from a callback (RLock)
        try:
            if not locked:
                self.logger.warning(
                    "a callback still runs after %.0f s; destroying the node anyway", _CLOSE_WAIT_S
                )
            if self._executing is None:
                executor.shutdown(timeout_sec=0.0)  # idle now: Humble releases its guards here
            self.node.destroy_node()
        finally:
            if locked:
                self._spin_lock.release()
            self.logger.removeHandler(self._log_handler)
            self.logger.propagate = True
            self._release_context()
