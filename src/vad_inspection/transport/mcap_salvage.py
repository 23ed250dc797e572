"""The readable head of an MCAP file cut off before its summary (a recording that crashed).

rosbags refuses such a file for its missing end magic; the ``mcap`` package's stream reader needs
no index and reads records front to back, so the messages before the cut can still be played.
Kept apart from :mod:`.bag`, which only decides when to fall back to it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag2,
    MessageDefinition,
    MessageDefinitionFormat,
    Qos,
)
from rosbags.rosbag2.metadata import parse_qos

MCAP_MAGIC = b"\x89MCAP0\r\n"


def is_cut_off_mcap(path: Path) -> bool:
    """An MCAP file's head without its tail: starts with the magic, does not end with it."""
    try:
        with path.open("rb") as stream:
            head = stream.read(len(MCAP_MAGIC))
            size = stream.seek(0, 2)
            stream.seek(max(size - len(MCAP_MAGIC), 0))
            tail = stream.read()
    except OSError:
        return False
    return head == MCAP_MAGIC and tail != MCAP_MAGIC


class SalvagedMcap:
    """The readable head of a cut-off MCAP file, with the subset of rosbags' ``Reader`` that
    :class:`BagReader` uses.

    A file without summary and footer has no index, and rosbags refuses it for the missing end
    magic; the ``mcap`` package's stream reader needs neither and reads records front to back. A
    scan on opening learns schemas, channels, counts and the time range of every complete message
    before the first record that cannot be read (torn, or failing its chunk CRC); iteration
    yields exactly those, chunk by chunk (each chunk's messages in time order, as rosbags does),
    and ends quietly at the cut, which the reader's warning has already reported.
    """

    ros_distro = None  # rosbag2's metadata record sits in the summary: gone with the tail

    def __init__(self, path: Path) -> None:
        import mcap.stream_reader  # noqa: F401  (ImportError: the caller explains)

        self.path = path
        self.size = path.stat().st_size
        self.cut = ""  # why reading stopped
        self.intact = 0  # bytes up to the end of the last whole record
        self.complete = False
        self._schemas: dict[int, Any] = {}
        self._channels: dict[int, Any] = {}
        counts: dict[int, int] = {}
        first, last = 2**63 - 1, 0
        for channel_id, log_time, _ in self._records():
            counts[channel_id] = counts.get(channel_id, 0) + 1
            first, last = min(first, log_time), max(last, log_time)
        self.message_count = sum(counts.values())
        self.start_time = first if self.message_count else 2**63 - 1
        self.end_time = last + 1 if self.message_count else 0
        self.skipped_channels: dict[str, str] = {}
        self.connections: list[Connection] = []
        for channel in self._channels.values():
            if channel.message_encoding != "cdr":
                self.skipped_channels[channel.topic] = f"{channel.message_encoding} encoding"
                continue
            schema = self._schemas.get(channel.schema_id)
            self.connections.append(
                Connection(
                    id=channel.id,
                    topic=channel.topic,
                    msgtype=schema.name if schema is not None else "__schemaless__",
                    msgdef=_schema_msgdef(schema),
                    digest="",
                    msgcount=counts.get(channel.id, 0),
                    ext=ConnectionExtRosbag2("cdr", _channel_qos(channel.metadata)),
                    owner=self,
                )
            )
        self.is_open = True

    def report(self) -> str:
        """The warning for :attr:`BagReader.warnings`."""
        skipped = "".join(
            f"; {topic} not read ({why}, not CDR)" for topic, why in self.skipped_channels.items()
        )
        return (
            f"{self.path}: truncated MCAP (no summary and footer: a recording cut off?); its "
            f"first {self.intact} of {self.size} bytes hold {self.message_count} complete "
            f"messages up to {self.end_time - 1} ns, which are read; the rest is lost "
            f"({self.cut}){skipped}; `mcap recover {self.path} -o recovered.mcap` rebuilds an "
            "indexed file"
        )

    def close(self) -> None:
        self.is_open = False

    def messages(
        self,
        connections: Iterable[Connection],
        start: int | None = None,
        stop: int | None = None,
    ) -> Iterator[tuple[Connection, int, bytes]]:
        """Messages of ``connections`` with ``start <= t < stop``, in file order by chunk."""
        wanted = {c.id: c for c in connections}
        low = -1 if start is None else start
        high = 2**63 if stop is None else stop
        for channel_id, log_time, data in self._records():
            if channel_id in wanted and low <= log_time < high:
                yield wanted[channel_id], log_time, data

    def _records(self) -> Iterator[tuple[int, int, bytes]]:
        """(channel id, log time, data) of each complete message up to the cut, noting schemas
        and channels on the way and the reason reading stopped in :attr:`cut`."""
        from mcap.exceptions import EndOfFile, RecordLengthLimitExceeded
        from mcap.records import Channel, Chunk, Footer, Message, Schema
        from mcap.stream_reader import StreamReader, breakup_chunk

        def note(record: Any) -> None:
            if isinstance(record, Schema):
                self._schemas.setdefault(record.id, record)
            elif isinstance(record, Channel):
                self._channels.setdefault(record.id, record)

        with self.path.open("rb") as stream:
            reader = StreamReader(stream, emit_chunks=True, record_size_limit=self.size)
            try:
                for record in reader.records:
                    if isinstance(record, Chunk):
                        if not record.compression and len(record.data) != record.uncompressed_size:
                            raise ValueError("chunk shorter than it says")
                        inner = breakup_chunk(record, validate_crc=True)
                        for item in inner:
                            note(item)
                        chunk = sorted(
                            (m for m in inner if isinstance(m, Message)), key=lambda m: m.log_time
                        )
                        for m in chunk:
                            yield m.channel_id, m.log_time, m.data
                    elif isinstance(record, Message):
                        yield record.channel_id, record.log_time, record.data
                    else:
                        note(record)
                        if isinstance(record, Footer):
                            self.complete = True
                    self.intact = stream.tell()
            except (EndOfFile, RecordLengthLimitExceeded, struct.error):  # longer than the file
                self.cut = "the file ends inside a record"
            except Exception as exc:  # unreadable from here on: the cut as well
                self.cut = f"unreadable from there: {type(exc).__name__}: {exc}"


def _schema_msgdef(schema: Any) -> MessageDefinition:
    formats = {
        "ros2msg": MessageDefinitionFormat.MSG,
        "ros2idl": MessageDefinitionFormat.IDL,
        "omgidl": MessageDefinitionFormat.IDL,
    }
    if schema is None or schema.encoding not in formats:
        return MessageDefinition(MessageDefinitionFormat.NONE, "")
    return MessageDefinition(formats[schema.encoding], schema.data.decode(errors="replace"))


def _channel_qos(metadata: dict[str, str]) -> list[Qos]:
    """The offered QoS rosbag2 keeps in an MCAP channel's metadata; [] if absent or garbled."""
    try:
        return parse_qos(metadata.get("offered_qos_profiles", ""))
    except Exception:
        return []
