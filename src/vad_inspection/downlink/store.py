"""The recorder's durable store: a ``kill -9`` at any moment loses nothing it accepted, and a
restart resumes with the same queue.

Write-ahead, then index: every change (an item accepted, items sent, evicted or re-flagged) is
appended to a log and made durable *before* the in-memory index changes and the call returns, so
whatever a caller was told has happened is on disk. Opening the store rebuilds the index by
replaying the log.

On disk, in ``root/``:

- ``seg-<n>.log``: append-only log segments, ``n`` counting up and never reused. A record is a
  16-byte header (magic ``VDL1``, kind, body length, CRC32 of kind, length and body) and a body.
  ACCEPT: the seq (u64), the length of a JSON object (u32), that object (the item's metadata and
  its current flags) and the payload bytes. SENT, EVICT and FLAG: a JSON object with ``seqs``
  and the ``window``, the ``reason`` or the ``anomalous`` flag.
- ``state.json``: the checkpoint, written (tmp, fsync, rename, fsync of the directory) before
  any segment is deleted; see below.
- ``lock``: a POSIX lock held by the process that has the store open, so a second recorder (a
  respawn racing its predecessor) fails to open instead of interleaving records. POSIX locks
  belong to a process: within one, a single Store per root is the caller's business.

Recovery tells a crash from damage. A crash can only tear the record being appended, so a record
that does not check (short, wrong magic, wrong CRC) at the end of the last segment, with no
intact record after it, is cut away and reported in :attr:`StoreStats.last_problem`; that record
was never acknowledged. A bad record anywhere else is corruption: :class:`StoreError` names the
file and offset, and nothing is skipped silently.

A segment is deleted once every item it holds is sent or evicted; one whose unsent items fill
less than half of it is compacted first (those items are copied to the end of the log, same seq,
current flags), so evicted and sent payloads really leave the disk and the files stay within
about twice the held records plus one segment. Deleting a segment also deletes the SENT, EVICT
and FLAG records it holds, which may be about items in segments that stay (an item promoted to
anomalous in a later, fully sent segment must not revert to routine after a restart). Hence the
checkpoint: the complete state (every held item's flags, the next seq, lifetime counters) and
the log position it describes. On open, records before that position only say where the
checkpoint's items lie; records after it replay as usual. A crash between checkpoint and
deletion leaves dead segments that the next open deletes.

The quota counts the payload bytes held: unsent items plus sent ones not yet dropped. Before an
item is appended, and only if it would not fit: sent items are dropped first (they are home),
then routine unsent items, oldest first. Unsent anomalous items are never evicted. When even
that cannot make room, a routine item is refused with :class:`QuotaExceeded` (nothing is evicted
for it) and an anomalous item is accepted over quota: an anomaly is what the robot is there to
find, and losing it to a full disk is worse than overrunning a soft budget. Both are reported in
:meth:`Store.stats` (``refused_items``, ``over_quota``, ``last_problem``), never silently.

The disk itself may fill before the quota does (other programs share it). ``min_free_bytes`` keeps
a reserve: a routine item that would leave less free is refused with :class:`DiskFull`, an
anomalous one may use the reserve. When a write fails for want of space (``ENOSPC``, ``EDQUOT``,
``EFBIG``) the half-written record is cut back off and :class:`DiskFull` says so: the call accepted
nothing, and everything accepted before stays readable.

``sync="always"`` fdatasyncs each record before the call returns (and fsyncs the directory when a
file is created, renamed or deleted): safe against power loss. ``sync="none"`` is for
benchmarks; its records still reach the kernel before the call returns, so a killed process
loses nothing, only a power cut can.

A seq is never reused once :meth:`Store.accept` has returned it (the seq of a torn, never
acknowledged ACCEPT is issued again). Lifetime counters (sent, evicted) survive restarts;
refusals are counted per open, as they leave nothing on disk.

Limits: the last record of the last segment failing its CRC for some other reason than a crash
(a bit flipped on disk) cannot be told from a torn write and is cut away (and reported). Opening
reads and checks every byte of the log once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import operator
import os
import re
import shutil
import struct
import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import FrameError, SetupError

PRIORITIES = ("expedited", "normal", "bulk")
"""DTN bundle classes, most urgent first."""

SYNC_MODES = ("always", "none")

MAGIC = b"VDL1"
ACCEPT, SENT, EVICT, FLAG = 1, 2, 3, 4
KINDS = {ACCEPT: "ACCEPT", SENT: "SENT", EVICT: "EVICT", FLAG: "FLAG"}
CHECKPOINT = "state.json"
LOCK = "lock"
CHECKPOINT_FORMAT = 1

_HEADER = struct.Struct("<4sB3xII")  # magic, kind, padding, body length, CRC32
_ACCEPT = struct.Struct("<QI")  # seq, length of the JSON metadata
_SEGMENT_NAME = re.compile(r"seg-(\d+)\.log")
_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


class StoreError(SetupError):
    """The store cannot be opened, read or written (a corrupt segment, a full disk, another
    process holding it); the message names the path."""


class QuotaExceeded(StoreError):
    """A routine item would only fit by evicting unsent anomalous items, which are never
    evicted; the item is refused and counted."""


class DiskFull(StoreError):
    """The disk holding the store has no room left (or less than the reserve the store keeps
    free for anomalous items): the item was not accepted, everything accepted before is intact."""


class BadItem(FrameError):
    """An item or request the caller passed cannot be stored: an unknown priority, meta that
    is not JSON, a seq that was never accepted or is no longer held."""


@dataclass(frozen=True)
class Item:
    """One accepted message, as the planner and the downlink see it (the payload is read on
    demand with :meth:`Store.payload`)."""

    seq: int  # the store's sequence number: accept order, never reused
    stamp_ns: int  # the camera frame's stamp (or the message's)
    topic: str
    typename: str  # ROS type of the payload, e.g. "sensor_msgs/msg/Image" ("" for none)
    payload_bytes: int  # size of the stored payload
    score: float  # anomaly score (normalised, or raw; the planner decides)
    anomalous: bool  # the detector flagged it (or it lies in a pre/post-event window)
    tag: str = ""  # defect tag ("" none)
    priority: str = "normal"
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False)  # JSON-able extras


@dataclass(frozen=True)
class StoreStats:
    """What the store holds and what it had to do about its quota."""

    items: int  # held: unsent, plus sent ones not yet dropped
    bytes: int  # payload bytes held (what the quota counts)
    anomalous_items: int  # held, unsent and anomalous: the items eviction never touches
    sent_items: int  # items marked sent, over the store's lifetime
    evicted_items: int  # unsent routine items evicted for the quota, over the store's lifetime
    quota_bytes: int
    over_quota: bool  # bytes > quota_bytes: only unsent anomalous items could have made room
    refused_items: int  # items refused (quota, full disk) since this Store was opened
    free_bytes: int  # free on the disk holding the store
    last_problem: str  # the latest repair, refusal or overrun ("" none)


@dataclass(frozen=True)
class _Record:
    """A record that checked, as replay needs it (an ACCEPT's payload is not kept)."""

    offset: int
    length: int  # header and body
    kind: int
    info: dict[str, Any]


@dataclass(frozen=True)
class _Checkpoint:
    """The state at log position ``cut``: records before it are summarised here."""

    next_seq: int = 0
    cut: tuple[int, int] = (-1, 0)  # (segment, offset)
    held: Mapping[int, tuple[bool, bool]] = field(default_factory=dict)  # seq: sent, anomalous
    sent_total: int = 0
    evicted_total: int = 0


@dataclass
class _Entry:
    """A held item, where its ACCEPT record lies, and whether it has gone home."""

    item: Item
    segment: int
    offset: int
    length: int
    sent: bool = False


@dataclass
class _Segment:
    """A log file and how much of it still matters (what decides deletion and compaction)."""

    number: int
    path: Path
    size: int = 0
    pending: int = 0  # unsent held items whose ACCEPT record is here
    pending_bytes: int = 0  # the bytes of those records


@dataclass
class _Pool:
    """The held seqs of one eviction class with their payload bytes, taken oldest first."""

    sizes: dict[int, int] = field(default_factory=dict)
    bytes: int = 0
    ordered: bool = True

    def add(self, seq: int, size: int) -> None:
        if self.sizes and seq < next(reversed(self.sizes)):
            self.ordered = False
        self.sizes[seq] = size
        self.bytes += size

    def discard(self, seq: int) -> None:
        self.bytes -= self.sizes.pop(seq, 0)

    def oldest(self, excess: int) -> list[int]:
        """The oldest seqs whose payloads add up to at least ``excess`` (all, if they don't)."""
        if not self.ordered:
            self.sizes = dict(sorted(self.sizes.items()))
            self.ordered = True
        taken: list[int] = []
        for seq, size in self.sizes.items():
            if excess <= 0:
                break
            taken.append(seq)
            excess -= size
        return taken


class Store:
    """The recorder's durable queue of items (see the module docstring for the guarantees).

    Opening recovers: the log is replayed, a torn tail is cut away, and seqs continue after the
    highest ever issued. Safe to call from several threads; one process at a time per ``root``.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        root: Path | str,
        quota_bytes: int,
        *,
        segment_bytes: int = 64 << 20,
        sync: str = "always",
        min_free_bytes: int = 0,
    ) -> None:
        self.root = Path(root)
        if sync not in SYNC_MODES:
            raise StoreError(f"{self.root}: unknown sync mode {sync!r}; use 'always' or 'none'")
        if quota_bytes < 0 or segment_bytes <= 0:
            raise StoreError(
                f"{self.root}: quota_bytes must be >= 0 and segment_bytes > 0, "
                f"not {quota_bytes} and {segment_bytes}"
            )
        self.quota_bytes = int(quota_bytes)
        self.segment_bytes = int(segment_bytes)
        self.sync = sync
        self.min_free_bytes = max(int(min_free_bytes), 0)
        self._mutex = threading.RLock()
        self._held: dict[int, _Entry] = {}  # seq order
        self._segments: dict[int, _Segment] = {}
        self._readers: dict[int, int] = {}  # segment -> file descriptor
        self._sent = _Pool()
        self._routine = _Pool()
        self._protected = 0  # unsent anomalous items held
        self._bytes = 0
        self._next_seq = 0
        self._sent_total = 0
        self._evicted_total = 0
        self._refused = 0
        self._problem = ""
        self._broken = ""  # why writing is no longer safe
        self._pending_record = 0  # size of the record being appended, for the messages
        self._active = -1
        self._writer = -1
        self._lock = -1
        self._closed = False
        try:
            self._open()
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------------------- public

    def accept(
        self,
        *,
        stamp_ns: int,
        topic: str,
        typename: str,
        payload: bytes,
        score: float,
        anomalous: bool,
        tag: str = "",
        priority: str = "normal",
        meta: Mapping[str, Any] | None = None,
    ) -> Item:
        """Store one item; it is durable when this returns (``sync="always"``).

        The quota is enforced first (see the module docstring): this may evict older routine or
        sent items, or raise :class:`QuotaExceeded` for a routine item that cannot fit. A routine
        item that would leave less than ``min_free_bytes`` free on the disk is refused with
        :class:`DiskFull` (an anomalous one may use that reserve), as is any item the disk has
        no room for at all; the log is left as it was before the call.
        """
        if priority not in PRIORITIES:
            raise BadItem(
                f"item on {topic}: unknown priority {priority!r}; use one of {PRIORITIES}"
            )
        data = payload if isinstance(payload, bytes) else bytes(payload)
        try:
            info = {
                "stamp_ns": int(stamp_ns),
                "topic": str(topic),
                "typename": str(typename),
                "score": float(score),
                "anomalous": bool(anomalous),
                "tag": str(tag),
                "priority": priority,
                "meta": dict(meta or {}),
                "sent": False,
            }
            text = json.dumps(info).encode()
        except (TypeError, ValueError) as exc:
            raise BadItem(
                f"item on {topic}: not storable (meta must be a JSON object): {exc}"
            ) from exc
        with self._mutex:
            self._check_writable()
            self._check_disk(len(data), bool(anomalous))
            self._make_room(len(data), bool(anomalous))
            seq = self._next_seq
            number, offset, length = self._append(ACCEPT, _accept_body(seq, text, data))
            self._next_seq = seq + 1
            item = _item(seq, json.loads(text), len(data))  # meta exactly as a reopen reads it
            self._add(_Entry(item, number, offset, length))
            if self._bytes > self.quota_bytes:
                self._problem = (
                    f"accepted anomalous item {seq} ({len(data)} B) over the quota: "
                    f"{self._bytes} B held against {self.quota_bytes} B, the excess all unsent "
                    "anomalous items (never evicted)"
                )
            self._reclaim_after_write()
            return item

    def payload(self, seq: int) -> bytes:
        """The stored payload of held item ``seq``, checked against its CRC."""
        with self._mutex:
            self._check_open()
            return self._read_payload(self._entry(seq))

    def pending(self) -> list[Item]:
        """Held items not yet sent, in accept order."""
        with self._mutex:
            return [entry.item for entry in self._held.values() if not entry.sent]

    def get(self, seq: int) -> Item:
        """Held item ``seq`` (sent or not); :class:`BadItem` if it is not held."""
        with self._mutex:
            return self._entry(seq).item

    def mark_sent(self, seqs: Iterable[int], window: str = "") -> None:
        """Record that these items reached the ground (in downlink ``window``); durable.

        Items no longer held (evicted meanwhile) and items already sent are skipped; a seq never
        issued raises :class:`BadItem`.
        """
        with self._mutex:
            self._check_writable()
            targets = [s for s in self._issued(seqs) if s in self._held and not self._held[s].sent]
            if not targets:
                return
            self._append(SENT, _json({"seqs": targets, "window": str(window)}))
            for seq in targets:
                self._change(seq, sent=True)
            self._sent_total += len(targets)
            self._reclaim_after_write()

    def set_anomalous(self, seqs: Iterable[int], anomalous: bool = True) -> None:
        """Flag (or unflag) held items as anomalous; durable.

        A post-event window promotes routine frames accepted before the detector fired, which
        protects them from eviction. Items no longer held are skipped (an evicted frame cannot be
        brought back); a seq never issued raises :class:`BadItem`.
        """
        flag = bool(anomalous)
        with self._mutex:
            self._check_writable()
            targets = [
                s
                for s in self._issued(seqs)
                if s in self._held and self._held[s].item.anomalous != flag
            ]
            if not targets:
                return
            self._append(FLAG, _json({"seqs": targets, "anomalous": flag}))
            for seq in targets:
                self._change(seq, anomalous=flag)

    def stats(self) -> StoreStats:
        """Counts for diagnostics: what is held, what the quota cost, the latest problem."""
        with self._mutex:
            return StoreStats(
                items=len(self._held),
                bytes=self._bytes,
                anomalous_items=self._protected,
                sent_items=self._sent_total,
                evicted_items=self._evicted_total,
                quota_bytes=self.quota_bytes,
                over_quota=self._bytes > self.quota_bytes,
                refused_items=self._refused,
                free_bytes=_free_bytes(self.root),
                last_problem=self._problem,
            )

    def close(self) -> None:
        """Release the files and the lock (everything is durable already); idempotent.

        :meth:`pending`, :meth:`get` and :meth:`stats` keep answering from memory afterwards;
        whatever reads or writes the files raises :class:`StoreError`.
        """
        with self._mutex:
            self._closed = True
            self._release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------------- opening

    def _open(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot create the store: {exc}") from exc
        self._lock = _lock(self.root / LOCK)
        checkpoint = _load_checkpoint(self.root / CHECKPOINT)
        numbers = _segment_numbers(self.root)
        self._recover(checkpoint, numbers)
        if numbers:
            self._active = numbers[-1]
            self._writer = _open_append(self._segments[self._active].path, create=False)
        else:
            self._roll()
        self._reclaim()

    def _recover(self, checkpoint: _Checkpoint, numbers: list[int]) -> None:
        """Rebuild the index from the checkpoint and the log (cutting a torn tail)."""
        if checkpoint.cut[0] >= 0 and checkpoint.cut[0] not in numbers:
            raise StoreError(
                f"{self._path(checkpoint.cut[0])}: missing, but {self.root / CHECKPOINT} "
                "describes the log up to it"
            )
        found: set[int] = set()
        highest = -1
        for number in numbers:
            path = self._path(number)
            records, end, problem = _scan(path)
            if problem:
                self._repair(number, end, problem, number == numbers[-1], checkpoint.cut)
            for record in records:
                if record.kind == ACCEPT:
                    highest = max(highest, record.info["seq"])
                self._replay(number, record, checkpoint, found)
            self._segments[number] = _Segment(number, path, size=end)
        lost = sorted(set(checkpoint.held) - found)
        if lost:
            raise StoreError(
                f"{self.root}: {len(lost)} items listed in {CHECKPOINT} have no record in any "
                f"segment (first seq {lost[0]}): a segment file was removed or replaced"
            )
        entries = sorted(self._held.values(), key=lambda entry: entry.item.seq)
        self._held = {}
        for entry in entries:
            self._add(entry)
        self._next_seq = max(checkpoint.next_seq, highest + 1)
        self._sent_total += checkpoint.sent_total
        self._evicted_total += checkpoint.evicted_total

    def _repair(
        self, number: int, end: int, problem: str, last: bool, cut: tuple[int, int]
    ) -> None:
        """Cut a torn tail away, or refuse a log that is damaged elsewhere."""
        path = self._path(number)
        if not last:
            raise StoreError(
                f"{path}: corrupt record at offset {end} ({problem}) in a segment that is not "
                "the last; a crash only tears the end of the last one"
            )
        if _intact_record_after(path, end):
            raise StoreError(
                f"{path}: corrupt record at offset {end} ({problem}) with intact records after "
                "it; a crash only tears the end of the log"
            )
        if (number, end) < cut:
            raise StoreError(
                f"{path}: intact only up to offset {end}, but {CHECKPOINT} describes it up to "
                f"{cut[1]}"
            )
        try:
            size = path.stat().st_size
            os.truncate(path, end)
            self._fsync_path(path)
        except OSError as exc:
            raise StoreError(
                f"{path}: cannot cut away a torn write at offset {end}: {exc}"
            ) from exc
        self._problem = (
            f"repaired a torn write: cut {size - end} B at offset {end} of {path} ({problem})"
        )

    def _replay(
        self, number: int, record: _Record, checkpoint: _Checkpoint, found: set[int]
    ) -> None:
        """Apply one record; before the checkpoint's cut only ACCEPTs of held items count."""
        info = record.info
        if (number, record.offset) < checkpoint.cut:
            if record.kind == ACCEPT and info["seq"] in checkpoint.held:
                found.add(info["seq"])
                sent, anomalous = checkpoint.held[info["seq"]]
                item = _item(info["seq"], {**info, "anomalous": anomalous}, info["payload_bytes"])
                self._held[item.seq] = _Entry(item, number, record.offset, record.length, sent)
            return
        if record.kind == ACCEPT:
            item = _item(info["seq"], info, info["payload_bytes"])
            self._held[item.seq] = _Entry(
                item, number, record.offset, record.length, bool(info["sent"])
            )
            return
        for seq in info["seqs"]:
            entry = self._held.get(seq)
            if entry is None:
                continue
            if record.kind == SENT and not entry.sent:
                entry.sent = True
                self._sent_total += 1
            elif record.kind == EVICT:
                del self._held[seq]
                self._evicted_total += int(not entry.sent)
            elif record.kind == FLAG:
                entry.item = replace(entry.item, anomalous=bool(info["anomalous"]))

    # ---------------------------------------------------------------------- the index

    def _add(self, entry: _Entry) -> None:
        self._held[entry.item.seq] = entry
        self._count(entry, 1)

    def _remove(self, seq: int) -> _Entry:
        entry = self._held.pop(seq)
        self._count(entry, -1)
        return entry

    def _change(self, seq: int, **changes: Any) -> None:
        """Change a held entry in place (the index keeps its seq order)."""
        entry = self._held[seq]
        self._count(entry, -1)
        if "anomalous" in changes:
            entry.item = replace(entry.item, anomalous=changes.pop("anomalous"))
        for name, value in changes.items():
            setattr(entry, name, value)
        self._count(entry, 1)

    def _count(self, entry: _Entry, sign: int) -> None:
        """Count a held entry in (or out of) the totals, its eviction pool and its segment."""
        seq, size = entry.item.seq, entry.item.payload_bytes
        self._bytes += sign * size
        if entry.sent:
            pools = [self._sent]
        else:
            segment = self._segments[entry.segment]
            segment.pending += sign
            segment.pending_bytes += sign * entry.length
            pools = [] if entry.item.anomalous else [self._routine]
            self._protected += sign * entry.item.anomalous
        for pool in pools:
            if sign > 0:
                pool.add(seq, size)
            else:
                pool.discard(seq)

    def _entry(self, seq: int) -> _Entry:
        entry = self._held.get(seq)
        if entry is None:
            issued = 0 <= seq < self._next_seq
            why = "evicted, or dropped after it was sent" if issued else "never accepted"
            raise BadItem(f"{self.root}: item {seq} is not held ({why})")
        return entry

    def _issued(self, seqs: Iterable[int]) -> list[int]:
        """The distinct seqs asked for, in order; every one must have been issued."""
        wanted = list(dict.fromkeys(operator.index(seq) for seq in seqs))
        for seq in wanted:
            if not 0 <= seq < self._next_seq:
                raise BadItem(f"{self.root}: item {seq} was never accepted")
        return wanted

    # -------------------------------------------------------------------------- quota

    def _make_room(self, size: int, anomalous: bool) -> None:
        """Evict sent, then routine items, oldest first, until ``size`` more bytes fit."""
        excess = self._bytes + size - self.quota_bytes
        if excess <= 0:
            return
        droppable = self._sent.bytes + self._routine.bytes
        if droppable < excess and not anomalous:
            self._refused += 1
            self._problem = (
                f"refused a routine item of {size} B: {self._bytes} B held against a quota of "
                f"{self.quota_bytes} B and only {droppable} B of it sent or routine (unsent "
                "anomalous items are never evicted)"
            )
            raise QuotaExceeded(f"{self.root}: {self._problem}")
        sent = self._sent.oldest(excess)
        excess -= sum(self._sent.sizes[seq] for seq in sent)
        routine = self._routine.oldest(excess)
        if sent:
            self._evict(sent, "sent")
        if routine:
            self._evict(routine, "quota")

    def _check_disk(self, size: int, anomalous: bool) -> None:
        """Refuse a routine item that would eat into the reserve kept free on the disk."""
        if not self.min_free_bytes:
            return
        free = _free_bytes(self.root)
        if free - size >= self.min_free_bytes:
            return
        if anomalous:
            self._problem = (
                f"accepted anomalous item of {size} B into the disk's reserve: {free} B free "
                f"against a reserve of {self.min_free_bytes} B"
            )
            return
        self._refused += 1
        self._problem = (
            f"refused a routine item of {size} B: the disk is nearly full ({free} B free, "
            f"{self.min_free_bytes} B kept in reserve for anomalous items)"
        )
        raise DiskFull(f"{self.root}: {self._problem}")

    def _evict(self, seqs: list[int], reason: str) -> None:
        self._append(EVICT, _json({"seqs": seqs, "reason": reason}))
        for seq in seqs:
            entry = self._remove(seq)
            self._evicted_total += int(not entry.sent)

    # ------------------------------------------------------------- deleting segments

    def _reclaim_after_write(self) -> None:
        """Reclaim space once a change is durable: a failure here must not make the caller
        believe the change failed (a retried accept would store the item twice), so it is
        reported in ``last_problem`` and retried after the next write."""
        try:
            self._reclaim()
        except StoreError as exc:
            self._problem = f"could not delete or compact segments (retried later): {exc}"

    def _reclaim(self) -> None:
        """Delete segments without unsent items, compacting sparse ones first."""
        dead, sparse = [], []
        for segment in self._segments.values():
            if segment.number == self._active:
                continue
            if segment.pending == 0:
                dead.append(segment.number)
            elif 2 * segment.pending_bytes < segment.size:
                sparse.append(segment.number)
        if not dead and not sparse:
            return
        for number in sparse:
            self._copy_forward(number)
        doomed = set(dead) | set(sparse)
        for seq in [seq for seq, entry in self._held.items() if entry.segment in doomed]:
            self._remove(seq)  # sent items, dropped with their segment
        self._write_checkpoint()
        for number in sorted(doomed):
            self._delete_segment(number)
        self._fsync_dir()

    def _copy_forward(self, number: int) -> None:
        """Append the unsent items of segment ``number`` again, with their current flags."""
        for seq, entry in list(self._held.items()):
            if entry.segment != number or entry.sent:
                continue
            data = self._read_payload(entry)
            text = _item_json(entry.item).encode()
            new_number, offset, length = self._append(ACCEPT, _accept_body(seq, text, data))
            self._change(seq, segment=new_number, offset=offset, length=length)

    def _write_checkpoint(self) -> None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "next_seq": self._next_seq,
            "cut": [self._active, self._segments[self._active].size],
            "sent_total": self._sent_total,
            "evicted_total": self._evicted_total,
            "held": [[seq, e.sent, e.item.anomalous] for seq, e in self._held.items()],
        }
        path = self.root / CHECKPOINT
        tmp = path.with_name(f"{CHECKPOINT}.tmp")
        try:
            with tmp.open("w") as stream:
                json.dump(state, stream, separators=(",", ":"))
                stream.flush()
                if self.sync == "always":
                    os.fsync(stream.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise StoreError(f"{path}: cannot write the checkpoint: {exc}") from exc
        self._fsync_dir()

    def _delete_segment(self, number: int) -> None:
        segment = self._segments.pop(number)
        reader = self._readers.pop(number, -1)
        if reader >= 0:
            os.close(reader)
        try:
            segment.path.unlink()
        except OSError as exc:
            raise StoreError(f"{segment.path}: cannot delete: {exc}") from exc

    # ------------------------------------------------------------------ reading, writing

    def _append(self, kind: int, body: bytes) -> tuple[int, int, int]:
        """Append a record durably; return its segment, offset and length."""
        record = _HEADER.pack(MAGIC, kind, len(body), _crc(kind, body)) + body
        segment = self._segments[self._active]
        if segment.size and segment.size + len(record) > self.segment_bytes:
            self._roll()
            segment = self._segments[self._active]
        offset = segment.size
        self._pending_record = len(record)
        try:
            _write_all(self._writer, record)
            if self.sync == "always":
                _datasync(self._writer)
        except OSError as exc:
            self._undo_append(segment, offset, exc)
        segment.size += len(record)
        return segment.number, offset, len(record)

    def _undo_append(self, segment: _Segment, offset: int, exc: OSError) -> None:
        """Cut a failed append back so the next one does not follow a torn record."""
        try:
            os.ftruncate(self._writer, offset)
        except OSError as again:
            self._broken = (
                f"{segment.path}: an append failed ({exc}) and could not be undone ({again}); "
                "reopen the store to recover"
            )
            raise StoreError(self._broken) from exc
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            self._refused += 1
            self._problem = (
                f"the disk is full ({_free_bytes(self.root)} B free): a record of "
                f"{self._pending_record} B was not written, nothing accepted before is lost"
            )
            raise DiskFull(f"{segment.path}: {self._problem}") from exc
        raise StoreError(f"{segment.path}: cannot append: {exc}") from exc

    def _roll(self) -> None:
        """Start the next segment (the directory entry is made durable before use)."""
        number = max(self._segments, default=-1) + 1
        path = self._path(number)
        fd = _open_append(path, create=True)
        self._fsync_dir()
        if self._writer >= 0:
            os.close(self._writer)
        self._writer, self._active = fd, number
        self._segments[number] = _Segment(number, path)

    def _read_payload(self, entry: _Entry) -> bytes:
        segment = self._segments[entry.segment]
        reader = self._readers.get(entry.segment, -1)
        try:
            if reader < 0:
                reader = self._readers[entry.segment] = os.open(
                    segment.path, os.O_RDONLY | os.O_CLOEXEC
                )
            data = os.pread(reader, entry.length, entry.offset)
        except OSError as exc:
            raise StoreError(f"{segment.path}: cannot read item {entry.item.seq}: {exc}") from exc
        if not _is_accept_of(data, entry):
            raise StoreError(
                f"{segment.path}: the record of item {entry.item.seq} at offset {entry.offset} "
                "no longer checks (changed on disk since the store was opened)"
            )
        _, text_length = _ACCEPT.unpack_from(data, _HEADER.size)
        return data[_HEADER.size + _ACCEPT.size + text_length :]

    def _path(self, number: int) -> Path:
        return self.root / f"seg-{number}.log"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.root}: the store is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._broken:
            raise StoreError(self._broken)

    def _fsync_dir(self) -> None:
        if self.sync == "always":
            self._fsync_path(self.root, directory=True)

    def _fsync_path(self, path: Path, *, directory: bool = False) -> None:
        if self.sync != "always":
            return
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _release(self) -> None:
        for fd in [self._writer, self._lock, *self._readers.values()]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._writer = self._lock = -1
        self._readers = {}


# --------------------------------------------------------------------------- records


def _free_bytes(root: Path) -> int:
    try:
        return shutil.disk_usage(root).free
    except OSError:
        return -1


def _crc(kind: int, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(struct.pack("<BI", kind, len(body))))


def _is_accept_of(data: bytes, entry: _Entry) -> bool:
    """Whether ``data`` is the whole, intact ACCEPT record of ``entry``'s item."""
    if len(data) != entry.length or entry.length < _HEADER.size + _ACCEPT.size:
        return False
    magic, kind, length, crc = _HEADER.unpack_from(data)
    body = data[_HEADER.size :]
    seq, _ = _ACCEPT.unpack_from(body)
    return (magic, kind, length, seq) == (MAGIC, ACCEPT, len(body), entry.item.seq) and (
        crc == _crc(kind, body)
    )


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _accept_body(seq: int, text: bytes, payload: bytes) -> bytes:
    return _ACCEPT.pack(seq, len(text)) + text + payload


def _item_json(item: Item) -> str:
    """An unsent item's metadata as an ACCEPT record stores it (the payload follows)."""
    return json.dumps(
        {
            "stamp_ns": item.stamp_ns,
            "topic": item.topic,
            "typename": item.typename,
            "score": item.score,
            "anomalous": item.anomalous,
            "tag": item.tag,
            "priority": item.priority,
            "meta": dict(item.meta),
            "sent": False,
        }
    )


def _item(seq: int, info: Mapping[str, Any], payload_bytes: int) -> Item:
    return Item(
        seq=seq,
        stamp_ns=info["stamp_ns"],
        topic=info["topic"],
        typename=info["typename"],
        payload_bytes=payload_bytes,
        score=info["score"],
        anomalous=info["anomalous"],
        tag=info["tag"],
        priority=info["priority"],
        meta=info["meta"],
    )


def _scan(path: Path) -> tuple[list[_Record], int, str]:
    """The records of a segment that check, in order, the offset where they end, and why
    reading stopped there ("" at the end of the file)."""
    records: list[_Record] = []
    try:
        with path.open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            offset = 0
            while offset < size:
                record, problem = _read_record(stream, path, offset, size)
                if record is None:
                    return records, offset, problem
                records.append(record)
                offset += record.length
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc}") from exc
    return records, offset, ""


def _read_record(
    stream: BinaryIO, path: Path, offset: int, size: int
) -> tuple[_Record | None, str]:
    """The record at ``offset`` (the stream is there), or None and what is wrong with it."""
    if size - offset < _HEADER.size:
        return None, f"{size - offset} B left, too short for a header"
    magic, kind, length, crc = _HEADER.unpack(stream.read(_HEADER.size))
    if magic != MAGIC:
        return None, f"bad magic {magic!r}"
    if kind not in KINDS:
        return None, f"unknown record kind {kind}"
    if length > size - offset - _HEADER.size:
        return None, f"body of {length} B runs past the end of the file"
    body = stream.read(length)
    if crc != _crc(kind, body):
        return None, f"{KINDS[kind]} record fails its CRC"
    try:
        info = _decode(kind, body)
    except (KeyError, TypeError, ValueError, struct.error) as exc:  # whole, yet unreadable
        raise StoreError(
            f"{path}: undecodable {KINDS[kind]} record at offset {offset}: {exc}"
        ) from exc
    return _Record(offset, _HEADER.size + length, kind, info), ""


_FACT_FIELDS = {SENT: "window", EVICT: "reason", FLAG: "anomalous"}


def _decode(kind: int, body: bytes) -> dict[str, Any]:
    """A record body's fields (KeyError, ValueError... if one is missing or malformed)."""
    if kind != ACCEPT:
        info = json.loads(body)
        if not isinstance(info["seqs"], list) or _FACT_FIELDS[kind] not in info:
            raise ValueError(f"not a {KINDS[kind]} record's fields: {sorted(info)}")
        return info
    seq, text_length = _ACCEPT.unpack_from(body)
    start = _ACCEPT.size
    info = json.loads(body[start : start + text_length])
    _item(seq, info, 0)  # every field is there
    bool(info["sent"])
    return {**info, "seq": seq, "payload_bytes": len(body) - start - text_length}


def _intact_record_after(path: Path, offset: int) -> bool:
    """Whether any record that checks starts after ``offset`` (which makes damage there
    corruption rather than a torn tail)."""
    data = path.read_bytes()[offset:]
    start = data.find(MAGIC, 1)
    while start >= 0:
        if len(data) - start >= _HEADER.size:
            _, kind, length, crc = _HEADER.unpack_from(data, start)
            body = data[start + _HEADER.size : start + _HEADER.size + length]
            if kind in KINDS and len(body) == length and crc == _crc(kind, body):
                return True
        start = data.find(MAGIC, start + 1)
    return False


# ----------------------------------------------------------------------------- files


def _segment_numbers(root: Path) -> list[int]:
    try:
        names = os.listdir(root)
    except OSError as exc:
        raise StoreError(f"{root}: cannot list: {exc}") from exc
    matches = (_SEGMENT_NAME.fullmatch(name) for name in names)
    return sorted(int(match.group(1)) for match in matches if match)


def _load_checkpoint(path: Path) -> _Checkpoint:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return _Checkpoint()
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the checkpoint: {exc}") from exc
    try:
        state = json.loads(text)
        if state["format"] != CHECKPOINT_FORMAT:
            raise ValueError(f"format {state['format']}, expected {CHECKPOINT_FORMAT}")
        return _Checkpoint(
            next_seq=int(state["next_seq"]),
            cut=(int(state["cut"][0]), int(state["cut"][1])),
            held={int(seq): (bool(sent), bool(flag)) for seq, sent, flag in state["held"]},
            sent_total=int(state["sent_total"]),
            evicted_total=int(state["evicted_total"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable checkpoint: {exc}") from exc


def _lock(path: Path) -> int:
    """Hold a POSIX lock on ``path`` for this process (released when it dies, even by -9)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"{path}: cannot open the lock file: {exc}") from exc
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StoreError(f"{path.parent}: in use by another process ({exc.strerror})") from exc
    return fd


def _open_append(path: Path, *, create: bool) -> int:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
    try:
        return os.open(path, flags, 0o644)
    except OSError as exc:
        raise StoreError(f"{path}: cannot open for appending: {exc}") from exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
