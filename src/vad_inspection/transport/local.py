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

Services: a client's request is queued at the first server of that name and type in the graph
and served when the server's bus spins (on that thread); the reply completes the client's future
directly, so ``call`` needs nobody to spin the client's bus. A request goes through CDR like a
message (unless the client's bus has ``serialize=False``), the reply too (unless the server's
has). No server, or a server of another type, fails the call at once; a server callback that
raises fails it with the callback's error.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .bus import Bus, Publisher, Subscription, TransportError
from .qos import QoS, incompatibility
from .service import Client, Service, ServiceCallback, ServiceError, resolve_future


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
        self._services: dict[str, list[LocalService]] = {}
        self._warned: set[tuple[int, int]] = set()

    def topics(self) -> dict[str, set[str]]:
        """Topic name -> the message types its publishers and subscriptions use."""
        with self._lock:
            out: dict[str, set[str]] = {}
            for table in (self._publishers, self._subscriptions):
                for topic, endpoints in table.items():
                    out.setdefault(topic, set()).update(e.typename for e in endpoints)
            return out

    def services(self) -> dict[str, set[str]]:
        """Service name -> the service types its servers use."""
        with self._lock:
            return {name: {s.srvtype for s in servers} for name, servers in self._services.items()}

    def _server(self, name: str, srvtype: str) -> tuple[LocalService | None, set[str]]:
        """The first live server of ``name`` with ``srvtype``, and the types of all of them."""
        with self._lock:
            servers = [s for s in self._services.get(name, []) if not s._bus._closed]
            match = next((s for s in servers if s.srvtype == srvtype), None)
            return match, {s.srvtype for s in servers}

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

    def _add_service(self, service: LocalService) -> None:
        with self._lock:
            self._services.setdefault(service.name, []).append(service)

    def _remove_service(self, service: LocalService) -> None:
        with self._lock:
            servers = self._services.get(service.name, [])
            if service in servers:
                servers.remove(service)
            if not servers:
                self._services.pop(service.name, None)


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


class _Request:
    """One call waiting at a server: the client, the request (CDR or object), its future."""

    __slots__ = ("client", "future", "payload")

    def __init__(
        self, client: LocalClient, payload: Any, future: concurrent.futures.Future
    ) -> None:
        self.client = client
        self.payload = payload
        self.future = future


class LocalService(Service):
    _bus: LocalBus

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._requests: deque[_Request] = deque()

    def _enqueue(self, request: _Request) -> None:
        bus = self._bus
        with bus._cond:
            if self._destroyed or bus._closed:
                resolve_future(request.future, error=TransportError(f"service {self.name} is gone"))
                return
            self._requests.append(request)
        bus._wake()

    def _poll(self) -> int:
        # only what is queued now: requests sent by these callbacks wait for the next round
        with self._bus._cond:
            batch = [self._requests.popleft() for _ in range(len(self._requests))]
        done = 0
        for item in batch:
            if item.future.done():  # the caller gave up (timeout, cancel)
                continue
            self._serve(item)
            done += 1
        return done

    def _serve(self, item: _Request) -> None:
        payload = item.payload
        request = self._decode_request(payload) if isinstance(payload, bytes) else payload
        if request is None:
            resolve_future(item.future, error=TransportError(f"service {self.name}: bad request"))
            return
        try:
            response = self._handle(request)
            if not self._bus.serialize:
                resolve_future(item.future, response)
                return
            data = self._bus._encode(response, self.response_type)
        except ServiceError as exc:
            resolve_future(item.future, error=exc)
            return
        except Exception as exc:  # a response that does not serialise: the callback's fault
            self.failed += 1
            self._bus.logger.error("service %s: cannot send the response: %s", self.name, exc)
            resolve_future(item.future, error=ServiceError(f"service {self.name}: {exc}"))
            return
        item.client._complete(item.future, data)

    def _release(self) -> None:
        self._bus.graph._remove_service(self)
        with self._bus._cond:
            pending = list(self._requests)
            self._requests.clear()
        for item in pending:
            resolve_future(item.future, error=TransportError(f"service {self.name} was destroyed"))


class LocalClient(Client):
    _bus: LocalBus

    def service_is_ready(self) -> bool:
        server, _types = self._bus.graph._server(self.name, self.srvtype)
        return server is not None

    def _send(
        self, sequence: int, data: bytes, request: Any, future: concurrent.futures.Future
    ) -> None:
        server, types = self._bus.graph._server(self.name, self.srvtype)
        if server is None:
            found = f" (its servers use {', '.join(sorted(types))})" if types else ""
            resolve_future(
                future,
                error=TransportError(f"no server of {self.name} [{self.srvtype}]{found}"),
            )
            return
        payload = data if self._bus.serialize else request
        server._enqueue(_Request(self, payload, future))


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

    def _create_service(
        self, name: str, srvtype: str, callback: ServiceCallback, qos: QoS
    ) -> Service:
        service = LocalService(self, name, srvtype, *self._srv_names(srvtype), callback, qos)
        self.graph._add_service(service)
        return service

    def _create_client(self, name: str, srvtype: str, qos: QoS) -> Client:
        return LocalClient(self, name, srvtype, *self._srv_names(srvtype), qos)

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
