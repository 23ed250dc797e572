"""A node under test on the in-process bus, spun by a thread, with a peer bus beside it that plays
the camera, tf and any observer (publishers and subscriptions made on demand)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from vad_inspection.transport import create_bus
from vad_inspection.transport.local import LocalGraph


class NodeRig:
    def __init__(self, node_class: type, name: str, **parameters: Any) -> None:
        self.graph = LocalGraph()
        self.bus = create_bus("local", name, graph=self.graph, parameters=parameters)
        self.node = node_class(self.bus)
        self.peer = create_bus("local", "peer", graph=self.graph)
        self._pubs: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.bus.spin_once(0.01)

    def publish(self, topic: str, typename: str, msg: Any, qos: Any = None) -> None:
        if topic not in self._pubs:
            self._pubs[topic] = self.peer.create_publisher(topic, typename, qos)
        self._pubs[topic].publish(msg)

    def listen(self, topic: str, typename: str, qos: Any = None) -> list[Any]:
        box: list[Any] = []
        self.peer.create_subscription(topic, typename, box.append, qos)
        return box

    def pump(self, until: Callable[[], bool], timeout: float = 10.0) -> bool:
        return self.peer.spin_until(until, timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peer.shutdown()
        self.bus.shutdown()
