"""What every node shares: typed parameters declared from a dataclass, and the REP-2006 lifecycle.

A node is written once against the :class:`~vad_inspection.transport.Bus` and runs on the ``ros``,
``dds`` and ``local`` bindings alike. Like Nav2's and yolo_ros's nodes it is *managed*: it starts
``unconfigured``; ``configure`` loads what it needs (a model file that is missing or corrupt fails
the transition with the reason and leaves it unconfigured), ``activate`` starts the work,
``deactivate`` pauses it, ``cleanup`` frees, ``shutdown`` finalises. The standard lifecycle
services (``~/change_state``, ``~/get_state``, ``~/get_available_states``,
``~/get_available_transitions``, ``~/get_transition_graph``) and the ``~/transition_event`` topic
are served over the Bus, so ``ros2 lifecycle set /detector configure`` works against a node on
rclpy and against one on Cyclone DDS without ROS 2 alike.

Parameters are the fields of a frozen dataclass whose metadata (:func:`parameter`) gives the
description and whether the field may change at run time; the node declares them with their
types (an int given for a double is accepted, as the other bindings do) and gets one typed
object back.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar, get_type_hints

from ..errors import SetupError, VadError
from ..msgs.defaults import new_message
from ..transport import DEFAULT, Bus
from ..transport.params import ParameterError

P = TypeVar("P")


def parameter(
    default: Any, description: str, *, dynamic: bool = False, choices: tuple[str, ...] = ()
) -> Any:
    """A dataclass field that is a node parameter: its default, what it means, whether it may
    change while the node runs (``ros2 param set``), and the values a string may take."""
    meta = {"description": description, "dynamic": dynamic, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def declare_parameters(bus: Bus, cls: type[P]) -> P:
    """Declare every field of ``cls`` on ``bus`` (type from the annotation) and return the values.

    A string outside its ``choices`` is refused here, naming the choices, so a typo in a params
    file stops the node at start-up rather than being read as a default later.
    """
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        description = f.metadata.get("description", "")
        choices = f.metadata.get("choices", ())
        if choices:
            description += f" (one of: {', '.join(choices)})"
        value = bus.parameters.declare(
            f.name,
            default,
            type=hints[f.name],
            description=description,
            read_only=not f.metadata.get("dynamic", False),
        )
        check_choice(f.name, value, choices)
        values[f.name] = value
    return cls(**values)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if choices and value not in choices:
        raise ParameterError(f"parameter {name!r} is {value!r}; choose one of {', '.join(choices)}")


def dynamic_parameters(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("dynamic"))


class State(IntEnum):
    """lifecycle_msgs/msg/State ids (primary states and the transition states between them)."""

    UNKNOWN = 0
    UNCONFIGURED = 1
    INACTIVE = 2
    ACTIVE = 3
    FINALIZED = 4
    CONFIGURING = 10
    CLEANINGUP = 11
    SHUTTINGDOWN = 12
    ACTIVATING = 13
    DEACTIVATING = 14
    ERRORPROCESSING = 15

    @property
    def label(self) -> str:
        return self.name.lower()


class Transition(IntEnum):
    """lifecycle_msgs/msg/Transition ids of the transitions a client may request."""

    CONFIGURE = 1
    CLEANUP = 2
    ACTIVATE = 3
    DEACTIVATE = 4
    UNCONFIGURED_SHUTDOWN = 5
    INACTIVE_SHUTDOWN = 6
    ACTIVE_SHUTDOWN = 7


@dataclass(frozen=True)
class _Edge:
    transition: Transition
    label: str
    start: State
    via: State
    goal: State


#: The REP-2006 state machine: transition -> from which primary state, through which transition
#: state, to which goal (a callback failing returns to ``start``).
EDGES: tuple[_Edge, ...] = (
    _Edge(Transition.CONFIGURE, "configure", State.UNCONFIGURED, State.CONFIGURING, State.INACTIVE),
    _Edge(Transition.CLEANUP, "cleanup", State.INACTIVE, State.CLEANINGUP, State.UNCONFIGURED),
    _Edge(Transition.ACTIVATE, "activate", State.INACTIVE, State.ACTIVATING, State.ACTIVE),
    _Edge(Transition.DEACTIVATE, "deactivate", State.ACTIVE, State.DEACTIVATING, State.INACTIVE),
    _Edge(Transition.UNCONFIGURED_SHUTDOWN, "shutdown", State.UNCONFIGURED, State.SHUTTINGDOWN,
          State.FINALIZED),
    _Edge(Transition.INACTIVE_SHUTDOWN, "shutdown", State.INACTIVE, State.SHUTTINGDOWN,
          State.FINALIZED),
    _Edge(Transition.ACTIVE_SHUTDOWN, "shutdown", State.ACTIVE, State.SHUTTINGDOWN,
          State.FINALIZED),
)  # fmt: skip


class LifecycleError(SetupError):
    """A transition that does not exist from the current state."""


class LifecycleNode:
    """Base of the managed nodes: the state machine, its services and the transition events.

    Subclasses override :meth:`on_configure`, :meth:`on_activate`, :meth:`on_deactivate`,
    :meth:`on_cleanup` and :meth:`on_shutdown`; raising :class:`~vad_inspection.errors.VadError`
    (or returning False) refuses the transition, and the reason is logged and kept in
    :attr:`last_error`. Transitions may be requested from any thread.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.log: logging.Logger = bus.logger
        self.state = State.UNCONFIGURED
        self.last_error = ""
        self._lock = threading.RLock()
        # as rclcpp's and rclpy's lifecycle nodes: reliable, volatile, depth 10 (launch_ros'
        # LifecycleNode subscribes with those)
        self._events = bus.create_publisher(
            "~/transition_event", "lifecycle_msgs/msg/TransitionEvent", DEFAULT
        )
        self._services = [
            bus.create_service("~/change_state", "lifecycle_msgs/srv/ChangeState", self._change),
            bus.create_service("~/get_state", "lifecycle_msgs/srv/GetState", self._get_state),
            bus.create_service(
                "~/get_available_states", "lifecycle_msgs/srv/GetAvailableStates", self._states
            ),
            bus.create_service(
                "~/get_available_transitions",
                "lifecycle_msgs/srv/GetAvailableTransitions",
                self._available,
            ),
            bus.create_service(
                "~/get_transition_graph",
                "lifecycle_msgs/srv/GetAvailableTransitions",
                self._graph,
            ),
        ]

    # -- the callbacks subclasses provide --------------------------------------------------------
    def on_configure(self) -> bool | None: ...

    def on_activate(self) -> bool | None: ...

    def on_deactivate(self) -> bool | None: ...

    def on_cleanup(self) -> bool | None: ...

    def on_shutdown(self) -> bool | None: ...

    # -- driving the machine ---------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.state is State.ACTIVE

    def available(self) -> list[_Edge]:
        return [e for e in EDGES if e.start is self.state]

    def trigger(self, transition: Transition | str) -> bool:
        """Run a transition by id or label (``"configure"``...); True when it reached its goal.

        A transition that does not exist from the current state raises :class:`LifecycleError`;
        a callback that refuses leaves the node where it was and returns False.
        """
        with self._lock:
            edge = self._edge(transition)
            callback: Callable[[], bool | None] = {
                "configure": self.on_configure,
                "cleanup": self.on_cleanup,
                "activate": self.on_activate,
                "deactivate": self.on_deactivate,
                "shutdown": self.on_shutdown,
            }[edge.label]
            self._announce(edge, edge.start, edge.via)
            self.state = edge.via
            try:
                ok = callback() is not False
                self.last_error = "" if ok else f"{edge.label} refused"
            except VadError as error:
                ok, self.last_error = False, f"{edge.label} failed: {error}"
            except Exception as error:  # a bug in a callback must not kill the node
                self.log.exception("%s raised", edge.label)
                ok, self.last_error = False, f"{edge.label} failed: {type(error).__name__}: {error}"
            goal = edge.goal if ok else edge.start
            if not ok:
                self.log.error("%s", self.last_error)
            self.state = goal
            self._announce(edge, edge.via, goal)
            if ok:
                self.log.info("%s: now %s", edge.label, goal.label)
            return ok

    def _edge(self, transition: Transition | str) -> _Edge:
        for edge in self.available():
            if transition in (edge.transition, edge.label):
                return edge
        allowed = ", ".join(e.label for e in self.available()) or "none"
        raise LifecycleError(
            f"no transition {getattr(transition, 'name', transition)!r} from state "
            f"{self.state.label} (allowed: {allowed})"
        )

    # -- messages and services -------------------------------------------------------------------
    def _state_msg(self, state: State) -> Any:
        return new_message(
            "lifecycle_msgs/msg/State", self.bus.distro, id=int(state), label=state.label
        )

    def _transition_msg(self, edge: _Edge) -> Any:
        return new_message(
            "lifecycle_msgs/msg/Transition", self.bus.distro, id=int(edge.transition),
            label=edge.label,
        )  # fmt: skip

    def _announce(self, edge: _Edge, start: State, goal: State) -> None:
        self._events.publish(
            new_message(
                "lifecycle_msgs/msg/TransitionEvent",
                self.bus.distro,
                timestamp=self.bus.now_ns(),
                transition=self._transition_msg(edge),
                start_state=self._state_msg(start),
                goal_state=self._state_msg(goal),
            )
        )

    def _response(self, srv: str, **values: Any) -> Any:
        return new_message(f"lifecycle_msgs/srv/{srv}_Response", self.bus.distro, **values)

    def _change(self, request: Any) -> Any:
        wanted = request.transition
        key: Transition | str = (
            Transition(wanted.id) if wanted.id in Transition._value2member_map_ else wanted.label
        )
        try:
            ok = self.trigger(key if wanted.id else wanted.label)
        except LifecycleError as error:
            self.log.warning("change_state refused: %s", error)
            ok = False
        return self._response("ChangeState", success=ok)

    def _get_state(self, _request: Any) -> Any:
        return self._response("GetState", current_state=self._state_msg(self.state))

    def _states(self, _request: Any) -> Any:
        return self._response(
            "GetAvailableStates", available_states=[self._state_msg(s) for s in State if s]
        )

    def _descriptions(self, edges: list[_Edge]) -> list[Any]:
        return [
            new_message(
                "lifecycle_msgs/msg/TransitionDescription",
                self.bus.distro,
                transition=self._transition_msg(e),
                start_state=self._state_msg(e.start),
                goal_state=self._state_msg(e.goal),
            )
            for e in edges
        ]

    def _available(self, _request: Any) -> Any:
        edges = self.available()
        return self._response(
            "GetAvailableTransitions", available_transitions=self._descriptions(edges)
        )

    def _graph(self, _request: Any) -> Any:
        return self._response(
            "GetAvailableTransitions", available_transitions=self._descriptions(list(EDGES))
        )
