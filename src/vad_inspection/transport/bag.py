"""rosbag2 bags through rosbags: MCAP by default, sqlite3 too; CDR bytes in, CDR bytes out.

Bags are written in the metadata version of the target distro's rosbag2: 9 for Jazzy, 8 for
Humble. Humble's metadata reader ignores the version number and unknown keys but expects
``offered_qos_profiles`` as a YAML string, which version 8 writes and version 9 replaced by a
list (the reason Jazzy bags do not open on Humble). Each topic carries its full message
definition (MCAP schema / sqlite3 ``message_definitions``), so other tools (``ros2 bag``, Foxglove,
the ``mcap`` reader) decode it without our typestore.

Reading uses the distro's typestore plus whatever definitions the bag carries: a type the
typestore lacks, or defines differently (an older vision_msgs, say), is decoded with the bag's
own definition. A topic whose type is known to neither is still read (raw bytes are always
available, :attr:`BagReader.undecodable` lists such topics); only :meth:`BagMessage.decode` on it
raises :class:`~vad_inspection.msgs.MessageError` naming the type and topic. That keeps a bag
with one exotic vendor topic replayable instead of rejecting it whole.

A damaged bag is read as far as it honestly can be, and what is wrong is said in
:attr:`BagReader.warnings` rather than hidden: a directory without ``metadata.yaml`` (rosbag2
killed before it wrote one) is read from its single storage file; a ``metadata.yaml`` that
misdescribes its storage file (hand-edited, copied from another bag: wrong counts, time range,
topics or QoS, so rosbags would silently skip or cut messages) gives way to the file itself; and
an MCAP file cut off before its summary and footer (a recorder killed, a copy interrupted), which
rosbags' indexed reader refuses outright, is read front to back up to the cut with the ``mcap``
package's stream reader. Anything that is not a bag, or holds no complete message, still fails
with a :class:`BagError` naming the path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rosbags.interfaces import (
    Connection,
    MessageDefinitionFormat,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

from ..msgs.cdr import deserialize_with, serialize_with
from ..msgs.types import (
    DISTROS,
    MessageError,
    check_distro,
    definition_texts,
    normalize_typename,
    typestore,
)
from .mcap_salvage import SalvagedMcap, is_cut_off_mcap

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
VERSIONS = {"humble": 8, "jazzy": 9}
"""rosbag2 metadata version written per distro (see the module docstring)."""

_STORES = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}
_DISTRO_KEY = "vad_inspection.distro"
_ZERO = QosTime(0, 0)  # rmw's "unspecified": the middleware default
_STORAGE_SUFFIXES = (".mcap", ".db3")


class BagError(Exception):
    """A bag cannot be opened, read or written; the message names the bag's path."""


# ---------------------------------------------------------------------------- writing


class BagWriter:
    """Write a new rosbag2 bag (a directory) of CDR messages.

    Use as a context manager; leaving the block closes the bag (also after an exception, so a
    recorder that fails mid-run still leaves a readable bag with everything written so far).
    ``write`` takes CDR bytes (stored as they are) or a message object (serialised here; its
    topic is added on first use).
    """

    def __init__(self, path: str | Path, distro: str = "jazzy", storage: str = "mcap") -> None:
        self.path = Path(path)
        self.distro = check_distro(distro)
        if storage not in STORAGES:
            raise BagError(f"{self.path}: unknown storage {storage!r}; use 'mcap' or 'sqlite3'")
        if self.path.exists():
            raise BagError(f"{self.path}: exists already; a bag is only ever written new")
        self.storage = storage
        self._store = typestore(distro)
        self._writer = Writer(self.path, version=VERSIONS[distro], storage_plugin=STORAGES[storage])
        self._connections: dict[str, Connection] = {}
        self._open = False

    def open(self) -> BagWriter:
        if not self._open:
            try:
                self._writer.open()
            except Exception as exc:
                raise BagError(f"{self.path}: cannot create bag: {exc}") from exc
            self._writer.set_custom_data(_DISTRO_KEY, self.distro)
            self._open = True
        return self

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add_topic(self, topic: str, typename: str, qos: Any = None) -> None:
        """Declare ``topic`` with message type ``typename`` (idempotent for the same type).

        ``qos`` is the offered QoS recorded for playback: a transport ``QoS`` (anything with
        ``reliability``, ``durability``, ``history``, ``depth``), a profile name such as
        ``"sensor_data"``, a rosbags ``Qos``, or None (no profile recorded).
        """
        self.open()
        name = normalize_typename(typename)
        if name not in self._store.types:
            raise MessageError(f"unknown message type {typename!r} for ROS 2 {self.distro}")
        have = self._connections.get(topic)
        if have is not None:
            if have.msgtype != name:
                raise BagError(f"{self.path}: topic {topic!r} already carries {have.msgtype}")
            return
        try:
            self._connections[topic] = self._writer.add_connection(
                topic, name, typestore=self._store, offered_qos_profiles=_qos_profiles(qos)
            )
        except Exception as exc:
            raise BagError(f"{self.path}: cannot add topic {topic!r} ({name}): {exc}") from exc

    def write(self, topic: str, timestamp_ns: int, data: Any) -> None:
        """Append one message: CDR ``bytes``/``bytearray``/``memoryview`` or a message object."""
        self.open()
        if timestamp_ns < 0:
            raise BagError(f"{self.path}: negative timestamp {timestamp_ns} on {topic!r}")
        if isinstance(data, (bytes, bytearray, memoryview)):
            raw = data
            if len(raw) < 4 or bytes(raw[:2]) not in (b"\x00\x00", b"\x00\x01"):
                raise MessageError(f"{topic}: {len(raw)} bytes do not start with a CDR header")
            connection = self._connections.get(topic)
            if connection is None:
                raise BagError(f"{self.path}: topic {topic!r} not added; call add_topic first")
        else:
            if topic not in self._connections:
                self.add_topic(topic, getattr(data, "__msgtype__", type(data).__name__))
            connection = self._connections[topic]
            raw = serialize_with(self._store, data, connection.msgtype)
        try:
            self._writer.write(connection, int(timestamp_ns), raw)
        except Exception as exc:
            raise BagError(f"{self.path}: cannot write to {topic!r}: {exc}") from exc

    def close(self) -> None:
        """Finish the bag (index, metadata.yaml). Safe to call twice."""
        if not self._open:
            return
        self._open = False
        try:
            self._writer.close()
        except Exception as exc:
            with contextlib.suppress(Exception):  # a full disk fails the abort's flush too
                self._writer.abort()
            raise BagError(f"{self.path}: cannot finish bag: {exc}") from exc


def _qos_profiles(qos: Any) -> list[Qos]:
    if qos is None:
        return []
    if isinstance(qos, Qos):
        return [qos]
    if isinstance(qos, str):
        from .qos import profile  # the transport's named profiles

        qos = profile(qos)

    def name(value: Any) -> str:
        return str(getattr(value, "value", value)).upper()

    try:
        return [
            Qos(
                history=QosHistory[name(qos.history)],
                depth=int(qos.depth),
                reliability=QosReliability[name(qos.reliability)],
                durability=QosDurability[name(qos.durability)],
                deadline=_ZERO,
                lifespan=_ZERO,
                liveliness=QosLiveliness.AUTOMATIC,
                liveliness_lease_duration=_ZERO,
                avoid_ros_namespace_conventions=False,
            )
        ]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BagError(f"cannot record QoS {qos!r}: {exc}") from exc


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class BagMessage:
    """One stored message: where and when it was recorded, and its CDR bytes."""

    topic: str
    typename: str
    timestamp_ns: int
    data: bytes
    store: Typestore = field(repr=False, compare=False)

    def decode(self) -> Any:
        """The message object; :class:`MessageError` names topic, time and defect otherwise."""
        if self.typename not in self.store.types:
            raise MessageError(
                f"{self.topic} @ {self.timestamp_ns}: no definition for {self.typename!r} "
                "(not in the typestore and the bag carries none)"
            )
        try:
            return deserialize_with(self.store, self.data, self.typename)
        except MessageError as exc:
            raise MessageError(f"{self.topic} @ {self.timestamp_ns}: {exc}") from exc


class BagReader:
    """Read a rosbag2 bag (directory with metadata.yaml, or a bare ``.mcap``/``.db3`` file).

    Opens on construction, so a missing or corrupt bag fails right here with a :class:`BagError`
    naming the path. Iterate for every message in time order, or use :meth:`messages` to filter.
    ``distro`` picks the base typestore; None takes the bag's recorded distro, else Jazzy.
    """

    def __init__(self, path: str | Path, distro: str | None = None) -> None:
        self.path = Path(path)
        self.warnings: list[str] = []
        """What is wrong with the bag but did not stop it being read, one sentence each naming
        the file: no or a stale ``metadata.yaml``, an MCAP file read only up to where it is cut
        off. A player or report should pass these on; the bag is not what it claims to be."""
        self._distro_hints: list[str | None] = []
        self._reader = self._open()
        try:
            self.distro = check_distro(distro) if distro else self._recorded_distro()
            connections = self._reader.connections
            self._store = _reader_typestore(self.distro, connections)
        except BaseException:
            self._reader.close()
            raise
        self._connections = connections
        self.undecodable: dict[str, str] = {
            c.topic: c.msgtype for c in connections if c.msgtype not in self._store.types
        }
        """Topics whose type neither the typestore nor the bag defines: topic -> type name."""

    def _open(self) -> Reader | SalvagedMcap:
        """rosbags' reader on the bag, on its lone storage file if ``metadata.yaml`` is missing or
        misdescribes it, or a salvage reader on a cut-off MCAP file (see the module docstring)."""
        target = self.path
        if self.path.is_dir() and not (self.path / "metadata.yaml").exists():
            target = _lone_storage_file(self.path)
            self.warnings.append(
                f"{self.path}: no metadata.yaml (recording not finished?); reading {target.name} "
                "directly (`ros2 bag reindex` writes a metadata.yaml)"
            )
        try:
            reader = Reader(target)
            reader.open()
        except Exception as exc:
            salvaged = _salvage(self.path, target, exc)
            if salvaged is None:
                raise BagError(f"{self.path}: cannot open bag: {_why(exc)}") from exc
            self.warnings.append(salvaged.report())
            return salvaged
        self._distro_hints = _distro_hints(reader)
        stale = _metadata_mismatch(reader)
        if not stale:
            return reader
        files = [Path(s.path) for s in getattr(reader.storage, "storages", [])]
        if len(files) != 1 or reader.compression_mode:  # several or compressed: no way round it
            self.warnings.append(f"{self.path}: metadata.yaml does not match the storage: {stale}")
            return reader
        try:
            direct = Reader(files[0])
            direct.open()
        except Exception as exc:
            self.warnings.append(
                f"{self.path}: metadata.yaml does not match the storage ({stale}), and "
                f"{files[0].name} does not open on its own ({_why(exc)})"
            )
            return reader
        reader.close()
        self.warnings.append(
            f"{self.path}: metadata.yaml does not match {files[0].name} ({stale}); reading "
            f"{files[0].name} itself (`ros2 bag reindex` rewrites metadata.yaml)"
        )
        return direct

    def _recorded_distro(self) -> str:
        for candidate in self._distro_hints:
            if candidate in DISTROS:
                return candidate
        return "jazzy"

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def topics(self) -> dict[str, str]:
        """Topic -> message type name, for every topic in the bag."""
        return {c.topic: c.msgtype for c in self._connections}

    def time_span(self) -> tuple[int, int]:
        """First and last message time (ns) from the bag's metadata, without reading it."""
        try:
            start = int(self._reader.start_time)
            end = int(self._reader.end_time)
        except Exception as exc:
            raise BagError(f"{self.path}: no time range in the metadata: {_why(exc)}") from exc
        return start, max(start, end - 1)  # rosbag2 counts the duration one past the last

    def offered_qos(self) -> dict[str, Any]:
        """Topic -> the transport ``QoS`` its publisher offered when recorded (None: not
        recorded), so a player re-offers what the recorder saw: a latched ``/tf_static`` stays
        latched, a best-effort camera stays best effort."""
        from .qos import Durability, History, QoS, Reliability

        offered: dict[str, Any] = {}
        for c in self._connections:
            profiles = getattr(getattr(c, "ext", None), "offered_qos_profiles", None) or []
            qos = None
            for p in profiles:
                try:
                    history = History(p.history.name.lower())
                    qos = QoS(
                        Reliability(p.reliability.name.lower()),
                        Durability(p.durability.name.lower()),
                        history,
                        max(int(p.depth), 1) if history is History.KEEP_LAST else 0,
                    )
                    break
                except (AttributeError, ValueError):  # SYSTEM_DEFAULT, UNKNOWN: leave it open
                    continue
            offered.setdefault(c.topic, qos)
        return offered

    def message_counts(self) -> dict[str, int]:
        """Topic -> number of messages stored."""
        counts: dict[str, int] = {}
        for c in self._connections:
            counts[c.topic] = counts.get(c.topic, 0) + c.msgcount
        return counts

    def __iter__(self) -> Iterator[BagMessage]:
        return self.messages()

    def messages(
        self,
        topics: Iterable[str] | None = None,
        start_ns: int | None = None,
        stop_ns: int | None = None,
    ) -> Iterator[BagMessage]:
        """Messages in time order, optionally only ``topics`` and ``start_ns <= t < stop_ns``."""
        connections = self._connections
        if topics is not None:
            wanted = set(topics)
            connections = [c for c in connections if c.topic in wanted]
            if not connections:
                return
        try:
            for connection, timestamp, raw in self._reader.messages(
                connections, start=start_ns, stop=stop_ns
            ):
                yield BagMessage(
                    connection.topic, connection.msgtype, timestamp, bytes(raw), self._store
                )
        except Exception as exc:
            raise BagError(f"{self.path}: cannot read messages: {_why(exc)}") from exc


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _distro_hints(reader: Reader) -> list[str | None]:
    """Where an opened bag may name its distro: rosbag2's ``ros_distro``, then our custom key."""
    metadata = getattr(reader.storage, "metadata", None)
    custom = getattr(metadata, "custom", None) or {}
    return [reader.ros_distro, custom.get(_DISTRO_KEY)]


def _lone_storage_file(directory: Path) -> Path:
    """The one storage file of a bag directory that has no metadata.yaml; BagError otherwise,
    since without the metadata neither the order of split files nor what is a bag is known."""
    files = sorted(p for p in directory.iterdir() if p.suffix in _STORAGE_SUFFIXES and p.is_file())
    if len(files) == 1:
        return files[0]
    if not files:
        raise BagError(
            f"{directory}: cannot open bag: no metadata.yaml and no .mcap or .db3 file in it"
        )
    raise BagError(
        f"{directory}: cannot open bag: no metadata.yaml and {len(files)} storage files "
        f"({', '.join(p.name for p in files)}); run `ros2 bag reindex {directory}` or play one file"
    )


def _metadata_mismatch(reader: Reader) -> str:
    """How a bag directory's metadata.yaml misdescribes its storage files ('' when it does not).

    rosbags takes topics, counts and the time range from metadata.yaml and fetches messages only
    for storage topics that match a listed one exactly (type and QoS too), so a stale file makes it
    skip messages or whole topics without a word; the storage's own index is the truth.
    """
    directory = reader.storage
    storages = getattr(directory, "storages", None)
    if not storages:
        return ""
    listed = directory.connections
    said: dict[str, int] = {}
    for c in listed:
        said[c.topic] = said.get(c.topic, 0) + c.msgcount
    held: dict[str, int] = {}
    unmatched: set[str] = set()
    for storage in storages:
        for x in storage.connections:
            held[x.topic] = held.get(x.topic, 0) + x.msgcount
            if not any(
                y.topic == x.topic
                and y.msgtype == x.msgtype
                and y.ext == x.ext
                and (not x.digest or not y.digest or y.digest == x.digest)
                for y in listed
            ):
                unmatched.add(x.topic)
    problems = [
        f"{topic}: {said.get(topic, 0)} listed, {held.get(topic, 0)} stored"
        for topic in sorted(set(said) | set(held))
        if said.get(topic, 0) != held.get(topic, 0)
    ]
    if unmatched:
        problems.append(f"{sorted(unmatched)} stored with a type or QoS it does not list")
    if any(held.values()):
        start = min(s.metadata.start_time for s in storages)
        end = max(s.metadata.end_time for s in storages)
        claimed = (directory.metadata.start_time, directory.metadata.end_time)
        if claimed != (start, end):
            problems.append(f"time range {claimed[0]}..{claimed[1]} ns, stored {start}..{end} ns")
    return "; ".join(problems)


def _salvage(bag: Path, target: Path, error: Exception) -> SalvagedMcap | None:
    """A reader on the intact part of a cut-off MCAP file behind ``target`` (the file, or the
    lone .mcap of a bag directory); None if ``target`` is no cut-off MCAP, so ``error`` stands.
    BagError if it is one but nothing of it can be played."""
    mcap = target
    if target.is_dir():
        files = sorted(target.glob("*.mcap"))
        if len(files) != 1:
            return None
        mcap = files[0]
    if mcap.suffix != ".mcap" or not is_cut_off_mcap(mcap):
        return None
    advice = f"`mcap recover {mcap} -o recovered.mcap` may rescue what is left"
    try:
        salvaged = SalvagedMcap(mcap)
    except ImportError:
        raise BagError(
            f"{bag}: cannot open bag: {mcap.name} is truncated (no MCAP summary and footer: a "
            f"recording cut off?) and rosbags reads only complete files; {advice}, or install "
            "the `mcap` Python package to play the part before the cut"
        ) from error
    if not salvaged.message_count:
        raise BagError(
            f"{bag}: cannot open bag: {mcap.name} is truncated (no MCAP summary and footer) and "
            f"no complete message precedes the cut ({salvaged.cut}); {advice}"
        ) from error
    return salvaged


def _reader_typestore(distro: str, connections: Iterable[Connection]) -> Typestore:
    """The distro's typestore, extended by the bag's own definitions where they add or differ.

    The shared store is returned untouched when the bag adds nothing; otherwise a private store
    is built so the process-wide one never changes under other users.
    """
    base = typestore(distro)
    carried: dict[str, Any] = {}
    for connection in connections:
        carried.update(_carried_types(connection))
    changed = {
        name: typ
        for name, typ in carried.items()
        if _fields(base.fielddefs.get(name)) != _fields(typ)
    }
    if not changed:
        return base
    store = get_typestore(_STORES[distro])
    for name in changed:
        store.fielddefs.pop(name, None)
        store.types.pop(name, None)
    vision: dict[str, Any] = {}
    for name, text in definition_texts(distro).items():
        vision.update(get_types_from_msg(text, name))
    store.register({k: v for k, v in vision.items() if k not in changed})
    store.register(changed)
    return store


def _carried_types(connection: Connection) -> dict[str, Any]:
    """Types defined by a connection's stored definition; {} if none or unparsable."""
    fmt, text = connection.msgdef.format, connection.msgdef.data
    if fmt == MessageDefinitionFormat.NONE or not text.strip():
        return {}
    try:
        if fmt == MessageDefinitionFormat.MSG:
            return get_types_from_msg(text, connection.msgtype)
        sep = "=" * 80 + "\n"
        if not text.startswith(f"{sep}IDL: "):
            return get_types_from_idl(text)
        types: dict[str, Any] = {}
        for part in text.split(sep)[1:]:  # "IDL: pkg/msg/Type\n<idl text>" per type
            types.update(get_types_from_idl(part.split("\n", 1)[1]))
        return types
    except Exception:  # a broken definition only makes that type undecodable
        return {}


def _fields(typ: Any) -> Any:
    """Field list of a type definition, compared the way rosbags' register compares them."""
    if typ is None:
        return None
    return [(name.lower(), desc) for name, desc in typ[1]]
