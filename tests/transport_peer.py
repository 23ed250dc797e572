"""A peer process for the multi-process dds transport tests (also importable for its helpers).

    python tests/transport_peer.py pub   --count N [--width W --height H --rate HZ --ready K]
    python tests/transport_peer.py sub   --count N --out result.json [--name NAME]
    python tests/transport_peer.py relay --topic-in A --topic-out B [--name NAME]
    python tests/transport_peer.py node  --name NAME [--namespace NS --topic T]

Every role runs a dds bus (domain from ROS_DOMAIN_ID, CYCLONEDDS_URI as set by the test), spins
until SIGTERM/SIGINT and exits 0. Handshake: subscribers publish their name on the latched
``/ready`` topic once their image subscription has matched a publisher; the publisher starts only
when it has ``--ready`` names and as many matched subscriptions, so with reliable, volatile QoS
no frame can be published before a reader is listening.

``node`` is a node for the graph tests: a String publisher on ``--topic`` and a subscription to
the latched ``/control`` topic; it destroys its publisher when ``destroy`` arrives there, so a
test in another process sees ``ros_discovery_info`` change.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the package importable from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vad_inspection.msgs.image import Frame, frame_to_msg
from vad_inspection.msgs.types import msg_class
from vad_inspection.transport import DEFAULT, LATCHED, Bus, create_bus

IMAGE = "sensor_msgs/msg/Image"
STRING = "std_msgs/msg/String"
READY_TOPIC = "/ready"
CONTROL_TOPIC = "/control"


@functools.lru_cache(maxsize=4)
def _base(width: int, height: int) -> np.ndarray:
    return np.random.default_rng(12345).integers(0, 256, (height, width, 3), dtype=np.uint8)


def frame_pixels(index: int, width: int, height: int) -> np.ndarray:
    """Frame ``index``: deterministic pixels that differ from frame to frame."""
    return _base(width, height) + np.uint8(index % 256)


def make_image(index: int, width: int, height: int) -> Any:
    """sensor_msgs/Image rgb8, frame_id = index, stamp = now (for latency)."""
    return frame_to_msg(
        Frame(frame_pixels(index, width, height), "rgb8", time.time_ns(), str(index))
    )


def checksum(data: Any) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(data)).cast("B"))


def expected_checksums(count: int, width: int, height: int) -> list[int]:
    return [checksum(frame_pixels(i, width, height)) for i in range(count)]


def announce_ready(bus: Bus, name: str, subscription: Any, timeout: float = 45.0) -> bool:
    """Publish ``name`` on /ready once ``subscription`` has matched a publisher."""
    ready = bus.create_publisher(READY_TOPIC, STRING, LATCHED)
    if not bus.spin_until(lambda: subscription.publisher_count > 0, timeout):
        return False
    ready.publish(msg_class(STRING)(data=name))
    return True


def _bus(name: str) -> Bus:
    bus = create_bus("dds", name)
    bus.install_signal_handlers()
    return bus


def run_pub(args: argparse.Namespace) -> int:
    with _bus("peer_pub") as bus:
        pub = bus.create_publisher(args.topic, IMAGE, DEFAULT)
        names: set[str] = set()
        bus.create_subscription(READY_TOPIC, STRING, lambda m: names.add(m.data), LATCHED)
        matched = args.ready if args.matched is None else args.matched
        if not bus.spin_until(
            lambda: len(names) >= args.ready and pub.subscription_count >= matched, args.timeout
        ):
            print(f"pub: only {sorted(names)} ready after {args.timeout} s", flush=True)
            bus.spin()  # still wait for SIGTERM: the test decides
            return 0
        sent = 0

        def tick() -> None:
            nonlocal sent
            if sent < args.count:
                pub.publish(make_image(sent, args.width, args.height))
                sent += 1
                if sent == args.count:
                    print(f"pub: sent {sent}", flush=True)

        bus.create_timer(1.0 / args.rate, tick)
        bus.spin()
    return 0


def run_sub(args: argparse.Namespace) -> int:
    frames: list[tuple[int, int]] = []
    out = Path(args.out)

    def write_result() -> None:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"name": args.name, "frames": frames, "dropped": sub.dropped}))
        os.replace(tmp, out)

    with _bus(args.name) as bus:

        def on_image(msg: Any) -> None:
            frames.append((int(msg.header.frame_id), checksum(msg.data)))
            if len(frames) == args.count:
                write_result()

        sub = bus.create_subscription(args.topic, IMAGE, on_image, DEFAULT)
        announce_ready(bus, args.name, sub, args.timeout)
        bus.spin()
        if len(frames) != args.count:
            write_result()  # partial, so the test can say what arrived
    return 0


def run_relay(args: argparse.Namespace) -> int:
    with _bus(args.name) as bus:
        pub = bus.create_publisher(args.topic_out, IMAGE, DEFAULT)
        sub = bus.create_subscription(args.topic_in, IMAGE, pub.publish, DEFAULT)
        # downstream first: only announce once the relay's own output is being listened to
        bus.spin_until(lambda: pub.subscription_count > 0, args.timeout)
        announce_ready(bus, args.name, sub, args.timeout)
        bus.spin()
    return 0


def run_node(args: argparse.Namespace) -> int:
    bus = create_bus("dds", args.name, namespace=args.namespace)
    bus.install_signal_handlers()
    with bus:
        pub = bus.create_publisher(args.topic, STRING, DEFAULT)

        def on_control(msg: Any) -> None:
            if msg.data == "destroy" and pub in bus.publishers:
                pub.destroy()
                print("node: publisher destroyed", flush=True)

        bus.create_subscription(CONTROL_TOPIC, STRING, on_control, LATCHED)
        print("node: up", flush=True)
        bus.spin()
    return 0


class Peers:
    """Peer processes of one test: started with the test's environment, always reaped."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str) -> subprocess.Popen:
        log = open(self.tmp_path / f"peer{len(self.procs)}.log", "w")  # noqa: SIM115
        cmd = [sys.executable, str(Path(__file__).resolve()), *args]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.args[2:]}:\n" + Path(p.log_path).read_text()  # type: ignore[attr-defined]
            for p in self.procs
        )

    def stop_all(self, timeout: float = 10.0) -> list[int | None]:
        """SIGTERM every peer; their exit codes (None: had to be killed)."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                codes.append(p.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                codes.append(None)
        return codes


@contextlib.contextmanager
def peers(tmp_path: Path) -> Iterator[Peers]:
    group = Peers(tmp_path)
    try:
        yield group
    finally:
        for p in group.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["pub", "sub", "relay", "node"])
    parser.add_argument("--topic", default="/images")
    parser.add_argument("--topic-in", default="/images")
    parser.add_argument("--topic-out", default="/relayed")
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--ready", type=int, default=1, help="ready names to wait for")
    parser.add_argument("--matched", type=int, default=None, help="matched readers (--ready)")
    parser.add_argument("--out", default="result.json")
    parser.add_argument("--name", default="peer_sub")
    parser.add_argument("--namespace", default=None)
    parser.add_argument(
        "--timeout",
        type=float,
        default=45.0,
        help="how long to wait for peers (a loaded 2-core box starts a Python process slowly)",
    )
    args = parser.parse_args(argv)
    roles = {"pub": run_pub, "sub": run_sub, "relay": run_relay, "node": run_node}
    return roles[args.role](args)


if __name__ == "__main__":
    sys.exit(main())
