"""The detector node as a robot runs it: its own process over DDS, a 640x480 rgb8 camera at 30 Hz.

    python benchmarks/detector.py                    # fit on the robot, 30 Hz for 20 s, flood
    python benchmarks/detector.py --seconds 10 --size 128

This process is the camera and the operator; `vad-inspection run detector --transport dds` is the
node, started with no model. Frames are real magnetic-tile images (MT_Free for normal material,
the defect classes for one frame in ten) resized to 640x480 rgb8, as a camera over a conveyor
would see them. Three phases, one run:

1. **learn normal on the robot**: ``~/fit`` is called over the service, then ``--fit-frames``
   normal frames are streamed at 30 Hz; the node collects them, fits PatchCore (MobileNetV2,
   seeded random weights, ``--size`` px), calibrates on a fifth held out, saves and swaps the
   model in. The fit time is the node's own (from its log), and the wall time from the last frame
   sent to the first score received is given beside it.
2. **30 Hz stream** for ``--seconds``: per frame, latency = arrival of its score here minus the
   stamp taken just before publishing (one host clock); frames scored against sent (the node keeps
   only the newest frame while busy, so the rest is "missed", by design, and counted by the node
   too); jitter = standard deviation of the intervals between scores; CPU of the node process
   (user + system time over wall time, from /proc, 1.0 = one core).
3. **flood**: frames published at 100 Hz for ``--seconds / 2``; the rate of scores out is the
   node's maximum rate on this machine.

Beside them, in this process, the same model's bare per-frame call (``Detector.__call__``: the
floor the node adds transport and publishing to) on the same frames, so the node's overhead is a
ratio measured in one run. Figures go to ``benchmarks/results/detector.{md,json}``.

Caveat: random backbone weights (no pretrained ones can be downloaded here), so the scores show
the pipeline working, not the detection quality of a pretrained PatchCore.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vad_inspection.eval.resources import ProcessCpu  # noqa: E402
from vad_inspection.msgs.defaults import new_message  # noqa: E402
from vad_inspection.msgs.image import Frame, frame_to_msg  # noqa: E402
from vad_inspection.msgs.time import stamp_to_ns  # noqa: E402
from vad_inspection.transport import SENSOR_DATA, create_bus  # noqa: E402
from vad_inspection.transport.dds import loopback_config_path  # noqa: E402
from vad_inspection.vad.detector import load_detector  # noqa: E402

WIDTH, HEIGHT = 640, 480
NS = 1_000_000_000


def camera_frames(data: Path, count: int, defect_every: int, seed: int) -> list[np.ndarray]:
    """``count`` rgb8 640x480 frames of magnetic tile; every ``defect_every``-th a defective one."""
    free = sorted((data / "MT_Free" / "Imgs").glob("*.jpg"))
    broken = sorted(p for d in data.glob("MT_*") if d.name != "MT_Free"
                    for p in (d / "Imgs").glob("*.jpg"))  # fmt: skip
    if not free or not broken:
        raise SystemExit(f"no magnetic-tile images under {data} (see ../shared/data/README.md)")
    rng = random.Random(seed)
    frames = []
    for i in range(count):
        path = rng.choice(broken if defect_every and i % defect_every == defect_every - 1 else free)
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise SystemExit(f"cannot read {path}")
        frames.append(np.repeat(cv2.resize(gray, (WIDTH, HEIGHT))[..., None], 3, axis=2))
    return frames


def stream(bus: Any, pub: Any, frames: list[np.ndarray], rate: float, scores: list) -> dict:
    """Publish ``frames`` at ``rate`` on a fixed schedule; wait for the stragglers; figures."""
    start_count = len(scores)
    sent: dict[int, int] = {}
    period = 1.0 / rate
    t0 = time.monotonic()
    for i, image in enumerate(frames):
        due = t0 + i * period
        while (left := due - time.monotonic()) > 0:
            bus.spin_once(min(left, 0.005))
        stamp = time.time_ns()
        pub.publish(frame_to_msg(Frame(image, "rgb8", stamp, "camera_optical")))
        sent[stamp] = i
    sent_end = time.monotonic()
    wall = sent_end - t0
    bus.spin_until(lambda: False, 1.5)  # the last frames' scores
    got = scores[start_count:]
    latency = np.array([(arrival - stamp_to_ns(msg.header.stamp)) / 1e6 for msg, arrival in got
                        if stamp_to_ns(msg.header.stamp) in sent])  # fmt: skip
    arrivals = np.array([arrival for _, arrival in got]) / 1e9
    intervals = np.diff(arrivals) * 1e3 if len(arrivals) > 2 else np.zeros(1)
    return {
        "sent": len(frames),
        "scored": len(got),
        "missed_pct": 100.0 * (1 - len(got) / len(frames)),
        "rate_in_hz": len(frames) / wall,
        "rate_out_hz": float(len(got) / max(arrivals[-1] - arrivals[0], 1e-9))
        if len(got) > 1
        else 0.0,
        "latency_ms_p50": float(np.median(latency)) if len(latency) else None,
        "latency_ms_p90": float(np.percentile(latency, 90)) if len(latency) else None,
        "latency_ms_max": float(latency.max()) if len(latency) else None,
        "interval_ms_p50": float(np.median(intervals)),
        "jitter_ms_std": float(np.std(intervals)),
        "wall_s": wall,
        "sent_end": sent_end,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/magnetic_tile")
    parser.add_argument("--size", type=int, default=256, help="model input size (px)")
    parser.add_argument("--fit-frames", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the 30 Hz phase")
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument(
        "--sweep",
        default="30,35,40,45,50",
        help="input rates (Hz) tried for the highest with under 5 %% missed",
    )
    parser.add_argument("--sweep-seconds", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/detector")
    args = parser.parse_args()

    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 230)))
    os.environ.setdefault("CYCLONEDDS_URI", loopback_config_path().as_uri())
    n_stream = int(args.seconds * args.rate)
    n_flood = int(args.seconds / 2 * 100)
    print(f"loading {args.fit_frames + n_stream + n_flood} frames from {args.data} ...", flush=True)
    fit_frames = camera_frames(args.data, args.fit_frames, 0, args.seed)
    test_frames = camera_frames(args.data, n_stream, 10, args.seed + 1)
    flood_frames = camera_frames(args.data, n_flood, 10, args.seed + 2)

    workdir = Path(tempfile.mkdtemp(prefix="vad-detector-bench-"))
    model_path = workdir / "learnt.vad"
    log_path = workdir / "detector.log"
    command = [
        sys.executable, "-m", "vad_inspection.cli", "run", "detector", "--transport", "dds",
        "-p", "autostart:=true", "-p", f"fit_frames:={args.fit_frames}",
        "-p", f"fit_size:={args.size}", "-p", f"fit_output:={model_path}",
        "-r", "image:=/camera/image_raw",
    ]  # fmt: skip
    log = open(log_path, "w")  # noqa: SIM115 -- the child writes to it for the whole run
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    cpu = ProcessCpu(proc.pid)
    results: dict[str, Any] = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or 'cpu'})",
        "python": platform.python_version(),
        "frames": f"{WIDTH}x{HEIGHT} rgb8, magnetic tile (1 in 10 defective in the streams)",
        "model": f"PatchCore MobileNetV2 (seeded random weights), {args.size} px, learnt by ~/fit",
    }
    try:
        with create_bus("dds", "camera") as bus:
            scores: list[tuple[Any, int]] = []
            bus.create_subscription(
                "/detector/score", "vision_msgs/msg/Classification",
                lambda msg: scores.append((msg, time.time_ns())),
            )  # fmt: skip
            pub = bus.create_publisher("/camera/image_raw", "sensor_msgs/msg/Image", SENSOR_DATA)
            fit = bus.create_client("/detector/fit", "std_srvs/srv/Trigger")
            if not (fit.wait_for_service(60) and pub.wait_for_subscribers(1, 60)):
                raise SystemExit(f"the detector did not come up:\n{log_path.read_text()}")
            reply = fit.call(new_message("std_srvs/srv/Trigger_Request"), 30)
            print(f"~/fit: {reply.message}", flush=True)

            # 1. learn normal on the robot
            collected = stream(bus, pub, fit_frames, args.rate, scores)
            t_last = collected.pop("sent_end")
            probe = test_frames[0]
            while not model_path.exists() or not scores:
                if time.monotonic() - t_last > 600:
                    raise SystemExit(f"no model after 600 s:\n{log_path.read_text()}")
                pub.publish(frame_to_msg(Frame(probe, "rgb8", time.time_ns(), "camera_optical")))
                bus.spin_until(lambda: bool(scores), 0.2)
            ready_s = time.monotonic() - t_last
            match = re.search(r"learnt normal from (\d+) frames \((\d+) held out\) in ([\d.]+) s",
                              log_path.read_text())  # fmt: skip
            results["fit"] = {
                "frames_sent": collected["sent"],
                "train": int(match.group(1)) if match else None,
                "held_out": int(match.group(2)) if match else None,
                "node_fit_s": float(match.group(3)) if match else None,
                "last_frame_to_first_score_s": ready_s,
            }
            print(f"fit: {results['fit']}", flush=True)
            bus.spin_until(lambda: False, 1.0)
            scores.clear()

            # 2. the camera at 30 Hz
            c0, w0 = cpu.seconds(), time.monotonic()
            results["stream"] = stream(bus, pub, test_frames, args.rate, scores)
            del results["stream"]["sent_end"]
            results["stream"]["cpu_cores"] = (cpu.seconds() - c0) / (time.monotonic() - w0)
            print(f"stream: {results['stream']}", flush=True)
            flagged = [i for i, (m, _) in enumerate(scores) if m.results[0].score > 0.5]
            results["stream"]["flagged"] = len(flagged)

            # 3. flood at 100 Hz
            scores.clear()
            c0, w0 = cpu.seconds(), time.monotonic()
            results["flood"] = stream(bus, pub, flood_frames, 100.0, scores)
            del results["flood"]["sent_end"]
            results["flood"]["cpu_cores"] = (cpu.seconds() - c0) / (time.monotonic() - w0)
            print(f"flood: {results['flood']}", flush=True)

            # 4. the highest input rate with under 5 % missed
            results["sweep"] = {}
            for rate in (float(r) for r in args.sweep.split(",") if r):
                scores.clear()
                frames = flood_frames[: int(rate * args.sweep_seconds)]
                figures = stream(bus, pub, frames, rate, scores)
                del figures["sent_end"]
                results["sweep"][f"{rate:g}"] = figures
                print(f"{rate:g} Hz: {figures['missed_pct']:.1f} % missed", flush=True)
            ok = [float(k) for k, v in results["sweep"].items() if v["missed_pct"] < 5.0]
            results["highest_rate_under_5pct_missed_hz"] = max(ok) if ok else None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            results["exit_code"] = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            results["exit_code"] = "killed"
        log.close()

    # the floor: the same model file called in this process on the same frames
    detector = load_detector(model_path)
    detector.warm_up()
    times = []
    for image in test_frames[: min(len(test_frames), 150)]:
        start = time.perf_counter()
        detector(image, "rgb8")
        times.append((time.perf_counter() - start) * 1e3)
    results["bare_call_ms_p50"] = float(np.median(times))
    results["bare_call_ms_p90"] = float(np.percentile(times, 90))
    results["node_over_bare_p50"] = (
        results["stream"]["latency_ms_p50"] / results["bare_call_ms_p50"]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    args.out.with_suffix(".md").write_text(report(results))
    print(report(results))
    print(f"wrote {args.out.with_suffix('.md')} and .json; node log {log_path}")


def report(r: dict[str, Any]) -> str:
    s, f, fit = r["stream"], r["flood"], r["fit"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = [
        "# Detector node benchmark (benchmarks/detector.py)",
        "",
        f"Machine: {r['machine']}, Python {r['python']}. Frames: {r['frames']}. "
        f"Model: {r['model']}. Node: its own process over the dds binding (Cyclone DDS, "
        "loopback profile), image QoS best effort.",
        "",
        "| phase | sent | scored | missed | in Hz | out Hz | latency p50 / p90 / max (ms) "
        "| jitter (ms) | node CPU (cores) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, x in (("30 Hz camera", s), ("flood (100 Hz)", f)):
        lines.append(
            f"| {name} | {x['sent']} | {x['scored']} | {x['missed_pct']:.1f} % "
            f"| {x['rate_in_hz']:.1f} | {x['rate_out_hz']:.1f} "
            f"| {ms(x['latency_ms_p50'])} / {ms(x['latency_ms_p90'])} / {ms(x['latency_ms_max'])} "
            f"| {x['jitter_ms_std']:.1f} | {x['cpu_cores']:.2f} |"
        )
    sweep = r.get("sweep", {})
    if sweep:
        lines += [
            "",
            "Input rate sweep ("
            + ", ".join(
                f"{k} Hz: {v['missed_pct']:.1f} % missed, p50 {ms(v['latency_ms_p50'])} ms"
                for k, v in sweep.items()
            )
            + f"): highest rate with under 5 % missed {r['highest_rate_under_5pct_missed_hz']} Hz.",
        ]
    lines += [
        "",
        f"Bare per-frame call of the same model in one process (decode excluded): "
        f"p50 {r['bare_call_ms_p50']:.1f} ms, p90 {r['bare_call_ms_p90']:.1f} ms; node latency "
        f"p50 / bare p50 = {r['node_over_bare_p50']:.2f}.",
        "",
        f"Learning normal on the robot (~/fit): {fit['frames_sent']} frames streamed at 30 Hz, "
        f"fitted on {fit['train']} with {fit['held_out']} held out in {fit['node_fit_s']} s "
        f"(node's own timing); last frame sent to first score of the new model: "
        f"{fit['last_frame_to_first_score_s']:.1f} s.",
        "",
        "Caveat: seeded random backbone weights; scores show the pipeline, not detection quality.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
