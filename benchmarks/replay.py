"""The bag player's throughput, and a closed-loop replay into the detector, in one run.

    python benchmarks/replay.py                  # lunar_orbit bag, local and dds
    python benchmarks/replay.py --rate-hz 25    # the scenario's own 244 frames

1. **player alone, as fast as possible** (``rate`` 0): the ``lunar_orbit`` scenario (640x480
   mono8 frames with CameraInfo, /tf and /clock, no depth) played by the player node; a
   subscriber counts the camera frames that arrive. ``local``: the subscriber on the in-process
   bus; ``dds``: the subscriber in another process over Cyclone DDS (loopback). Figures: frames
   per second out of the player and frames received (the bag at 200 Hz: about 900 frames).
   Targets: >= 500 frames/s local, >= 200 over DDS.
2. **closed-loop replay** (``vad-inspection replay``) of the same bag into PaDiM (MobileNetV2,
   seeded random weights, 128 px, fitted on LROC NAC train-split terrain tiles): frames/s,
   latency p50/p90, missed frames (must be 0), local and dds, and the same scores twice
   (determinism), side by side.

Figures go to ``benchmarks/results/replay.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vad_inspection.cli import main as cli  # noqa: E402
from vad_inspection.nodes.player import PlayerNode  # noqa: E402
from vad_inspection.transport import QoS, create_bus  # noqa: E402
from vad_inspection.transport.dds import use_loopback_config  # noqa: E402
from vad_inspection.transport.qos import Reliability  # noqa: E402

DEEP = QoS(Reliability.BEST_EFFORT, depth=1000)
COUNTER = """
import sys, time
from vad_inspection.transport import create_bus, QoS
from vad_inspection.transport.qos import Reliability
bus = create_bus("dds", "counter")
n = [0]
bus.create_subscription("/camera/image_raw", "sensor_msgs/msg/Image",
                        lambda d: n.__setitem__(0, n[0] + 1),
                        QoS(Reliability(sys.argv[2]), depth=1000), raw=True)
print("ready", flush=True)
last, idle = 0, time.monotonic()
while time.monotonic() - idle < float(sys.argv[1]):
    bus.spin_once(0.05)
    if n[0] != last:
        last, idle = n[0], time.monotonic()
print(n[0], flush=True)
bus.shutdown()
"""


def play_alone(bag: Path, transport: str, rate: float = 0.0, reliable: bool = False) -> dict:
    """Play the bag once; count what arrives. ``reliable``: offer and request the camera
    reliably (DDS then holds the player back instead of dropping what the reader cannot take)."""
    reliability = "reliable" if reliable else "best_effort"
    params = {"bag": str(bag), "rate": rate, "clock": True,
              "qos_overrides": [f"/camera/image_raw={reliability}"]}  # fmt: skip
    options: dict[str, Any] = {}
    child = None
    received = [0]
    if transport == "local":
        from vad_inspection.transport.local import LocalGraph

        options["graph"] = LocalGraph()
        sub_bus = create_bus("local", "counter", **options)
        sub_bus.create_subscription(
            "/camera/image_raw", "sensor_msgs/msg/Image",
            lambda _d: received.__setitem__(0, received[0] + 1), DEEP, raw=True,
        )  # fmt: skip
    else:
        child = subprocess.Popen([sys.executable, "-c", COUNTER, "3", reliability],
                                 stdout=subprocess.PIPE,
                                 text=True, env=os.environ.copy())  # fmt: skip
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    bus = create_bus(transport, "player", parameters=params, **options)
    node = PlayerNode(bus)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            bus.spin_once(0.01)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    assert node.trigger("configure"), node.last_error
    if child is not None:
        pub = next(p for p in bus.publishers if p.topic == "/camera/image_raw")
        pub.wait_for_subscribers(1, 30)
        time.sleep(0.5)
    t0 = time.monotonic()
    node.trigger("activate")
    while not node.finished.is_set():
        if transport == "local":
            sub_bus.spin_once(0.001)
        else:
            time.sleep(0.005)
    elapsed = time.monotonic() - t0
    if transport == "local":
        sub_bus.spin_once(0.1)
        sub_bus.shutdown()
    else:
        received[0] = int(child.communicate(timeout=60)[0].strip().splitlines()[-1])
    stop.set()
    spinner.join(5)
    node.close()
    bus.shutdown()
    sent = node.counts["frames"]
    return {"transport": transport, "rate": rate, "qos": reliability, "frames_sent": sent,
            "frames_received": received[0], "seconds": elapsed, "fps": sent / elapsed}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--passes", type=int, default=2, help="lunar_orbit ground tracks")
    parser.add_argument("--rate-hz", type=float, default=200.0,
                        help="lunar_orbit frame rate: 200 Hz gives about 900 frames")  # fmt: skip
    args = parser.parse_args()
    use_loopback_config()
    work = Path(tempfile.mkdtemp(prefix="vad-replay-bench-"))
    bag, model = work / "moon", work / "terrain.vad"
    cli(["sim", "lunar_orbit", "-o", str(bag), "--data-root", str(args.data_root), "--no-depth",
         "--set", f"passes={args.passes}", "--set", f"rate_hz={args.rate_hz}",
         "--set", "width=640", "--set", "height=480"])  # fmt: skip
    cli(["fit", "--method", "padim", "--data",
         f"lroc_nac:{args.data_root}/lroc_nac?split=train&tile=128&min_diameter=100",
         "--size", "128", "--max-train", "200", "-o", str(model), "--no-progress"])  # fmt: skip
    results: dict[str, Any] = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "python": platform.python_version(),
        "bag": f"lunar_orbit at {args.rate_hz:g} Hz (640x480 mono8, CameraInfo, /tf, /clock; "
        "no depth)",
        "player": [
            *(play_alone(bag, t) for t in ("local", "dds", "local", "dds")),
            play_alone(bag, "dds", reliable=True),
            play_alone(bag, "dds", rate=1.0),  # the bag's own 200 Hz, best effort
            play_alone(bag, "dds", rate=2.5),  # 500 Hz
        ],
        "replay": [],
    }
    for transport in ("local", "dds", "local"):
        out = work / f"replay_{transport}_{len(results['replay'])}"
        cli(["replay", str(bag), "--model", str(model), "-o", str(out), "--transport", transport,
             "--no-progress"])  # fmt: skip
        report = json.loads((out / "report.json").read_text())
        run = report["run"]
        results["replay"].append({
            "transport": transport, "frames": run["frames_sent"], "missed": run["missed"],
            "fps": run["mean_rate_hz"], "latency_ms": run["latency_ms"],
            "jitter_ms": run["jitter_ms"], "cpu_cores": run["cpu_cores"],
            "image_auroc": report["metrics"]["image_auroc"],
            "scores": [f["score"] for f in report["frames"]],
        })  # fmt: skip
    replays = results["replay"]
    results["deterministic"] = replays[0]["scores"] == replays[2]["scores"]
    for r in replays:
        r.pop("scores")
    out_dir = ROOT / "benchmarks/results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "replay.json").write_text(json.dumps(results, indent=1))
    lines = [
        f"# Replay benchmark\n\n{results['machine']}, Python {results['python']}; "
        f"bag: {results['bag']}\n",
        "| player | rate | QoS | frames sent | received | frames/s out |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in results["player"]:
        rate = f"{p['rate']:g}x" if p["rate"] else "max"
        lines.append(f"| {p['transport']} | {rate} | {p['qos']} | {p['frames_sent']} | "
                     f"{p['frames_received']} | {p['fps']:.0f} |")  # fmt: skip
    lines += [
        "",
        "| closed-loop replay | frames | missed | fps | latency p50 / p90 ms | jitter ms | "
        "CPU cores | image AUROC |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in replays:
        lat = r["latency_ms"]
        lines.append(f"| {r['transport']} | {r['frames']} | {r['missed']} | {r['fps']:.1f} | "
                     f"{lat['p50']:.1f} / {lat['p90']:.1f} | {r['jitter_ms']:.1f} | "
                     f"{r['cpu_cores']:.2f} | {r['image_auroc']:.3f} |")  # fmt: skip
    lines.append(
        f"\nSame scores in both local closed-loop runs: {results['deterministic']}. "
        "Caveat: PaDiM on seeded random MobileNetV2 weights; AUROC is a floor."
    )
    (out_dir / "replay.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
