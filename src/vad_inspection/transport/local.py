"""In-process binding: several nodes in one process, deterministic delivery.

Buses that share a :class:`LocalGraph` (the process-wide :func:`default_graph` unless one is
passed) see each other's topics. Delivery follows DDS semantics where it matters to a node:

- each bus delivers in publish order, on the thread that spins it, during ``spin_once``/``spin``;
- a subscription's queue keeps ``depth`` messages (KEEP_LAST): older unread ones are discarded;
- transient-local publishers keep their last ``depth`` messages for late transient-local
  subscribers (latched topics);
- QoS that would not match on DDS (best effort -> reliable, volatile -> transient local) and
  differing types do not connect, with a warning.

By default messages still go through CDR (serialised on publish, decoded per subscription) so
tests exercise the same path as the network bindings; ``serialize=False`` passes the message
objects themselves (all subscribers then share one object: do not mutate received messages).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .bus import Bus, Publisher, Subscription, TransportError
from .qos import QoS, incompatibility


class _Sample:
    """One published message: its CDR bytes, its object, or both (filled in lazily)."""

    __slots__ = ("_bus", "data", "msg", "typename")

    def __init__(self, bus: LocalBus, typename: str, data: bytes | None, msg: Any) -> None:
        self._bus = bus
        self.typename = typename
        self.data = data
        self.msg = msg

    def cdr(self) -> bytes:
        if self.data is None:
            self.data = self._bus._encode(self.msg, self.typename)
        return self.data


class _Entry:
    __slots__ = ("alive", "sample", "subscription")

    def __init__(self, subscription: LocalSubscription, sample: _Sample) -> None:
        self.subscription = subscription
        self.sample = sample
        self.alive = True


class LocalGraph:
    """The topics shared by the buses of one process (or of one test)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._publishers: dict[str, list[LocalPublisher]] = {}
        self._subscriptions: dict[str, list[LocalSubscription]] = {}
        self._warned: set[tuple[int, int]] = set()

    def topics(self) -> dict[str, set[str]]:
        """Topic name -> the message types its publishers and subscriptions use."""
        with self._lock:
            out: dict[str, set[str]] = {}
            for table in (self._publishers, self._subscriptions):
                for topic, endpoints in table.items():
                    out.setdefault(topic, set()).update(e.typename for e in endpoints)
            return out

    def _connects(self, pub: LocalPublisher, sub: LocalSubscription) -> bool:
        reason = None
        if pub.typename != sub.typename:
            reason = f"publisher type {pub.typename}, subscription type {sub.typename}"
        else:
            reason = incompatibility(pub.qos, sub.qos)
        if reason is None:
            return True
        key = (id(pub), id(sub))
        if key not in self._warned:
            self._warned.add(key)
            sub._bus.logger.warning("%s: not connected to a publisher: %s", pub.topic, reason)
        return False

    def _add_publisher(self, pub: LocalPublisher) -> None:
        with self._lock:
            self._publishers.setdefault(pub.topic, []).append(pub)
            for sub in self._subscriptions.get(pub.topic, []):
                self._connects(pub, sub)  # warn about a mismatch now rather than on first publish

    def _add_subscription(self, sub: LocalSubscription) -> None:
        with self._lock:
            self._subscriptions.setdefault(sub.topic, []).append(sub)
            if sub.qos.latched:
                for pub in self._publishers.get(sub.topic, []):
                    if pub.qos.latched and self._connects(pub, sub):
                        for sample in pub._history:
                            sub._enqueue(sample)
            else:
                for pub in self._publishers.get(sub.topic, []):
                    self._connects(pub, sub)

    def _remove(self, table: dict[str, list[Any]], endpoint: Any) -> None:
        with self._lock:
            endpoints = table.get(endpoint.topic, [])
            if endpoint in endpoints:
                endpoints.remove(endpoint)
            if not endpoints:
                table.pop(endpoint.topic, None)

    def _publish(self, pub: LocalPublisher, sample: _Sample) -> None:
        with self._lock:
            if pub._history is not None:
                pub._history.append(sample)
            for sub in self._subscriptions.get(pub.topic, []):
                if self._connects(pub, sub):
                    sub._enqueue(sample)

    def _count(self, table: dict[str, list[Any]], topic: str, match: Callable[[Any], bool]) -> int:
        with self._lock:
            return sum(1 for e in table.get(topic, []) if match(e))


_DEFAULT_GRAPH = LocalGraph()


def default_graph() -> LocalGraph:
    """The process-wide graph buses join when none is given."""
    return _DEFAULT_GRAPH


class LocalPublisher(Publisher):
    _bus: LocalBus

    def __init__(self, bus: LocalBus, topic: str, typename: str, qos: QoS) -> None:
        super().__init__(bus, topic, typename, qos)
        self._history: deque[_Sample] | None = deque(maxlen=qos.keep()) if qos.latched else None

    def publish(self, msg: Any) -> None:
        if self._bus.serialize or isinstance(msg, (bytes, bytearray, memoryview)):
            super().publish(msg)
            return
        if self._destroyed:
            raise TransportError(f"publisher on {self.topic} is destroyed")
        self._bus._check_open()
        have = getattr(msg, "__msgtype__", None)
        if have != self.typename:
            # same check the serialiser makes, so both modes reject the same mistakes
            self._bus._encode(msg, self.typename)
        self._bus.graph._publish(self, _Sample(self._bus, self.typename, None, msg))
        self.published += 1

    def _write(self, data: bytes) -> None:
        self._bus.graph._publish(self, _Sample(self._bus, self.typename, data, None))

    @property
    def subscription_count(self) -> int:
        graph = self._bus.graph
        return graph._count(
            graph._subscriptions,
            self.topic,
            lambda s: s.typename == self.typename and incompatibility(self.qos, s.qos) is None,
        )


class LocalSubscription(Subscription):
    _bus: LocalBus

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._pending: deque[_Entry] = deque()

    def _enqueue(self, sample: _Sample) -> None:
        bus = self._bus
        with bus._cond:
            if self._destroyed or bus._closed:
                return
            entry = _Entry(self, sample)
            self._pending.append(entry)
            bus._queue.append(entry)
            keep = self.qos.keep()
            if keep is not None and len(self._pending) > keep:
                self._pending.popleft().alive = False
            bus._cond.notify_all()

    def _take(self, entry: _Entry) -> None:
        if self._pending and self._pending[0] is entry:
            self._pending.popleft()

    def _handle(self, sample: _Sample) -> bool:
        if not self.raw and not self._bus.serialize and sample.msg is not None:
            return self._deliver_message(sample.msg)
        return self._deliver(sample.cdr())

    @property
    def publisher_count(self) -> int:
        graph = self._bus.graph
        return graph._count(
            graph._publishers,
            self.topic,
            lambda p: p.typename == self.typename and incompatibility(p.qos, self.qos) is None,
        )


class LocalBus(Bus):
    """In-process binding. Options: ``graph`` (a :class:`LocalGraph`; default: the process's),
    ``serialize`` (default True: CDR round trip on every delivery)."""

    kind = "local"

    def __init__(
        self,
        node_name: str,
        *,
        graph: LocalGraph | None = None,
        serialize: bool = True,
        **options: Any,
    ) -> None:
        self.graph = graph if graph is not None else default_graph()
        self.serialize = serialize
        # re-entrant: a signal handler may wake the bus while this thread holds the lock
        self._cond = threading.Condition(threading.RLock())
        self._queue: deque[_Entry] = deque()
        self._woken = False
        super().__init__(node_name, **options)

    def _create_publisher(self, topic: str, typename: str, qos: QoS) -> Publisher:
        pub = LocalPublisher(self, topic, typename, qos)
        self.graph._add_publisher(pub)
        return pub

    def _create_subscription(
        self, topic: str, typename: str, callback: Callable[[Any], None], qos: QoS, raw: bool
    ) -> Subscription:
        sub = LocalSubscription(self, topic, typename, callback, qos, raw)
        self.graph._add_subscription(sub)
        return sub

    def _destroy_publisher(self, publisher: Publisher) -> None:
        self.graph._remove(self.graph._publishers, publisher)
        super()._destroy_publisher(publisher)

    def _destroy_subscription(self, subscription: Subscription) -> None:
        self.graph._remove(self.graph._subscriptions, subscription)
        super()._destroy_subscription(subscription)

    def _dispatch(self) -> int:
        # only what is queued now: messages published by these callbacks wait for the next round
        with self._cond:
            batch = len(self._queue)
        done = 0
        for _ in range(batch):
            with self._cond:
                if not self._queue:
                    break
                entry = self._queue.popleft()
                if not entry.alive:
                    continue
                entry.subscription._take(entry)
            if entry.subscription._destroyed:
                continue
            entry.subscription._handle(entry.sample)
            done += 1
        return done

    def _wait(self, timeout: float | None) -> None:
        with self._cond:
            if not self._queue and not self._woken:
                self._cond.wait(timeout)
            self._woken = False

    def _wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def _close(self) -> None:
        for pub in list(self._publishers):
            self.graph._remove(self.graph._publishers, pub)
        for sub in list(self._subscriptions):
            self.graph._remove(self.graph._subscriptions, sub)
        with self._cond:
            self._queue.clear()
