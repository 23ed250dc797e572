"""The recorder's durable store, on real files: accept order, restarts (closed or abandoned), torn
tails cut, corruption refused, the quota's eviction rules, segment deletion and compaction, and
processes killed with SIGKILL at random moments losing nothing they were told was accepted."""

from __future__ import annotations

import hashlib
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vad_inspection.downlink.store import (
    ACCEPT,
    CHECKPOINT,
    MAGIC,
    BadItem,
    DiskFull,
    Item,
    QuotaExceeded,
    Store,
    StoreError,
)
from vad_inspection.errors import FrameError, SetupError

BIG = 1 << 40  # a quota that never bites


def payload_of(index: int, size: int = 1000) -> bytes:
    return random.Random(index).randbytes(size)


def accept(store: Store, index: int, size: int = 1000, **options: object) -> Item:
    """Accept a routine 'camera frame' whose payload depends only on ``index`` and ``size``."""
    fields: dict = {"anomalous": False, **options}
    return store.accept(
        stamp_ns=1_000_000 + index,
        topic="/camera/image",
        typename="sensor_msgs/msg/Image",
        payload=payload_of(index, size),
        score=index / 10,
        **fields,
    )


def segments(root: Path) -> list[str]:
    return sorted(path.name for path in root.glob("seg-*.log"))


def disk_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.glob("seg-*.log"))


def seqs(items: list[Item]) -> list[int]:
    return [item.seq for item in items]


# ------------------------------------------------------------------------- basics


def test_accept_returns_the_item_and_pending_keeps_accept_order(tmp_path: Path) -> None:
    with Store(tmp_path / "store", quota_bytes=BIG) as store:
        items = [accept(store, i, 500 + i) for i in range(5)]
        special = accept(
            store,
            5,
            anomalous=True,
            tag="crack",
            priority="expedited",
            meta={"frame_id": "camera", "boxes": ((1, 2, 3, 4),)},
        )
        assert seqs(items) == [0, 1, 2, 3, 4]
        assert store.pending() == [*items, special]
        assert [store.payload(i) for i in range(5)] == [payload_of(i, 500 + i) for i in range(5)]
        assert store.get(5) == special
        assert special.meta == {"frame_id": "camera", "boxes": [[1, 2, 3, 4]]}  # as JSON keeps it
        assert (special.payload_bytes, special.priority, special.tag) == (
            1000,
            "expedited",
            "crack",
        )
        assert hash(special) == hash(store.get(5))  # meta is left out of the hash
        stats = store.stats()
        assert (stats.items, stats.bytes, stats.anomalous_items) == (6, 2510 + 1000, 1)
        assert not stats.over_quota and stats.last_problem == ""


def test_bad_requests_are_refused_before_they_reach_the_log(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root, quota_bytes=BIG) as store:
        accept(store, 0)
        size = disk_bytes(root)
        with pytest.raises(BadItem, match="priority"):
            accept(store, 1, priority="urgent")
        with pytest.raises(BadItem, match="JSON"):
            accept(store, 1, meta={"frame": object()})
        with pytest.raises(BadItem, match="never accepted"):
            store.mark_sent([0, 7])
        with pytest.raises(BadItem, match="never accepted"):
            store.set_anomalous([-1])
        with pytest.raises(BadItem, match="not held"):
            store.payload(3)
        assert disk_bytes(root) == size and seqs(store.pending()) == [0]
        assert issubclass(BadItem, FrameError) and issubclass(StoreError, SetupError)


def test_a_bad_configuration_is_a_store_error_naming_the_root(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="sync mode"):
        Store(tmp_path / "a", quota_bytes=1, sync="sometimes")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match=str(blocker)):
        Store(blocker / "store", quota_bytes=1)


def test_a_second_process_cannot_open_the_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    code = (
        "import sys\n"
        "from vad_inspection.downlink.store import Store, StoreError\n"
        "try:\n"
        "    Store(sys.argv[1], quota_bytes=1)\n"
        "except StoreError as exc:\n"
        "    print(exc)\n"
    )
    with Store(root, quota_bytes=BIG):
        result = subprocess.run(
            [sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=60
        )
    assert "in use by another process" in result.stdout, result.stderr


# ------------------------------------------------------------------------ restarts


def test_reopen_after_close_gives_the_same_queue_and_payloads(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root, quota_bytes=BIG) as store:
        for i in range(8):
            accept(store, i, 300 * (i + 1), meta={"i": i})
        store.mark_sent([1, 4], window="pass-1")
        store.set_anomalous([6])
        before = store.pending()
        stats = store.stats()
    with Store(root, quota_bytes=BIG) as store:
        assert store.pending() == before
        assert [store.payload(item.seq) for item in before] == [
            payload_of(item.seq, 300 * (item.seq + 1)) for item in before
        ]
        assert store.stats() == stats
        assert accept(store, 8).seq == 8  # seqs continue


def test_reopen_without_closing_gives_the_same_queue(tmp_path: Path) -> None:
    root = tmp_path / "store"
    abandoned = Store(root, quota_bytes=BIG)  # as a killed recorder leaves it: never closed
    for i in range(5):
        accept(abandoned, i, anomalous=i == 2)
    abandoned.mark_sent([0])
    before = abandoned.pending()
    try:
        with Store(root, quota_bytes=BIG) as store:
            assert store.pending() == before
            assert [store.payload(item.seq) for item in before] == [
                payload_of(item.seq) for item in before
            ]
            assert accept(store, 5).seq == 5
    finally:
        abandoned.close()


def test_flags_and_sent_marks_survive_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root, quota_bytes=BIG) as store:
        for i in range(6):
            accept(store, i)
        store.set_anomalous([1, 2, 5])  # a post-event window promotes routine frames
        store.set_anomalous([2], anomalous=False)
        store.mark_sent([0, 3, 3], window="pass-1")
        store.mark_sent([0])  # already sent: nothing to do
    with Store(root, quota_bytes=BIG) as store:
        assert seqs(store.pending()) == [1, 2, 4, 5]
        assert [store.get(i).anomalous for i in (1, 2, 4, 5)] == [True, False, False, True]
        stats = store.stats()
        assert (stats.sent_items, stats.anomalous_items, stats.items) == (2, 2, 6)


# --------------------------------------------------------------- torn tails, damage


def test_garbage_after_the_last_record_is_cut_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root, quota_bytes=BIG) as store:
        before = [accept(store, i) for i in range(3)]
    log = root / "seg-0.log"
    size = log.stat().st_size
    with log.open("ab") as stream:
        stream.write(b"\x00half-written record" * 20)
    with Store(root, quota_bytes=BIG) as store:
        assert store.pending() == before
        problem = store.stats().last_problem
        assert "torn write" in problem and "seg-0.log" in problem and f"offset {size}" in problem
        assert log.stat().st_size == size
        assert accept(store, 3).seq == 3
    with Store(root, quota_bytes=BIG) as store:  # repaired for good
        assert seqs(store.pending()) == [0, 1, 2, 3] and store.stats().last_problem == ""


@pytest.mark.parametrize("keep", [5, 16 + 30, -200], ids=["in-header", "in-json", "in-payload"])
def test_a_last_record_cut_mid_way_is_dropped_and_reported(tmp_path: Path, keep: int) -> None:
    root = tmp_path / "store"
    with Store(root, quota_bytes=BIG) as store:
        before = [accept(store, i) for i in range(3)]
        start = disk_bytes(root)
        accept(store, 3)
    log = root / "seg-0.log"
    cut = start + keep if keep > 0 else log.stat().st_size + keep
    with log.open("r+b") as stream:
        stream.truncate(cut)
    with Store(root, quota_bytes=BIG) as store:
        assert store.pending() == before
        assert [store.payload(i) for i in range(3)] == [payload_of(i) for i in range(3)]
        assert f"offset {start}" in store.stats().last_problem
        assert log.stat().st_size == start


@pytest.mark.parametrize("where", ["earlier-record", "other-segment"])
def test_a_flipped_byte_before_the_tail_raises_naming_the_file(tmp_path: Path, where: str) -> None:
    root = tmp_path / "store"
    segment_bytes = 64 << 20 if where == "earlier-record" else 1500  # one item per segment
    with Store(root, quota_bytes=BIG, segment_bytes=segment_bytes) as store:
        for i in range(3):
            accept(store, i)
    log = root / "seg-0.log"
    assert len(segments(root)) == (1 if where == "earlier-record" else 3)
    data = bytearray(log.read_bytes())
    data[700] ^= 0x01  # inside the first record's payload
    log.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"seg-0\.log: corrupt record at offset 0 .*CRC"):
        Store(root, quota_bytes=BIG, segment_bytes=segment_bytes)
    assert log.read_bytes() == bytes(data)  # nothing was "repaired" away


def test_a_payload_changed_on_disk_after_opening_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root, quota_bytes=BIG) as store:
        accept(store, 0)
        log = root / "seg-0.log"
        data = bytearray(log.read_bytes())
        data[-10] ^= 0xFF
        log.write_bytes(bytes(data))
        with pytest.raises(StoreError, match="no longer checks"):
            store.payload(0)


def test_a_segment_removed_behind_the_stores_back_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root, quota_bytes=BIG, segment_bytes=1500) as store:
        for i in range(4):
            accept(store, i)
        store.mark_sent([1])  # seg-1 goes, so a checkpoint lists the rest
    assert (root / CHECKPOINT).exists() and "seg-1.log" not in segments(root)
    (root / "seg-2.log").unlink()
    with pytest.raises(StoreError, match="no record in any segment"):
        Store(root, quota_bytes=BIG, segment_bytes=1500)


# --------------------------------------------------------------------------- quota


def test_quota_evicts_routine_items_oldest_first(tmp_path: Path) -> None:
    with Store(tmp_path / "store", quota_bytes=10_000) as store:
        for i in range(10):
            accept(store, i)
        assert not store.stats().over_quota
        accept(store, 10)
        accept(store, 11, size=1500)
        assert seqs(store.pending()) == [3, 4, 5, 6, 7, 8, 9, 10, 11]
        stats = store.stats()
        assert (stats.evicted_items, stats.bytes, stats.over_quota) == (3, 9500, False)
        with pytest.raises(BadItem, match="evicted"):
            store.payload(0)


def test_sent_items_are_dropped_before_routine_ones(tmp_path: Path) -> None:
    with Store(tmp_path / "store", quota_bytes=10_000) as store:
        for i in range(10):
            accept(store, i)
        store.mark_sent([6, 5])
        accept(store, 10)
        assert seqs(store.pending()) == [0, 1, 2, 3, 4, 7, 8, 9, 10]
        assert store.get(6).seq == 6  # sent, still on disk: dropped when room is needed
        accept(store, 11)
        accept(store, 12)
        assert seqs(store.pending()) == [1, 2, 3, 4, 7, 8, 9, 10, 11, 12]
        stats = store.stats()
        assert (stats.sent_items, stats.evicted_items, stats.items) == (2, 1, 10)


def test_unsent_anomalous_items_are_never_evicted_and_routine_ones_refused(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    with Store(root, quota_bytes=5000) as store:
        for i in range(5):
            accept(store, i, anomalous=i % 2 == 0)  # 0, 2, 4 anomalous
        with pytest.raises(QuotaExceeded, match="refused a routine item of 2500 B"):
            accept(store, 5, size=2500)  # 2000 B routine could go: not enough, so none does
        assert seqs(store.pending()) == [0, 1, 2, 3, 4]
        assert accept(store, 6, anomalous=True).seq == 5  # a refusal takes no seq
        accept(store, 7, anomalous=True)  # each evicts the oldest routine item
        assert seqs(store.pending()) == [0, 2, 4, 5, 6]
        with pytest.raises(QuotaExceeded) as refused:
            accept(store, 8)
        assert str(root) in str(refused.value)
        assert seqs(store.pending()) == [0, 2, 4, 5, 6]
        stats = store.stats()
        assert (stats.refused_items, stats.evicted_items, stats.anomalous_items) == (2, 2, 5)
        assert "refused" in stats.last_problem and "never evicted" in stats.last_problem


def test_an_anomalous_item_is_accepted_over_quota_and_said_so(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root, quota_bytes=3000) as store:
        accept(store, 0, anomalous=True)
        accept(store, 1)
        accept(store, 2, anomalous=True)
        item = accept(store, 3, size=2000, anomalous=True)  # routine 1 goes, still 1000 B over
        assert seqs(store.pending()) == [0, 2, 3]
        stats = store.stats()
        assert (stats.bytes, stats.over_quota, stats.evicted_items) == (4000, True, 1)
        assert f"anomalous item {item.seq}" in stats.last_problem
        assert "over the quota" in stats.last_problem
    with Store(root, quota_bytes=3000) as store:
        assert seqs(store.pending()) == [0, 2, 3] and store.stats().over_quota
        store.mark_sent([0, 3])
        accept(store, 4, anomalous=True)  # the sent items make room
        assert seqs(store.pending()) == [2, 4] and not store.stats().over_quota


# ------------------------------------------------------------------------ segments


def test_segments_roll_and_fully_sent_ones_are_deleted(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root, quota_bytes=BIG, segment_bytes=64 << 10) as store:
        for i in range(30):
            accept(store, i, size=10_000)
        full = disk_bytes(root)
        assert len(segments(root)) == 5  # 6 records of ~10 KB per 64 KB segment
        store.mark_sent(range(20), window="pass-1")
        assert disk_bytes(root) < full * 0.45
        stats = store.stats()
        assert (stats.items, stats.sent_items) == (12, 20)  # 18, 19 share seg-3 with 20-23
    with Store(root, quota_bytes=BIG, segment_bytes=64 << 10) as store:
        assert seqs(store.pending()) == list(range(20, 30))
        assert all(store.payload(i) == payload_of(i, 10_000) for i in range(20, 30))


def test_a_sparse_segment_is_compacted_and_survives_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root, quota_bytes=BIG, segment_bytes=64 << 10) as store:
        for i in range(8):
            accept(store, i, size=10_000, anomalous=i == 4)
        assert segments(root) == ["seg-0.log", "seg-1.log"]
        store.mark_sent([0, 1, 2, 3, 5])  # seg-0 keeps only item 4: copied forward
        assert segments(root) == ["seg-1.log"]
        assert store.payload(4) == payload_of(4, 10_000) and store.get(4).anomalous
    with Store(root, quota_bytes=BIG, segment_bytes=64 << 10) as store:
        assert seqs(store.pending()) == [4, 6, 7]
        assert store.get(4).anomalous and store.payload(4) == payload_of(4, 10_000)


def test_facts_outlive_the_segment_that_recorded_them(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root, quota_bytes=BIG, segment_bytes=3000) as store:
        accept(store, 0, size=2000)  # seg-0
        accept(store, 1)  # seg-1
        store.set_anomalous([0])  # FLAG in seg-1
        accept(store, 2)  # seg-1
        accept(store, 3)  # seg-2
        store.mark_sent([1, 2])  # seg-1 fully sent: deleted, its FLAG with it
        assert segments(root) == ["seg-0.log", "seg-2.log"]
    with Store(root, quota_bytes=BIG, segment_bytes=3000) as store:
        assert seqs(store.pending()) == [0, 3]
        assert store.get(0).anomalous  # the checkpoint carried the flag
        assert store.stats().sent_items == 2
        assert accept(store, 4).seq == 4


class _Crash(BaseException):
    """Stands in for the process dying at a chosen point."""


def test_a_crash_between_checkpoint_and_deletion_is_finished_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    store = Store(root, quota_bytes=BIG, segment_bytes=1500)
    for i in range(4):
        accept(store, i)
    store.set_anomalous([0])

    def crash(self: Store, number: int) -> None:
        raise _Crash

    monkeypatch.setattr(Store, "_delete_segment", crash)
    with pytest.raises(_Crash):
        store.mark_sent([1, 2])
    monkeypatch.undo()
    assert (root / CHECKPOINT).exists() and "seg-1.log" in segments(root)
    try:
        with Store(root, quota_bytes=BIG, segment_bytes=1500) as reopened:
            assert seqs(reopened.pending()) == [0, 3] and reopened.get(0).anomalous
            assert segments(root) == ["seg-0.log", "seg-3.log"]
    finally:
        store.close()


# -------------------------------------------------------------------- kill -9 test

CHILD = r"""
import hashlib, random, sys
from vad_inspection.downlink.store import Store

root, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
store = Store(root, quota_bytes=1 << 40, segment_bytes=1 << 20)
print("open", flush=True)
for i in range(1_000_000):
    source = random.Random(seed * 1_000_003 + i)
    payload = source.randbytes(source.randint(1_000, 200_000))
    item = store.accept(
        stamp_ns=i, topic="/camera/image", typename="sensor_msgs/msg/Image", payload=payload,
        score=rng.random(), anomalous=rng.random() < 0.2, meta={"seed": seed, "i": i},
    )
    print("accepted", item.seq, hashlib.sha256(payload).hexdigest(), flush=True)
    if i % 8 == 7:
        oldest = [p.seq for p in store.pending()[:4]]
        print("sending", *oldest, flush=True)
        store.mark_sent(oldest, window="child")
        print("sent", *oldest, flush=True)
"""
ITERATIONS = 24


def child_payload(seed: int, index: int) -> bytes:
    source = random.Random(seed * 1_000_003 + index)
    return source.randbytes(source.randint(1_000, 200_000))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_and_kill(root: Path, seed: int, delay: float, early: bool, out: Path) -> list[str]:
    """Run the child and SIGKILL it ``delay`` s after it opened the store (after it started,
    if ``early``: then the kill may land in recovery); return its complete output lines."""
    err = out.with_suffix(".err")
    with out.open("wb") as stdout, err.open("wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), str(seed)], stdout=stdout, stderr=stderr
        )
        try:
            deadline = time.monotonic() + 60
            while not early and b"open\n" not in out.read_bytes():
                assert child.poll() is None and time.monotonic() < deadline, err.read_text()
                time.sleep(0.005)
            time.sleep(delay)
            child.send_signal(signal.SIGKILL)
            returncode = child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert returncode == -signal.SIGKILL, err.read_text()  # died of the kill, not of an error
    return out.read_text().split("\n")[:-1]  # a line without its newline was cut by the kill


def tear(root: Path, rng: random.Random) -> None:
    """Leave what a crash in the middle of appending an ACCEPT could: its header and part of
    its body at the end of the last segment (the kill itself rarely lands inside a write)."""
    last = max(root.glob("seg-*.log"), key=lambda path: int(path.stem.split("-")[1]))
    length = rng.randint(1_000, 200_000)
    with last.open("ab") as stream:
        stream.write(struct.pack("<4sB3xII", MAGIC, ACCEPT, length, 0))
        stream.write(rng.randbytes(rng.randrange(length)))


def parse(lines: list[str]) -> tuple[dict[int, str], set[int], set[int]]:
    """Items reported accepted (seq: payload hash), and seqs being sent / confirmed sent."""
    accepted: dict[int, str] = {}
    sending: set[int] = set()
    sent: set[int] = set()
    for line in lines:
        word, *rest = line.split()
        if word == "accepted":
            accepted[int(rest[0])] = rest[1]
        elif word == "sending":
            sending.update(map(int, rest))
        elif word == "sent":
            sent.update(map(int, rest))
    return accepted, sending, sent


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing_accepted(tmp_path: Path) -> None:
    rng = random.Random(20240917)
    root = tmp_path / "store"
    digests: dict[int, str] = {}  # every item known to be in the store: seq -> payload hash
    sent: set[int] = set()  # known to be sent
    for iteration in range(ITERATIONS):
        seed = rng.randrange(1 << 30)
        early = iteration % 6 == 5
        delay = rng.uniform(0.0, 0.3) if early else rng.uniform(0.02, 0.5)
        lines = run_and_kill(root, seed, delay, early, tmp_path / f"child-{iteration}.out")
        accepted, sending, confirmed = parse(lines)
        highest = max(digests, default=-1)
        assert list(accepted) == sorted(accepted) and all(seq > highest for seq in accepted)
        digests.update(accepted)
        sent |= confirmed
        torn = iteration % 3 == 2
        if torn:
            tear(root, rng)
        with Store(root, quota_bytes=1 << 40, segment_bytes=1 << 20) as store:
            assert not torn or "torn write" in store.stats().last_problem
            pending = seqs(store.pending())
            assert pending == sorted(set(pending))  # accept order, nothing twice
            unreported = [seq for seq in pending if seq not in digests]
            assert len(unreported) <= 1  # killed after accept() returned, before the print
            for seq in unreported:
                item = store.get(seq)
                assert seq > max(digests, default=-1) and item.meta["seed"] == seed
                digests[seq] = sha(child_payload(seed, item.meta["i"]))
            sent |= {seq for seq in sending - confirmed if seq not in pending}  # in doubt
            assert pending == [seq for seq in digests if seq not in sent]
            for seq in pending:
                assert sha(store.payload(seq)) == digests[seq], f"item {seq} changed"
            assert store.stats().sent_items == len(sent)  # lifetime count, checkpoints and all
            chosen = rng.sample(pending, k=len(pending) // 4)
            store.mark_sent(chosen, window=f"pass-{iteration}")
            sent |= set(chosen)
    assert len(digests) > 10 * ITERATIONS  # the children got real work done


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 1 MB file system (tmpfs), where writes fail with ENOSPC; mounting needs root."""
    import os

    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 1 MB tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_refuses_the_item_and_keeps_everything_accepted(small_disk: Path) -> None:
    root = small_disk / "store"
    accepted: list[Item] = []
    with Store(root, BIG, sync="always") as store:
        with pytest.raises(DiskFull) as caught:
            for index in range(100):  # 100 x 50 kB on a 1 MB disk
                accepted.append(accept(store, index, 50_000, anomalous=index % 3 == 0))
        assert "the disk is full" in str(caught.value) and "nothing accepted" in str(caught.value)
        assert 10 <= len(accepted) < 21
        stats = store.stats()
        assert stats.refused_items == 1 and "disk is full" in stats.last_problem
        assert seqs(store.pending()) == seqs(accepted)
        store.mark_sent([accepted[0].seq])  # a small record still fits: the store goes on
    with Store(root, BIG) as again:  # what was accepted reads back, byte for byte
        assert seqs(again.pending()) == seqs(accepted[1:])
        assert all(again.payload(i.seq) == payload_of(i.seq, 50_000) for i in accepted[1:])
        assert not again.stats().last_problem  # no torn record was left to cut


def test_the_disk_reserve_refuses_routine_items_and_lets_anomalous_ones_in(tmp_path: Path) -> None:
    import shutil

    free = shutil.disk_usage(tmp_path).free
    with Store(tmp_path / "s", BIG, sync="none", min_free_bytes=free + (1 << 30)) as store:
        with pytest.raises(DiskFull, match="nearly full"):
            accept(store, 0)
        kept = accept(store, 1, anomalous=True)
        assert "reserve" in store.stats().last_problem
        assert seqs(store.pending()) == [kept.seq] and store.stats().refused_items == 1
