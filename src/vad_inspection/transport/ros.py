"""rclpy binding: the Bus on a ROS 2 node, carrying the same CDR bytes as the other bindings.

Thin on purpose: publishers publish ``bytes`` (rclpy then calls ``publish_raw``), subscriptions
are created with ``raw=True`` and decoded by the shared codec, QoS maps one to one to
``QoSProfile``, parameters are declared on the node with a ``ParameterDescriptor`` (so ``ros2
param`` sees them), timers and the clock are the node's (rclpy follows ``/clock`` itself when
``use_sim_time`` is set), and callbacks run in a single-threaded executor spun by
:meth:`~.bus.Bus.spin`.

Values from ``params_file``/``parameters`` of :func:`~.bus.create_bus` are the node's defaults;
``--ros-args -p``/``--params-file`` given to the process (``args``) still override them, as in any
ROS 2 node. rclpy and the message packages (``sensor_msgs``, ``vision_msgs``...) must come from
the ROS 2 installation; this module is imported only when the ``ros`` binding is chosen.
"""

from __future__ import annotations

import array
import logging
import os
from collections.abc import Callable
from typing import Any

try:
    import rclpy
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rosidl_runtime_py.utilities import get_message
except ImportError as exc:  # pragma: no cover - depends on the host
    raise ImportError(
        "the 'ros' transport needs rclpy from a ROS 2 installation (source "
        "/opt/ros/<distro>/setup.bash); on hosts without ROS 2 use the 'dds' transport, which "
        f"speaks the same wire protocol ({exc})"
    ) from exc

from ..msgs.types import DISTROS
from .bus import Bus, Publisher, Subscription, Timer
from .clock import Clock
from .params import Descriptor, ParameterError, Parameters, ParamType, check_value
from .qos import QoS

_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}


def ros_qos(qos: QoS) -> QoSProfile:
    """Our QoS -> rclpy's, one to one."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST if qos.keep() is not None else HistoryPolicy.KEEP_ALL,
        depth=qos.depth,
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


def _plain(value: Any) -> Any:
    """rclpy values -> the plain Python values our parameters hold."""
    if isinstance(value, array.array):
        return value.tolist()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return b"".join(value)
    return value


class RosParameters(Parameters):
    """Parameters declared on the rclpy node (type, description, read-only in the descriptor)."""

    def __init__(self, node: Any, *args: Any) -> None:
        super().__init__(*args)
        self._node = node

    def _store(self, descriptor: Descriptor, value: Any) -> None:
        node, name = self._node, descriptor.name
        if node.has_parameter(name):  # declared by rclpy itself (use_sim_time)
            if name in self._given:
                node.set_parameters([Parameter(name, value=value)])
        else:
            ros_descriptor = ParameterDescriptor(
                name=name,
                type=int(descriptor.type),
                description=descriptor.description,
                read_only=descriptor.read_only,
            )
            if (isinstance(value, list) and not value) or descriptor.type is ParamType.BYTE_ARRAY:
                # rclpy infers a type from the value: declare the type explicitly instead
                ptype = Parameter.Type(int(descriptor.type))
                node.declare_parameter(name, ptype, ros_descriptor)
                if node.get_parameter_or(name).type_ == Parameter.Type.NOT_SET:
                    if descriptor.type is ParamType.BYTE_ARRAY:
                        value = [bytes((b,)) for b in value]
                    node.set_parameters([Parameter(name, ptype, value)])
            else:
                node.declare_parameter(name, value, ros_descriptor)
        value = check_value(name, _plain(node.get_parameter(name).value), descriptor.type, "ros")
        super()._store(descriptor, value)

    def get(self, name: str) -> Any:
        """The node's current value (``ros2 param set`` changes it)."""
        descriptor = self.describe(name)
        value = _plain(self._node.get_parameter(name).value)
        return check_value(name, value, descriptor.type, "ros")

    __getitem__ = get

    def set(self, name: str, value: Any) -> None:
        super().set(name, value)
        result = self._node.set_parameters([Parameter(name, value=self._values[name])])[0]
        if not result.successful:
            raise ParameterError(f"parameter {name!r}: rclpy refused {value!r}: {result.reason}")


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
        return True

    def now_ns(self) -> int:
        return int(self._node.get_clock().now().nanoseconds)


class RosTimer(Timer):
    def __init__(self, bus: RosBus, period_s: float, callback: Callable[[], None]) -> None:
        super().__init__(bus, period_s, callback)

        def tick() -> None:
            self.calls += 1
            callback()

        self._timer = bus.node.create_timer(period_s, tick)

    def cancel(self) -> None:
        super().cancel()
        self._timer.cancel()

    def reset(self) -> None:
        self.canceled = False
        self._timer.reset()

    def time_until_next_call(self) -> float:
        left = self._timer.time_until_next_call()
        return 0.0 if left is None else max(0.0, left / 1e9)


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


class _ToRclpy(logging.Handler):
    """Forward the bus logger's records to the node's rclpy logger (console and /rosout)."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__()
        self._ros = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        level = _LEVELS.get(record.levelno, "info")
        getattr(self._ros, level)(self.format(record))


class RosBus(Bus):
    """rclpy binding. Options: ``args`` (command-line arguments for rclpy: ``--ros-args ...``),
    ``context`` (an rclpy Context; default: the global one, initialised here if needed)."""

    kind = "ros"
    handles_sim_time = True
    _live = 0
    _inited_context = False

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
        super().__init__(node_name, **options)

    def _open(self) -> None:
        if not rclpy.ok(context=self._context):
            kwargs: dict[str, Any] = {"args": self._args, "context": self._context}
            try:
                from rclpy.signals import SignalHandlerOptions

                kwargs["signal_handler_options"] = SignalHandlerOptions.NO  # ours, see Bus
            except ImportError:  # pragma: no cover - older rclpy
                pass
            rclpy.init(**kwargs)
            RosBus._inited_context = True
        # remappings are applied by Bus.resolve, as on the other bindings: names reach rclpy
        # fully qualified (rclpy still applies --ros-args -r rules of the process on top)
        self.node = rclpy.create_node(self.name, namespace=self.namespace, context=self._context)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        handler = _ToRclpy(self.node.get_logger())
        self.logger.addHandler(handler)
        self.logger.propagate = False
        self._log_handler = handler
        RosBus._live += 1

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

    def spin_once(self, timeout: float | None = None) -> int:
        """One executor step (rclpy runs one ready callback per call); returns 0."""
        self._check_open()
        self._executor.spin_once(timeout_sec=timeout)
        return 0

    def _dispatch(self) -> int:  # pragma: no cover - spin_once is rclpy's
        return 0

    def _wait(self, timeout: float | None) -> None:  # pragma: no cover - spin_once is rclpy's
        pass

    def _wake(self) -> None:
        executor = getattr(self, "_executor", None)
        if executor is not None and not self._closed:
            executor.wake()

    def _close(self) -> None:
        for timer in self._timers:
            self.node.destroy_timer(timer._timer)  # type: ignore[attr-defined]
        self._executor.remove_node(self.node)
        self._executor.shutdown()
        self.node.destroy_node()
        self.logger.removeHandler(self._log_handler)
        self.logger.propagate = True
        RosBus._live -= 1
        if RosBus._live == 0 and RosBus._inited_context:
            rclpy.try_shutdown(context=self._context)
            RosBus._inited_context = False
