"""Services on the Bus: ROS 2 request/response, the same on every binding.

A server::

    bus.create_service("~/fit", "std_srvs/srv/Trigger", on_fit)

``on_fit(request)`` returns the response message and runs on the thread spinning the server's
bus, one callback at a time with the subscriptions and timers (as in rclpy's single-threaded
executor). When the callback raises, or returns something other than the response type, the
error is logged with its traceback, counted in :attr:`Service.failed`, and the node goes on; the
client learns it as far as the wire allows: on ``local`` its future fails with a
:class:`ServiceError` naming the exception; on ``dds`` no reply is sent (ROS 2's service wire
has no error reply), so the call times out; on ``ros`` rclpy always sends what the callback
returns, so a default-constructed response goes out (``success`` false for the lifecycle and
std_srvs types).

A client::

    client = bus.create_client("/detector/change_state", "lifecycle_msgs/srv/ChangeState")
    client.wait_for_service(5.0)
    response = client.call(request, timeout=5.0)          # or client.call_async(request)

:meth:`Client.call` works from any thread and whether or not anybody spins the client's bus: the
``local`` server answers the future directly, the ``dds`` client takes its replies itself, the
``ros`` client spins its node when no other thread does. It raises :class:`TransportError` when
no reply comes in time. :meth:`Client.call_async` returns a :class:`concurrent.futures.Future`,
completed on whichever thread receives the reply. Calling a service of the same bus from one of
its own callbacks cannot be answered before the callback returns: use ``call_async`` there.

Names resolve like topics (``~/change_state`` -> ``/<ns>/<node>/change_state``). Types are ROS
service types (``pkg/srv/Name``) registered in :mod:`vad_inspection.msgs.types`.

:class:`ParameterServices` are rcl_interfaces' parameter services (what ``ros2 param get/set/
list/describe`` call), built on ``create_service`` once for the bindings whose middleware has
none (``local``, ``dds``; rclpy nodes have their own).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..msgs.types import MessageError, msg_class
from .bus import TransportError, _Throttle
from .params import Descriptor, ParameterError, ParamType
from .qos import DEFAULT, Durability, History, QoS, Reliability

if TYPE_CHECKING:
    from .bus import Bus

SERVICE_QOS = DEFAULT
"""rmw's ``rmw_qos_profile_services_default``: reliable, volatile, keep last 10."""

PARAMETER_SERVICE_QOS = QoS(Reliability.RELIABLE, Durability.VOLATILE, History.KEEP_LAST, 1000)
"""rmw's ``rmw_qos_profile_parameters``, what rclpy's parameter services use."""

_POLL_S = 0.01  # how often wait_for_service looks at the graph again
_sequence = itertools.count(1)  # process-wide, as rmw_cyclonedds' next_request_id (starts at 1)

ServiceCallback = Callable[[Any], Any]


class ServiceError(TransportError):
    """The server's callback failed on this request (local binding: the client's future gets it)."""


def next_sequence() -> int:
    """A request sequence number unique in this process."""
    return next(_sequence)


def resolve_future(
    future: concurrent.futures.Future, result: Any = None, error: BaseException | None = None
) -> None:
    """Complete ``future`` unless it is already done (cancelled by the caller, or timed out)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


class Service:
    """Serves one service name with one type; counts ``handled``, ``failed`` and ``dropped``
    (requests that did not decode)."""

    def __init__(
        self,
        bus: Bus,
        name: str,
        srvtype: str,
        request_type: str,
        response_type: str,
        callback: ServiceCallback,
        qos: QoS,
    ) -> None:
        self._bus = bus
        self.name = name
        self.srvtype = srvtype
        self.request_type = request_type
        self.response_type = response_type
        self.callback = callback
        self.qos = qos
        self.handled = 0
        self.failed = 0
        self.dropped = 0
        self._destroyed = False
        self._throttle = _Throttle()

    def _handle(self, request: Any) -> Any:
        """Run the callback on a decoded request: the response, or raise :class:`ServiceError`
        (the failure logged with its traceback and counted)."""
        try:
            response = self.callback(request)
        except Exception as exc:  # a failing callback must not stop the node
            self.failed += 1
            self._bus.logger.error(
                "service %s [%s]: the callback raised on a request",
                self.name,
                self.srvtype,
                exc_info=True,
            )
            raise ServiceError(
                f"service {self.name} [{self.srvtype}]: the server's callback raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        have = getattr(response, "__msgtype__", None)
        if have != self.response_type:
            self.failed += 1
            what = have or type(response).__name__
            self._bus.logger.error(
                "service %s: the callback returned a %s, not a %s",
                self.name,
                what,
                self.response_type,
            )
            raise ServiceError(
                f"service {self.name}: the server's callback returned a {what}, "
                f"not a {self.response_type}"
            )
        self.handled += 1
        return response

    def _decode_request(self, data: bytes | memoryview) -> Any | None:
        """CDR -> request message; a malformed request is logged (throttled), counted, None."""
        try:
            return self._bus._decode(data, self.request_type)
        except MessageError as exc:
            reason = str(exc)
        except Exception as exc:  # nothing from the wire may crash the node
            reason = f"{type(exc).__name__}: {exc}"
        self.dropped += 1
        if self._throttle.ready():
            self._bus.logger.warning(
                "service %s: dropped a malformed request: %s (%d so far)",
                self.name,
                reason,
                self.dropped,
            )
        return None

    def _poll(self) -> int:
        """Serve the requests that are ready (bindings that poll); return how many."""
        return 0

    def _release(self) -> None:
        """Release the middleware's entities (called once by :meth:`destroy`)."""

    def destroy(self) -> None:
        if not self._destroyed:
            self._destroyed = True
            try:
                self._release()
            finally:
                self._bus._forget_service(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} [{self.srvtype}]>"


class Client:
    """Calls one service name with one type; see :meth:`call` and :meth:`call_async`."""

    def __init__(
        self,
        bus: Bus,
        name: str,
        srvtype: str,
        request_type: str,
        response_type: str,
        qos: QoS,
    ) -> None:
        self._bus = bus
        self.name = name
        self.srvtype = srvtype
        self.request_type = request_type
        self.response_type = response_type
        self.qos = qos
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._pending_lock = threading.Lock()
        self._destroyed = False

    # the public API --------------------------------------------------------------------------

    def service_is_ready(self) -> bool:
        """Whether a server is reachable now."""
        return False

    def wait_for_service(self, timeout: float | None = 5.0) -> bool:
        """Block until a server is reachable (True) or ``timeout`` s pass (False; None waits
        for ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.service_is_ready():
            if self._destroyed or self._bus._closed:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def call_async(self, request: Any) -> concurrent.futures.Future:
        """Send ``request``; the future completes with the response message, or fails with
        :class:`TransportError`."""
        self._check_usable()
        data = self._bus._encode(request, self.request_type)  # checks the request's type
        future: concurrent.futures.Future = concurrent.futures.Future()
        sequence = next_sequence()
        with self._pending_lock:
            self._pending[sequence] = future
        future.add_done_callback(lambda _f: self._forget(sequence))
        try:
            self._send(sequence, data, request, future)
        except BaseException:
            self._forget(sequence)
            raise
        return future

    def call(self, request: Any, timeout: float = 5.0) -> Any:
        """Send ``request`` and return the response; :class:`TransportError` when none comes
        within ``timeout`` s. From any thread; see the module notes."""
        future = self.call_async(request)
        try:
            return self._wait(future, timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TransportError(
                f"service {self.name} [{self.srvtype}]: no reply within {timeout:g} s"
                + ("" if self.service_is_ready() else " (no server found)")
            ) from None

    def destroy(self) -> None:
        """Release the client; pending calls fail with :class:`TransportError`."""
        if self._destroyed:
            return
        self._destroyed = True
        try:
            self._release()
        finally:
            self._fail_pending(f"client of {self.name} was destroyed")
            self._bus._forget_client(self)

    # for the bindings --------------------------------------------------------------------------

    def _send(
        self, sequence: int, data: bytes, request: Any, future: concurrent.futures.Future
    ) -> None:  # pragma: no cover - every binding overrides
        raise NotImplementedError

    def _wait(self, future: concurrent.futures.Future, timeout: float) -> Any:
        """The response of ``future`` within ``timeout`` s (raises TimeoutError)."""
        return future.result(timeout)

    def _poll(self) -> int:
        """Take the replies that are ready (bindings that poll); return how many."""
        return 0

    def _release(self) -> None:
        """Release the middleware's entities (called once by :meth:`destroy`)."""

    def _take_pending(self, sequence: int) -> concurrent.futures.Future | None:
        with self._pending_lock:
            return self._pending.pop(sequence, None)

    def _forget(self, sequence: int) -> None:
        with self._pending_lock:
            self._pending.pop(sequence, None)

    def _complete(self, future: concurrent.futures.Future, data: bytes | memoryview) -> None:
        """Decode a reply into ``future`` (a malformed one fails the future, it never raises)."""
        try:
            resolve_future(future, self._bus._decode(data, self.response_type))
        except Exception as exc:
            resolve_future(
                future,
                error=TransportError(f"service {self.name}: malformed reply: {exc}"),
            )

    def _fail_pending(self, reason: str) -> None:
        with self._pending_lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for future in pending:
            resolve_future(future, error=TransportError(reason))

    def _check_usable(self) -> None:
        if self._destroyed:
            raise TransportError(f"client of {self.name} is destroyed")
        self._bus._check_open()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} [{self.srvtype}]>"


# --------------------------------------------------------------------------------------------
# rcl_interfaces parameter services over any Bus

_SRV = "rcl_interfaces/srv/"
_VALUE_FIELD = {
    ParamType.BOOL: "bool_value",
    ParamType.INTEGER: "integer_value",
    ParamType.DOUBLE: "double_value",
    ParamType.STRING: "string_value",
    ParamType.BYTE_ARRAY: "byte_array_value",
    ParamType.BOOL_ARRAY: "bool_array_value",
    ParamType.INTEGER_ARRAY: "integer_array_value",
    ParamType.DOUBLE_ARRAY: "double_array_value",
    ParamType.STRING_ARRAY: "string_array_value",
}
_ARRAY_DTYPE = {
    ParamType.BYTE_ARRAY: np.uint8,
    ParamType.BOOL_ARRAY: np.bool_,
    ParamType.INTEGER_ARRAY: np.int64,
    ParamType.DOUBLE_ARRAY: np.float64,
}
DEPTH_RECURSIVE = 0  # rcl_interfaces/srv/ListParameters.DEPTH_RECURSIVE


def parameter_value_msg(ptype: ParamType, value: Any, distro: str = "jazzy") -> Any:
    """A Python value of ``ptype`` -> rcl_interfaces/msg/ParameterValue."""
    fields: dict[str, Any] = {
        "type": int(ptype),
        "bool_value": False,
        "integer_value": 0,
        "double_value": 0.0,
        "string_value": "",
        "string_array_value": [],
    }
    for kind, dtype in _ARRAY_DTYPE.items():
        fields[_VALUE_FIELD[kind]] = np.zeros(0, dtype=dtype)
    if ptype is ParamType.BYTE_ARRAY:
        fields["byte_array_value"] = np.frombuffer(bytes(value), dtype=np.uint8).copy()
    elif ptype in _ARRAY_DTYPE:
        fields[_VALUE_FIELD[ptype]] = np.asarray(list(value), dtype=_ARRAY_DTYPE[ptype])
    elif ptype in _VALUE_FIELD:
        fields[_VALUE_FIELD[ptype]] = list(value) if ptype is ParamType.STRING_ARRAY else value
    return msg_class("rcl_interfaces/msg/ParameterValue", distro)(**fields)


def parameter_value_from_msg(msg: Any) -> tuple[ParamType, Any]:
    """rcl_interfaces/msg/ParameterValue -> (type, plain Python value; None when NOT_SET)."""
    try:
        ptype = ParamType(int(msg.type))
    except ValueError:
        raise ParameterError(f"unknown parameter type {msg.type} in a ParameterValue") from None
    if ptype is ParamType.NOT_SET:
        return ptype, None
    value = getattr(msg, _VALUE_FIELD[ptype])
    if ptype is ParamType.BYTE_ARRAY:
        return ptype, bytes(np.asarray(value, dtype=np.uint8))
    if ptype in _ARRAY_DTYPE:
        return ptype, np.asarray(value).tolist()
    if ptype is ParamType.STRING_ARRAY:
        return ptype, list(value)
    return ptype, value


def list_parameter_names(names: list[str], prefixes: list[str], depth: int) -> tuple[list, list]:
    """rclpy's ``Node.list_parameters`` rule (names and their prefixes) on ``names``."""

    def shallow(s: str) -> bool:
        return s.count(".") < depth

    recursive = not prefixes and depth == DEPTH_RECURSIVE
    out_names: list[str] = []
    out_prefixes: list[str] = []

    def wanted(name: str) -> bool:
        if recursive or (not prefixes and shallow(name)):
            return True
        return any(
            name == prefix
            or (
                name.startswith(prefix + ".")
                and (depth == DEPTH_RECURSIVE or shallow(name[len(prefix) + 1 :]))
            )
            for prefix in prefixes
        )

    for name in names:
        if not wanted(name):
            continue
        out_names.append(name)
        prefix, dot, _ = name.rpartition(".")
        if dot and prefix not in out_prefixes:
            out_prefixes.append(prefix)
    return out_names, out_prefixes


class ParameterServices:
    """``~/describe_parameters``, ``~/get_parameters``, ``~/get_parameter_types``,
    ``~/list_parameters``, ``~/set_parameters`` and ``~/set_parameters_atomically`` of one node,
    answering as rclpy's ``ParameterService`` does (an undeclared name empties the answer of the
    getters; a set goes through :meth:`~.params.Parameters.set`, so types, read-only flags and
    the node's on-set callbacks decide, and a refusal comes back as the result's ``reason``)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        handlers = {
            "describe_parameters": ("DescribeParameters", self._describe),
            "get_parameters": ("GetParameters", self._get),
            "get_parameter_types": ("GetParameterTypes", self._get_types),
            "list_parameters": ("ListParameters", self._list),
            "set_parameters": ("SetParameters", self._set),
            "set_parameters_atomically": ("SetParametersAtomically", self._set_atomically),
        }
        self.services = [
            bus.create_service(f"~/{name}", _SRV + srv, handler, PARAMETER_SERVICE_QOS)
            for name, (srv, handler) in handlers.items()
        ]

    def _msg(self, typename: str) -> Any:
        return msg_class(typename, self._bus.distro)

    def _descriptors(self, names: list[str]) -> list[Descriptor] | None:
        known = self._bus.parameters.descriptors()
        if not all(name in known for name in names):
            return None
        return [known[name] for name in names]

    def _describe(self, request: Any) -> Any:
        out = []
        for d in self._descriptors(list(request.names)) or []:
            out.append(
                self._msg("rcl_interfaces/msg/ParameterDescriptor")(
                    name=d.name,
                    type=int(d.type),
                    description=d.description,
                    additional_constraints="",
                    read_only=d.read_only,
                    dynamic_typing=False,
                    floating_point_range=[],
                    integer_range=[],
                )
            )
        return self._msg(_SRV + "DescribeParameters_Response")(descriptors=out)

    def _get(self, request: Any) -> Any:
        params = self._bus.parameters
        values = [
            parameter_value_msg(d.type, params.get(d.name), self._bus.distro)
            for d in self._descriptors(list(request.names)) or []
        ]
        return self._msg(_SRV + "GetParameters_Response")(values=values)

    def _get_types(self, request: Any) -> Any:
        types = [int(d.type) for d in self._descriptors(list(request.names)) or []]
        return self._msg(_SRV + "GetParameterTypes_Response")(
            types=np.asarray(types, dtype=np.uint8)
        )

    def _list(self, request: Any) -> Any:
        names, prefixes = list_parameter_names(
            list(self._bus.parameters.descriptors()), list(request.prefixes), int(request.depth)
        )
        result = self._msg("rcl_interfaces/msg/ListParametersResult")(
            names=names, prefixes=prefixes
        )
        return self._msg(_SRV + "ListParameters_Response")(result=result)

    def _result(self, error: str | None) -> Any:
        return self._msg("rcl_interfaces/msg/SetParametersResult")(
            successful=error is None, reason=error or ""
        )

    def _converted(self, parameter: Any) -> tuple[str, Any]:
        ptype, value = parameter_value_from_msg(parameter.value)
        if ptype is ParamType.NOT_SET:
            self._bus.parameters.describe(parameter.name)  # undeclared: says so
            raise ParameterError(
                f"parameter {parameter.name!r} is statically typed and cannot be undeclared"
            )
        return parameter.name, value

    def _set(self, request: Any) -> Any:
        results = []
        for parameter in request.parameters:
            try:
                self._bus.parameters.set(*self._converted(parameter))
                results.append(self._result(None))
            except ParameterError as exc:
                results.append(self._result(str(exc)))
        return self._msg(_SRV + "SetParameters_Response")(results=results)

    def _set_atomically(self, request: Any) -> Any:
        try:
            values = dict(self._converted(p) for p in request.parameters)
            self._bus.parameters.set_many(values)
            result = self._result(None)
        except ParameterError as exc:
            result = self._result(str(exc))
        return self._msg(_SRV + "SetParametersAtomically_Response")(result=result)
