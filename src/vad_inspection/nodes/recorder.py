"""The recorder node: keep what the camera saw safely, send the most valuable first.

Inputs: the camera (``image``, kept as the recorded CDR bytes: nothing is re-encoded to store
it), the detector's ``~/score`` and ``~/detections`` (tag and boxes per frame). A frame waits in
a short ring buffer until its score arrives, then:

- flagged (normalised score >= 0.5), or within ``post_event_s`` after a flagged frame: accepted
  as anomalous, together with the frames of the last ``pre_event_s`` still in the buffer (the
  context before the event, as rosbag2 users ask for);
- otherwise routine: accepted once per ``routine_period_s`` (throttled), the rest counted.

Accepted frames go to the durable :class:`~vad_inspection.downlink.store.Store` (write-ahead log:
a ``kill -9`` loses nothing accepted, a restart resumes the same queue) under ``quota_mb``. At
each downlink window (``window_schedule``: a list of ``START=BYTES`` contacts, see
:mod:`~vad_inspection.downlink.schedule`; or periodic, ``window_period_s`` apart, ``window_bytes``
each, the first ``first_window_s`` after activation) the
:class:`~vad_inspection.downlink.planner.Planner` picks frames and forms by value per byte, and
what it picked is written into one rosbag2 MCAP bag per window under ``downlink_dir`` (full frames
on their own topic, JPEGs as CompressedImage on ``<topic>/compressed``, defect crops on
``<topic>/crops``, metadata as DiagnosticArray on ``/downlink/meta``), then marked sent;
``~/downlink`` (std_srvs/Trigger) opens a window of ``window_bytes`` now. A frame
sent as metadata only stays queued (the ground may ask for it; the planner will not send its
metadata twice). What the planner has sent (tags, signatures) is kept beside the store, so a
restarted recorder still counts a defect once. ``~/status`` (DiagnosticArray, reliable, latched)
says what is queued, when the next window opens and what the last one sent; ``/diagnostics`` too.

Bad input is said, and loses nothing accepted: a schedule in the past fails ``configure`` naming
the entries; a frame larger than a window in every form is reported at that window and stays
queued; a full disk (or one down to ``min_free_mb``) refuses new routine frames with an error in
the status, and the frames already stored stay intact.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..downlink.planner import (
    META,
    Candidate,
    Choice,
    Planner,
    Window,
    describe,
    oversized,
    padded_box,
)
from ..downlink.schedule import Contact, ScheduleError, parse_schedule, periodic
from ..downlink.store import DiskFull, QuotaExceeded, Store, StoreError
from ..errors import FrameError, VadError
from ..msgs import deserialize
from ..msgs.anomaly import RAW_CLASS, diagnostic_array, status
from ..msgs.cdr import header_stamp_ns
from ..msgs.defaults import new_message
from ..msgs.image import Frame, frame_to_compressed, msg_to_frame
from ..msgs.time import stamp_to_ns
from ..transport import DEFAULT, LATCHED, SENSOR_DATA, Bus
from ..transport.bag import BagError, BagWriter
from .base import LifecycleNode, declare_parameters, parameter

NS = 1_000_000_000
IMAGE = "sensor_msgs/msg/Image"


@dataclass(frozen=True)
class RecorderParams:
    store_dir: str = parameter("recorder_store", "folder of the durable store")
    quota_mb: float = parameter(2048.0, "disk quota of the store (MB)")
    min_free_mb: float = parameter(100.0, "disk kept free (MB); only anomalous frames use it")
    sync: str = parameter("always", "fsync each accepted item", choices=("always", "none"))
    pre_event_s: float = parameter(2.0, "keep this much before an anomalous frame (s)")
    post_event_s: float = parameter(2.0, "and this much after it (s)")
    routine_period_s: float = parameter(5.0, "keep one routine frame per this period (s); 0 all")
    score_topic: str = parameter("/detector/score", "the detector's scores")
    detections_topic: str = parameter("/detector/detections", "the detector's 2-D defects")
    window_period_s: float = parameter(60.0, "time between downlink windows (s); 0: none")
    window_bytes: int = parameter(1_000_000, "bytes each downlink window carries")
    first_window_s: float = parameter(60.0, "first window this long after activation (s)")
    window_schedule: list[str] = parameter([""], "windows START=BYTES; set: replaces the period")
    downlink_dir: str = parameter("downlink", "where each window's MCAP bag is written")
    status_period_s: float = parameter(1.0, "period of ~/status and /diagnostics (s)")
    autostart: bool = parameter(False, "configure and activate at start-up")


@dataclass
class _Held:
    stamp_ns: int
    data: bytes
    received: float  # monotonic s
    scored: bool = False  # throttled frames stay here as context for a later event


@dataclass
class _Job:
    """A decided frame on its way into the store (the worker's queue)."""

    held: _Held
    raw: float
    normalised: float
    anomalous: bool
    why: str
    decided: float  # monotonic s


#: how long the worker waits for a flagged frame's detections (they may follow its score)
DETECTIONS_WAIT_S = 0.5
#: how long a frame waits in the ring for its score, beyond the pre-event window
SCORE_WAIT_S = 2.0
#: image messages the subscription may hold while the node is busy (best effort keeps the last N)
IMAGE_DEPTH = 30


class RecorderNode(LifecycleNode):
    """See the module docstring. Construct with a :class:`~vad_inspection.transport.Bus`."""

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.params = declare_parameters(bus, RecorderParams)
        bus.parameters.check_unused()
        self.counts: Counter[str] = Counter()
        self.store: Store | None = None
        self.planner = Planner()
        self.last_window: dict[str, Any] = {}
        self.windows_written: list[Path] = []
        self._ring: deque[_Held] = deque()
        self._early: dict[int, tuple[tuple[float, float], float]] = {}  # stamp -> score, when
        self._boxes: dict[int, tuple[str, list[tuple[int, int, int, int]]]] = {}
        self._event_until = -1  # stamp (ns) where the post-event window ends
        self._last_routine = -(1 << 62)
        self._contacts: list[Contact] = []  # windows still to come, wall clock
        self._window_index = 0
        self._disk_full = ""  # the latest full-disk refusal, until a frame is accepted again
        self._lock = threading.Lock()
        self._window_lock = threading.Lock()
        self._subs: list[Any] = []
        # Storing (decode, forms, write, fsync) and downlink windows run on a worker thread, so
        # the thread taking messages only decides and queues: at 30 Hz a window or the context
        # frames of an event take longer than the subscriptions' buffers last.
        self._jobs: deque[_Job] = deque()
        self._windows: deque[tuple[int, threading.Event | None]] = deque()  # bytes, done
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Event()
        self._idle.set()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._status = bus.create_publisher("~/status", "diagnostic_msgs/msg/DiagnosticArray",
                                            LATCHED)  # fmt: skip
        self._diag = bus.create_publisher("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray",
                                          DEFAULT)  # fmt: skip
        self._timer = bus.create_timer(self.params.status_period_s, self._tick)
        self._service = bus.create_service("~/downlink", "std_srvs/srv/Trigger", self._on_downlink)
        if self.params.autostart and self.trigger("configure"):
            self.trigger("activate")

    # -- lifecycle -------------------------------------------------------------------------------
    def on_configure(self) -> bool:
        p = self.params
        self._contacts = self._schedule()  # refused here, before anything is opened
        try:
            self.store = Store(p.store_dir, round(p.quota_mb * 1e6), sync=p.sync,
                               min_free_bytes=round(p.min_free_mb * 1e6))  # fmt: skip
        except StoreError as error:
            raise VadError(str(error)) from None
        self._set_aside_cut_windows()
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="recorder-store", daemon=True)
        self._worker.start()
        self.planner = Planner()
        memory = self._memory_path()
        if memory.is_file():
            try:
                self.planner.remember(json.loads(memory.read_text()))
            except (OSError, ValueError) as error:
                self.log.warning("%s unreadable (%s): defects sent before the restart may be "
                                 "sent again", memory, error)  # fmt: skip
        stats = self.store.stats()
        self.log.info("store %s: %d items (%d anomalous) queued from before", p.store_dir,
                      stats.items - stats.sent_items, stats.anomalous_items)  # fmt: skip
        return True

    def on_activate(self) -> bool:
        bus, p = self.bus, self.params
        images = replace(SENSOR_DATA, depth=IMAGE_DEPTH)
        deep = replace(DEFAULT, depth=100)
        self._subs = [
            bus.create_subscription("image", IMAGE, self._on_image, images, raw=True),
            bus.create_subscription(p.score_topic, "vision_msgs/msg/Classification",
                                    self._on_score, deep),
            bus.create_subscription(p.detections_topic, "vision_msgs/msg/Detection2DArray",
                                    self._on_detections, deep),
        ]  # fmt: skip
        self._contacts = self._schedule()
        if self._contacts:
            self.log.info("first downlink window at %s, %d bytes",
                          _utc(self._contacts[0].start_ns), self._contacts[0].bytes)  # fmt: skip
        return True

    def _set_aside_cut_windows(self) -> None:
        """A window bag without its ``metadata.yaml`` was cut off mid-write (a crash, a full
        disk): its items were never marked sent and go again in the next window. It is renamed
        ``<name>.cut`` so nobody takes it for a window that went out; what precedes the cut
        still reads (:class:`~vad_inspection.transport.bag.BagReader` salvages it)."""
        root = Path(self.params.downlink_dir)
        for bag in sorted(root.glob("window_*")) if root.is_dir() else []:
            if bag.is_dir() and not bag.suffix and not (bag / "metadata.yaml").exists():
                target = bag.with_name(bag.name + ".cut")
                bag.rename(target)
                self.counts["cut_windows"] += 1
                self.log.warning("%s was cut off mid-write; renamed %s, its items stay queued "
                                 "and go in the next window", bag, target.name)  # fmt: skip

    def _schedule(self) -> list[Contact]:
        """The windows from now on: the explicit schedule, or the first two periodic ones (each
        window taken appends the next)."""
        p, now = self.params, time.time_ns()
        try:
            if p.first_window_s < 0:
                raise ScheduleError(f"first_window_s {p.first_window_s:g}: a schedule in the past")
            if any(e.strip() for e in p.window_schedule):
                return parse_schedule(p.window_schedule, now)
            if p.window_period_s <= 0:
                return []
            return periodic(p.first_window_s, p.window_period_s, p.window_bytes, now, 2)
        except ScheduleError as error:
            raise VadError(str(error)) from None

    def on_deactivate(self) -> bool:
        for sub in self._subs:
            sub.destroy()
        self._subs = []
        return True

    def on_cleanup(self) -> bool:
        self.close()
        return True

    def on_shutdown(self) -> bool:
        self.close()
        return True

    def close(self) -> None:
        """Store what is queued, stop the worker, close the store."""
        worker = self._worker
        if worker is not None and worker.is_alive():
            self.flush(10.0)
            self._stop.set()
            with self._wake:
                self._wake.notify_all()
            if threading.current_thread() is not worker:
                worker.join(10.0)
        self._worker = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every decided frame is in the store (tests, shutdown)."""
        return self._idle.wait(timeout)

    # -- inputs ----------------------------------------------------------------------------------
    def _on_image(self, data: Any) -> None:
        raw = bytes(data)
        stamp = header_stamp_ns(raw)
        if stamp is None:
            self.counts["bad_image"] += 1
            self.log.warning("a %d-byte image cannot hold a header; not kept", len(raw))
            return
        now = time.monotonic()
        with self._lock:
            held = _Held(stamp, raw, now)
            self._ring.append(held)
            keep = self.params.pre_event_s + SCORE_WAIT_S  # the score may come a little later
            while self._ring and now - self._ring[0].received > keep:
                if not self._ring.popleft().scored:
                    self.counts["never_scored"] += 1
            while self._early and now - self._early[next(iter(self._early))][1] > SCORE_WAIT_S:
                self._early.pop(next(iter(self._early)))
                self.counts["score_without_frame"] += 1
            early = self._early.pop(stamp, None)
            if early is not None:  # its score overtook it (small messages travel faster)
                self._decide(held, *early[0])

    def _on_detections(self, msg: Any) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        boxes = []
        tag = ""
        for d in msg.detections:
            c, w, h = d.bbox.center.position, d.bbox.size_x, d.bbox.size_y
            boxes.append((round(c.x - w / 2), round(c.y - h / 2), round(w), round(h)))
            tag = tag or str(d.id)
        with self._lock:
            self._boxes[stamp] = (tag, boxes)
            while len(self._boxes) > 256:
                self._boxes.pop(next(iter(self._boxes)))

    def _on_score(self, msg: Any) -> None:
        if not msg.results:
            self.counts["refused_by_detector"] += 1
            return
        stamp = stamp_to_ns(msg.header.stamp)
        normalised = float(msg.results[0].score)
        raw = next((float(r.score) for r in msg.results if r.class_id == RAW_CLASS), normalised)
        with self._lock:
            held = next((h for h in self._ring if h.stamp_ns == stamp), None)
            if held is None:  # the frame may still be on its way: decide when it comes
                self._early[stamp] = ((raw, normalised), time.monotonic())
                self.counts["score_before_frame"] += 1
                return
            self._decide(held, raw, normalised)

    def _decide(self, held: _Held, raw: float, normalised: float) -> None:
        """Keep (anomalous, its context, routine) or throttle a scored frame (under the lock)."""
        stamp = held.stamp_ns
        flagged = normalised >= 0.5
        if flagged:  # windows in the frames' own time, so a replay at any rate keeps them
            self._event_until = stamp + round(self.params.post_event_s * NS)
            before = [h for h in self._ring if h.scored and h.stamp_ns < stamp
                      and (stamp - h.stamp_ns) / NS <= self.params.pre_event_s]  # fmt: skip
            for h in before:
                self._queue(h, float("nan"), float("nan"), True, "pre-event")
        event = flagged or stamp <= self._event_until
        if not event:
            period = self.params.routine_period_s
            if period > 0 and (stamp - self._last_routine) / NS < period:
                self.counts["throttled"] += 1
                held.scored = True  # stays as context for an event that may follow
                return
            self._last_routine = stamp
        self._queue(held, raw, normalised, event, "flagged" if flagged else
                    ("post-event" if event else "routine"))  # fmt: skip

    def _queue(self, held: _Held, raw: float, normalised: float, anomalous: bool, why: str
               ) -> None:  # fmt: skip
        """To the worker (under the lock); the frame leaves the ring buffer."""
        if held in self._ring:
            self._ring.remove(held)
        if self._worker is None:
            self.counts["not_configured"] += 1
            return
        self._jobs.append(_Job(held, raw, normalised, anomalous, why, time.monotonic()))
        self._idle.clear()
        self._wake.notify()

    # -- the worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._wake:
                while not (self._jobs or self._windows or self._stop.is_set()):
                    self._idle.set()
                    self._wake.wait(0.5)
                if self._stop.is_set() and not self._jobs and not self._windows:
                    self._idle.set()
                    return
                window = self._windows.popleft() if self._windows else None
                job = None
                if window is None:
                    job = self._jobs[0]
                    waited = time.monotonic() - job.decided
                    if (
                        job.why == "flagged"
                        and job.held.stamp_ns not in self._boxes
                        and waited < DETECTIONS_WAIT_S
                        and not self._stop.is_set()
                    ):
                        self._wake.wait(DETECTIONS_WAIT_S - waited)  # its detections may follow
                        continue
                    self._jobs.popleft()
                    tag, boxes = self._boxes.get(job.held.stamp_ns, ("", []))
            if window is not None:
                size, done = window
                try:
                    self.downlink(size)
                except (VadError, BagError, StoreError, OSError) as error:
                    self.counts["window_errors"] += 1
                    self.log.error("downlink window failed, nothing marked sent: %s", error)
                finally:
                    if done is not None:
                        done.set()
            elif job is not None:
                try:
                    self._accept(job, tag, boxes)
                except Exception as error:  # a worker must not die: count, say, go on
                    self.counts["store_errors"] += 1
                    self.log.error("frame at %d ns not stored: %s", job.held.stamp_ns, error)

    def _accept(self, job: _Job, tag: str, boxes: list[tuple[int, int, int, int]]) -> None:
        """Into the store (on the worker)."""
        held, raw, normalised, anomalous, why = (job.held, job.raw, job.normalised,
                                                 job.anomalous, job.why)  # fmt: skip
        if self.store is None:
            self.counts["not_configured"] += 1
            return
        try:
            frame = msg_to_frame(deserialize(held.data, IMAGE))
            forms, sig = describe(frame.image, boxes, raw_bytes=len(held.data))
        except FrameError as error:
            self.counts["undecodable"] += 1
            self.log.warning("frame at %d ns kept without forms: %s", held.stamp_ns, error)
            forms, sig = {"full": len(held.data)}, None
        score = raw if np.isfinite(raw) else -1e9  # pre-event context ranks below any scored
        meta = {
            "why": why, "normalised": normalised if np.isfinite(normalised) else None,
            "boxes": boxes, "forms": forms,
            "signature": None if sig is None else [round(float(v), 4) for v in sig],
        }  # fmt: skip
        try:
            self.store.accept(stamp_ns=held.stamp_ns, topic=self.bus.resolve("image"),
                              typename=IMAGE, payload=held.data, score=score,
                              anomalous=anomalous, tag=tag, meta=meta)  # fmt: skip
            self.counts[f"accepted_{why}"] += 1
            self._disk_full = ""
        except QuotaExceeded as error:
            self.counts["refused_quota"] += 1
            self.log.warning("%s", error)
        except DiskFull as error:
            self.counts["refused_disk_full"] += 1
            if not self._disk_full:  # once per episode, not per frame
                self.log.error("%s", error)
            self._disk_full = str(error)
        except StoreError as error:
            self.counts["store_errors"] += 1
            self.log.error("frame at %d ns not stored: %s", held.stamp_ns, error)

    # -- downlink --------------------------------------------------------------------------------
    def _tick(self) -> None:
        p = self.params
        if self.active and self._contacts and time.time_ns() >= self._contacts[0].start_ns:
            contact = self._contacts.pop(0)
            if not any(e.strip() for e in p.window_schedule):
                last = self._contacts[-1] if self._contacts else contact
                self._contacts.append(Contact(last.start_ns + round(p.window_period_s * NS),
                                              last.bytes))  # fmt: skip
            self._window_later(contact.bytes)
        self._publish_status()

    def _window_later(self, size: int) -> threading.Event:
        """A downlink window on the worker, after the frames decided before it; set when done."""
        done = threading.Event()
        if self._worker is None:
            done.set()
            return done
        with self._wake:
            self._windows.append((size, done))
            self._idle.clear()
            self._wake.notify()
        return done

    def _on_downlink(self, _request: Any) -> Any:
        """A contact now (a ground command, the end of a pass): one window of ``window_bytes``,
        outside the schedule."""

        def reply(ok: bool, message: str) -> Any:
            return new_message("std_srvs/srv/Trigger_Response", self.bus.distro, success=ok,
                               message=message)  # fmt: skip

        if not self.active:
            return reply(False, f"the recorder is {self.state.label}: activate it first")
        before = len(self.windows_written)
        errors = self.counts["window_errors"]
        if not self._window_later(self.params.window_bytes).wait(120.0):
            return reply(False, "the window is still being written after 120 s")
        if self.counts["window_errors"] > errors or len(self.windows_written) == before:
            return reply(False, "downlink window failed, nothing marked sent (see the log)")
        w = self.last_window
        return reply(True, f"{w['items']} items, {w['bytes']} of {w['budget']} bytes -> "
                     f"{self.windows_written[-1]}")  # fmt: skip

    def _memory_path(self) -> Path:
        return Path(self.params.store_dir) / "planner_memory.json"

    def _save_memory(self) -> None:
        """After the store marked the window sent: a crash in between forgets one window's
        tags (a defect may be sent twice), never marks unsent data sent."""
        path = self._memory_path()
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.planner.memory()))
            os.replace(tmp, path)
        except OSError as error:
            self.log.warning("planner memory not saved (%s): a restart may resend defects", error)

    def candidates(self) -> list[Candidate]:
        assert self.store is not None
        out = []
        for item in self.store.pending():
            meta = item.meta
            sig = meta.get("signature")
            out.append(Candidate(
                seq=item.seq, stamp_ns=item.stamp_ns, score=item.score, tag=item.tag,
                signature=None if sig is None else np.asarray(sig, np.float32),
                priority=item.priority, forms=meta.get("forms") or {"full": item.payload_bytes},
                flagged=item.anomalous,
            ))  # fmt: skip
        return out

    def downlink(self, window_bytes: int) -> Path | None:
        """Plan one window, write its bag, mark what it holds sent; the bag's path. (The node
        runs windows on its worker; calling this directly is for tests and tools.)"""
        if self.store is None:
            raise VadError("the recorder is not configured")
        with self._window_lock:
            return self._downlink(self.store, window_bytes)

    def _downlink(self, store: Store, window_bytes: int) -> Path | None:
        candidates = self.candidates()
        window = Window(time.time_ns(), window_bytes)
        too_big = oversized(candidates, window)
        if too_big:
            self.counts["larger_than_window"] += len(too_big)
            self.log.warning("%d item(s) (seq %s) are larger than this window's %d bytes in "
                             "every form, metadata included: they stay queued for a larger one",
                             len(too_big), _few(too_big), window_bytes)  # fmt: skip
        choices = self.planner.plan(candidates, window)
        self._window_index += 1
        path = Path(self.params.downlink_dir) / f"window_{self._window_index:04d}_{window.start_ns}"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_window(path, choices)
        store.mark_sent([c.seq for c in choices if c.form != META], window=path.name)
        self._save_memory()
        self.windows_written.append(path)
        self.last_window = {
            "bag": str(path), "items": len(choices), "bytes": sum(c.bytes for c in choices),
            "budget": window_bytes, "forms": dict(Counter(c.form for c in choices)),
            "larger_than_window": len(too_big),
        }  # fmt: skip
        self.log.info("window %d: %d items, %d of %d bytes -> %s", self._window_index,
                      len(choices), self.last_window["bytes"], window_bytes, path)  # fmt: skip
        return path

    def _write_window(self, path: Path, choices: list[Choice]) -> None:
        assert self.store is not None
        distro = self.bus.distro
        with BagWriter(path, distro) as bag:
            for choice in choices:
                item = self.store.get(choice.seq)
                stamp = item.stamp_ns
                meta = {
                    "seq": item.seq, "score": item.score, "tag": item.tag,
                    "anomalous": item.anomalous, "form": choice.form,
                    **{k: v for k, v in item.meta.items() if k in ("why", "boxes")},
                }  # fmt: skip
                record = status(f"seq {item.seq}", 0, choice.form, meta, distro=distro)
                bag.write("/downlink/meta", stamp, diagnostic_array([record], stamp, distro))
                if choice.form == "meta":
                    continue  # the pixels are not read for a metadata record
                data = self.store.payload(choice.seq)
                if choice.form == "full":
                    bag.add_topic(item.topic, IMAGE)
                    bag.write(item.topic, stamp, data)
                    continue
                frame = msg_to_frame(deserialize(data, IMAGE))
                if choice.form.startswith("crop"):
                    for k, crop in enumerate(_crops(frame, item.meta.get("boxes") or [])):
                        bag.write(f"{item.topic}/crops", stamp + k,
                                  frame_to_compressed(crop, "png", distro=distro))  # fmt: skip
                quality = 90 if "90" in choice.form else 50
                if "jpeg" in choice.form:
                    jpeg = frame_to_compressed(_jpegable(frame), "jpeg", quality, distro)
                    bag.write(f"{item.topic}/compressed", stamp, jpeg)

    # -- status ----------------------------------------------------------------------------------
    def _publish_status(self) -> None:
        if self.store is None:
            return
        stats = self.store.stats()
        pending = self.store.pending()
        values = {
            "items_queued": len(pending), "bytes_queued": sum(i.payload_bytes for i in pending),
            "anomalous_queued": sum(i.anomalous for i in pending),
            "quota_bytes": stats.quota_bytes, "over_quota": stats.over_quota,
            "evicted": stats.evicted_items, "refused": stats.refused_items,
            "free_bytes": stats.free_bytes,
            "next_window": _utc(self._contacts[0].start_ns) if self._contacts else "none",
            "next_window_bytes": self._contacts[0].bytes if self._contacts else 0,
            **{f"last_window_{k}": v for k, v in self.last_window.items()},
            **{f"count_{k}": v for k, v in self.counts.items()},
        }  # fmt: skip
        level = 2 if self._disk_full else (1 if stats.over_quota or stats.refused_items else 0)
        text = self._disk_full or stats.last_problem or f"{len(pending)} items queued"
        msg = diagnostic_array([status(self.bus.fqn, level, text, values,
                                       distro=self.bus.distro)],
                               self.bus.now_ns(), self.bus.distro)  # fmt: skip
        self._status.publish(msg)
        self._diag.publish(msg)


def _utc(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / NS))


def _few(seqs: list[int], shown: int = 5) -> str:
    head = ", ".join(str(s) for s in seqs[:shown])
    return head + (f" and {len(seqs) - shown} more" if len(seqs) > shown else "")


def _crops(frame: Frame, boxes: list) -> list[Frame]:
    """The defect crops the planner sized (:func:`padded_box`, the same padding)."""
    shown = _jpegable(frame)
    height, width = shown.image.shape[:2]
    out = []
    for box in boxes:
        area = padded_box(box, width, height)
        if area is not None:
            x0, y0, x1, y1 = area
            crop = np.ascontiguousarray(shown.image[y0:y1, x0:x1])
            out.append(Frame(crop, shown.encoding, frame.stamp_ns, frame.frame_id))
    return out


def _jpegable(frame: Frame) -> Frame:
    """8-bit mono or colour for JPEG/PNG (a multiband frame shows its first three bands)."""
    if frame.encoding in ("rgb8", "bgr8", "mono8", "rgba8", "bgra8", "8UC1"):
        return frame
    from ..msgs.image import to_rgb

    return Frame(to_rgb(frame), "rgb8", frame.stamp_ns, frame.frame_id)


def main(argv: list[str] | None = None) -> int:
    """``ros2 run vad_inspection recorder`` / ``vad-inspection run recorder``."""
    from .runner import run_node

    return run_node(RecorderNode, "recorder", argv)
