"""Throughput and latency of images between two processes over the dds binding, with the local
binding (same process, publisher thread -> spinning thread) as the floor.

    python benchmarks/transport.py                       # 640x480@100 Hz, 1920x1080@30 Hz, floods
    python benchmarks/transport.py --seconds 5 --json out/transport.json

Per case: ``sent`` frames of rgb8 published at the rate on a fixed schedule (reliable QoS, keep
last 10); latency = receipt of the decoded message in the subscriber's callback minus the stamp
taken just before the publisher serialised it (both on the same host clock). ``flood`` publishes
as fast as it can with reliable keep-all QoS (the writer blocks when the reader falls behind, so
nothing is lost): its rate is the maximum sustained rate.

Targets (issue): 1920x1080 rgb8 at 30 Hz between two processes with median latency < 10 ms and no
loss; 640x480 at 100 Hz. The dds processes use config/cyclonedds_loopback.xml unless
CYCLONEDDS_URI is set, and a random ROS_DOMAIN_ID unless one is set.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vad_inspection.msgs.image import Frame, frame_to_msg  # noqa: E402
from vad_inspection.msgs.time import stamp_to_ns  # noqa: E402
from vad_inspection.msgs.types import msg_class  # noqa: E402
from vad_inspection.transport import DEFAULT, LATCHED, QoS, create_bus  # noqa: E402
from vad_inspection.transport.local import LocalGraph  # noqa: E402
from vad_inspection.transport.qos import History  # noqa: E402

IMAGE = "sensor_msgs/msg/Image"
STRING = "std_msgs/msg/String"
FLOOD = QoS(history=History.KEEP_ALL)  # reliable, volatile, keep all: back-pressure, no loss


def make_image(index: int, pixels: np.ndarray) -> Any:
    """sensor_msgs/Image rgb8, frame_id = index, stamp = now (the latency's start)."""
    return frame_to_msg(Frame(pixels, "rgb8", time.time_ns(), str(index)))


def frames(width: int, height: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(4)]


def publish_loop(pub: Any, pixels: list[np.ndarray], count: int, rate: float | None) -> float:
    """Publish ``count`` frames at ``rate`` Hz (None: as fast as possible); return seconds."""
    start = time.perf_counter()
    for i in range(count):
        if rate:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        pub.publish(make_image(i, pixels[i % len(pixels)]))
    return time.perf_counter() - start


class Receiver:
    """Collects (frame index, latency ns, receipt time) in the subscription callback."""

    def __init__(self) -> None:
        self.latency_ns: list[int] = []
        self.indices: list[int] = []
        self.times: list[float] = []

    def __call__(self, msg: Any) -> None:
        now = time.time_ns()
        stamp = stamp_to_ns(msg.header.stamp)
        self.latency_ns.append(now - stamp)
        self.indices.append(int(msg.header.frame_id))
        self.times.append(time.perf_counter())

    def summary(self, binding: str, case: str, sent: int, target_hz: float | None) -> dict:
        lat = np.array(self.latency_ns, dtype=np.float64) / 1e6
        span = self.times[-1] - self.times[0] if len(self.times) > 1 else 0.0
        in_order = self.indices == sorted(self.indices)
        return {
            "binding": binding,
            "case": case,
            "sent": sent,
            "delivered": len(self.indices),
            "in_order": in_order,
            "median_ms": float(np.median(lat)) if lat.size else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
            "max_ms": float(lat.max()) if lat.size else float("nan"),
            "rate_hz": (len(self.times) - 1) / span if span > 0 else float("nan"),
            "target_hz": target_hz,
        }


# ------------------------------------------------------------------------------------------
# local: one process, publisher thread -> bus spinning in the main thread


def run_local(width: int, height: int, rate: float | None, count: int) -> dict:
    graph = LocalGraph()
    qos = FLOOD if rate is None else DEFAULT
    with (
        create_bus("local", "bench_sub", graph=graph) as sub_bus,
        create_bus("local", "bench_pub", graph=graph) as pub_bus,
    ):
        receiver = Receiver()
        sub_bus.create_subscription("/bench/image", IMAGE, receiver, qos)
        pub = pub_bus.create_publisher("/bench/image", IMAGE, qos)
        pixels = frames(width, height)
        thread = threading.Thread(target=publish_loop, args=(pub, pixels, count, rate))
        thread.start()
        sub_bus.spin_until(
            lambda: len(receiver.indices) >= count or not thread.is_alive(),
            timeout=count / (rate or 50) + 30,
        )
        thread.join()
        sub_bus.spin_once(0)  # whatever the publisher queued last
    return receiver.summary("local", case_name(width, height, rate), count, rate)


# ------------------------------------------------------------------------------------------
# dds: this script as the publisher process, the subscriber here


def run_dds(width: int, height: int, rate: float | None, count: int) -> dict:
    qos = FLOOD if rate is None else DEFAULT
    cmd = [
        sys.executable,
        __file__,
        "--role",
        "pub",
        "--width",
        str(width),
        "--height",
        str(height),
        "--rate",
        str(rate or 0),
        "--count",
        str(count),
    ]
    with create_bus("dds", "bench_sub") as bus:
        receiver = Receiver()
        sub = bus.create_subscription("/bench/image", IMAGE, receiver, qos)
        ready = bus.create_publisher("/bench/ready", STRING, LATCHED)
        child = subprocess.Popen(cmd, env=os.environ.copy())
        try:
            if not bus.spin_until(lambda: sub.publisher_count > 0, 30):
                raise RuntimeError("publisher process did not match within 30 s")
            ready.publish(msg_class(STRING)(data="go"))
            bus.spin_until(
                lambda: len(receiver.indices) >= count or child.poll() is not None,
                timeout=count / (rate or 20) + 30,
            )
            bus.spin_until(lambda: len(receiver.indices) >= count, 2.0)  # stragglers
        finally:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return receiver.summary("dds", case_name(width, height, rate), count, rate)


def run_pub_role(args: argparse.Namespace) -> int:
    with create_bus("dds", "bench_pub") as bus:
        bus.install_signal_handlers()
        qos = FLOOD if not args.rate else DEFAULT
        pub = bus.create_publisher("/bench/image", IMAGE, qos)
        go: list[str] = []
        bus.create_subscription("/bench/ready", STRING, lambda m: go.append(m.data), LATCHED)
        if not bus.spin_until(lambda: bool(go) and pub.subscription_count > 0, 30):
            return 2
        publish_loop(pub, frames(args.width, args.height), args.count, args.rate or None)
        bus.spin()  # stay (and keep retransmitting) until the parent terminates us
    return 0


# ------------------------------------------------------------------------------------------


def codec_costs(width: int, height: int, repeat: int = 20) -> tuple[float, float]:
    """Median ms to serialise / deserialise one frame: the part of the latency that is CDR."""
    from vad_inspection.msgs import cdr

    msg = make_image(0, frames(width, height)[0])
    enc, dec = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        data = cdr.serialize(msg, IMAGE)
        enc.append(time.perf_counter() - t)
        t = time.perf_counter()
        cdr.deserialize(data, IMAGE)
        dec.append(time.perf_counter() - t)
    return float(np.median(enc)) * 1e3, float(np.median(dec)) * 1e3


def case_name(width: int, height: int, rate: float | None) -> str:
    return f"{width}x{height}@{'flood' if rate is None else f'{rate:g}Hz'}"


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'binding':8} {'case':20} {'delivered/sent':>15} {'order':>5} {'median ms':>10} "
        f"{'p99 ms':>8} {'max ms':>8} {'rate Hz':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['binding']:8} {r['case']:20} {r['delivered']:>7}/{r['sent']:<7} "
            f"{'ok' if r['in_order'] else 'NO':>5} {r['median_ms']:>10.2f} {r['p99_ms']:>8.2f} "
            f"{r['max_ms']:>8.2f} {r['rate_hz']:>9.1f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["bench", "pub"], default="bench")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each rate case")
    parser.add_argument("--flood-frames", type=int, default=100)
    parser.add_argument("--bindings", default="local,dds")
    parser.add_argument("--no-flood", action="store_true")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.role == "pub":
        return run_pub_role(args)

    os.environ.setdefault("CYCLONEDDS_URI", (ROOT / "config" / "cyclonedds_loopback.xml").as_uri())
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    cases: list[tuple[int, int, float | None, int]] = [
        (640, 480, 100.0, round(100 * args.seconds)),
        (1920, 1080, 30.0, round(30 * args.seconds)),
    ]
    if not args.no_flood:
        cases += [(640, 480, None, args.flood_frames), (1920, 1080, None, args.flood_frames // 2)]
    runners = {"local": run_local, "dds": run_dds}
    rows = []
    for width, height, rate, count in cases:
        if args.only not in case_name(width, height, rate):
            continue
        for binding in args.bindings.split(","):
            rows.append(runners[binding](width, height, rate, count))
            r = rows[-1]
            print(
                f"  {r['binding']} {r['case']}: {r['delivered']}/{r['sent']}, "
                f"median {r['median_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms",
                file=sys.stderr,
                flush=True,
            )
    print(f"CYCLONEDDS_URI={os.environ['CYCLONEDDS_URI']}")
    print_table(rows)
    for width, height in sorted({(c[0], c[1]) for c in cases}):
        enc, dec = codec_costs(width, height)
        print(f"CDR {width}x{height}: serialise {enc:.2f} ms, deserialise {dec:.3f} ms per frame")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
