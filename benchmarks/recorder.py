"""The recorder node's CPU while it records a 640x480 camera at 30 Hz with the detector's outputs.

    python benchmarks/recorder.py                       # 60 s per configuration, three of them
    python benchmarks/recorder.py --seconds 20 --configs always_all,none_all

Target (issue): recording a 640x480 stream at 30 Hz with detector outputs: no frame lost,
recorder CPU under half a core.

The recorder runs as its own process (``vad-inspection run recorder --transport dds``, Cyclone
DDS on the loopback profile, a random ``ROS_DOMAIN_ID``), autostarted, its store and downlink
folders in a temporary directory, a downlink window every 10 s of 2 MB (the first 10 s after
activation), so windows are part of the load. This process plays camera and detector: for
``--seconds`` it publishes, paced by the wall clock at 30 Hz, a 640x480 rgb8 frame on ``/image``
(sensor-data QoS; a textured pattern made once and shifted frame to frame, so no two frames are
equal), then for the same stamp a ``vision_msgs/Classification`` on ``/detector/score`` and a
``Detection2DArray`` on ``/detector/detections`` (default QoS; in that order, as the detector
node publishes them). 5 % of frames are flagged, in bursts of 1 s every 20 s (the first 5 s in):
normalised score 0.9, a bright defect painted in the frame, one box around it and a tag per
burst.

Measured over the publishing period: the recorder process's CPU (user + system from /proc,
cores = CPU seconds / wall seconds; overall and the median of 5-second slices), its peak RSS
(VmHWM), the bytes it wrote to the storage layer (/proc/<pid>/io), this process's own CPU and
the whole machine's (both cores are shared). Then, after the recorder's ring buffer has timed
out (7 s) and three unscored frames pushed out what it still held, from its ``~/status``
counters: frames decided (accepted as routine, flagged or post-event, or throttled; pre-event
frames were throttled first and are not counted twice), never scored (reached the recorder,
no score matched them) and scores without a frame. Frames that reached the recorder = decided +
never scored; lost = published - decided. After the recorder exits its store is reopened: items
and bytes held, flagged items kept with their tag and box, windows written.

Configurations (``--configs``, comma separated): ``always_throttled`` (sync=always, one routine
frame per 5 s: the defaults), ``always_all`` (sync=always, routine_period_s=0: every frame
stored, about 27 MB/s to disk), ``none_all`` (sync=none, every frame stored),
``none_throttled``. Figures go to ``benchmarks/results/recorder.{md,json}`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vad_inspection.downlink.store import Store  # noqa: E402
from vad_inspection.eval.resources import ProcessCpu  # noqa: E402
from vad_inspection.msgs import serialize  # noqa: E402
from vad_inspection.msgs.anomaly import parse_tags  # noqa: E402
from vad_inspection.msgs.defaults import new_message  # noqa: E402
from vad_inspection.msgs.image import Frame, frame_to_msg  # noqa: E402
from vad_inspection.msgs.time import header  # noqa: E402
from vad_inspection.transport import DEFAULT, LATCHED, SENSOR_DATA, create_bus  # noqa: E402
from vad_inspection.transport.bag import BagReader  # noqa: E402
from vad_inspection.transport.dds import use_loopback_config  # noqa: E402

NS = 1_000_000_000
IMAGE = "sensor_msgs/msg/Image"
WIDTH, HEIGHT, RATE_HZ = 640, 480, 30.0
BURST_EVERY, BURST_FRAMES, BURST_FIRST = 600, 30, 150  # frames: 1 s flagged every 20 s, from 5 s
SLICE_S = 5.0
WINDOW = {"window_period_s": 10.0, "window_bytes": 2_000_000, "first_window_s": 10.0}
RING_KEEP_S = 7.0  # the recorder drops a frame from its ring this long after receipt (pre 2 s + 5)
CONFIGS: dict[str, dict[str, Any]] = {
    "always_throttled": {"sync": "always", "routine_period_s": 5.0},
    "always_all": {"sync": "always", "routine_period_s": 0.0},
    "none_all": {"sync": "none", "routine_period_s": 0.0},
    "none_throttled": {"sync": "none", "routine_period_s": 5.0},
}
DEFAULT_CONFIGS = "always_throttled,always_all,none_all"
DECIDED = ("accepted_", "throttled", "refused_")  # one decision per frame (see the docstring)


# -- the stream ------------------------------------------------------------------------------
def texture(rng: np.random.Generator) -> np.ndarray:
    """A terrain-like rgb8 pattern (blobs at three scales and fine grain), made once."""
    grey = np.zeros((HEIGHT, WIDTH), np.float32)
    for cell, weight in ((96, 0.5), (24, 0.3), (6, 0.15)):
        small = rng.random((HEIGHT // cell + 2, WIDTH // cell + 2)).astype(np.float32)
        grey += weight * cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    grey += 0.05 * rng.random((HEIGHT, WIDTH), dtype=np.float32)
    grey = np.clip(grey * 200.0 + 20.0, 0, 255)
    return np.stack([grey, grey * 0.92, grey * 0.85], axis=2).astype(np.uint8)


def flagged(i: int) -> bool:
    return BURST_FIRST <= i % BURST_EVERY < BURST_FIRST + BURST_FRAMES


def defect_box(i: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the defect in flagged frame i: it drifts across the frame in its burst."""
    k = i % BURST_EVERY - BURST_FIRST
    return (100 + 12 * k, 180 + 3 * k, 40, 32)


class Stream:
    """Frame i of the camera and the detector's score and detections for it."""

    def __init__(self, bus: Any, start_ns: int) -> None:
        self.bus, self.start_ns = bus, start_ns
        self.pattern = texture(np.random.default_rng(0))
        self.rng = np.random.default_rng(1)
        self.image = bus.create_publisher("/image", IMAGE, SENSOR_DATA)
        self.score = bus.create_publisher(
            "/detector/score", "vision_msgs/msg/Classification", DEFAULT
        )
        self.dets = bus.create_publisher(
            "/detector/detections", "vision_msgs/msg/Detection2DArray", DEFAULT
        )
        self.publishers = [self.image, self.score, self.dets]
        self.frame_bytes = len(serialize(self.message(0), IMAGE, bus.distro))

    def stamp(self, i: int) -> int:
        return self.start_ns + i * NS // round(RATE_HZ)

    def message(self, i: int, bad: bool = False) -> Any:
        """The camera's sensor_msgs/Image i: the pattern shifted, a defect painted if bad."""
        pixels = np.roll(self.pattern, (i % HEIGHT, (7 * i) % WIDTH), axis=(0, 1))
        if bad:
            x, y, w, h = defect_box(i)
            pixels[y : y + h, x : x + w] = (250, 240, 90)
        return frame_to_msg(Frame(pixels, "rgb8", self.stamp(i), "camera"), self.bus.distro)

    def frame(self, i: int, scored: bool = True) -> None:
        stamp, distro = self.stamp(i), self.bus.distro
        bad = flagged(i) and scored
        self.image.publish(self.message(i, bad))
        if not scored:
            return
        head = header(stamp, "camera", distro)
        normalised = 0.9 if bad else float(self.rng.uniform(0.05, 0.35))
        raw = 6.0 + normalised if bad else 1.0 + normalised
        results = [
            new_message("vision_msgs/msg/ObjectHypothesis", distro, class_id=c, score=s)
            for c, s in (("anomaly", normalised), ("anomaly_raw", raw))
        ]
        self.score.publish(
            new_message("vision_msgs/msg/Classification", distro, header=head, results=results)
        )
        detections = []
        if bad:
            x, y, w, h = defect_box(i)
            bbox = new_message(
                "vision_msgs/msg/BoundingBox2D", distro, size_x=float(w), size_y=float(h)
            )
            bbox.center.position.x, bbox.center.position.y = x + w / 2, y + h / 2
            tag = f"D{i // BURST_EVERY + 1:04d}"
            detections.append(
                new_message("vision_msgs/msg/Detection2D", distro, header=head, bbox=bbox, id=tag)
            )
        self.dets.publish(
            new_message(
                "vision_msgs/msg/Detection2DArray", distro, header=head, detections=detections
            )
        )


# -- the recorder process --------------------------------------------------------------------
def start_recorder(params: dict[str, Any], log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "vad_inspection.cli", "run", "recorder", "--transport", "dds"]
    for key, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        command += ["-p", f"{key}:={text}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with open(log, "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)


def proc_value(pid: int, name: str, key: str) -> int:
    """A number from /proc/<pid>/<name> ("VmHWM: 123 kB" -> 123, "write_bytes: 5" -> 5)."""
    for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


class Status:
    """The recorder's latest ~/status values (strings), and how many arrived."""

    def __init__(self, bus: Any) -> None:
        self.values: dict[str, str] = {}
        self.received = 0
        self.sub = bus.create_subscription(
            "/recorder/status", "diagnostic_msgs/msg/DiagnosticArray", self._on, LATCHED
        )

    def _on(self, msg: Any) -> None:
        self.values = next(iter(parse_tags(msg).values()), {})
        self.received += 1

    def count(self, name: str) -> int:
        return int(self.values.get(f"count_{name}", 0))

    def counts(self) -> dict[str, int]:
        return {k[6:]: int(v) for k, v in self.values.items() if k.startswith("count_")}


def run_config(name: str, seconds: float, work: Path) -> dict[str, Any]:
    root = work / name
    root.mkdir()
    frames = round(seconds * RATE_HZ)
    frame_mb = (WIDTH * HEIGHT * 3 + 100) / 1e6
    params = {
        **CONFIGS[name],
        "store_dir": str(root / "store"),
        "downlink_dir": str(root / "downlink"),
        "quota_mb": round(frames * frame_mb * 1.5 + 500),  # every frame fits: nothing evicted
        "autostart": True,
        "status_period_s": 1.0,
        **WINDOW,
    }
    log = root / "recorder.log"
    child = start_recorder(params, log)
    bus = None
    try:
        bus = create_bus("dds", "bench_camera")
        status = Status(bus)
        stream = Stream(bus, time.time_ns())
        deadline = time.monotonic() + 60
        while not (status.received and all(p.subscription_count for p in stream.publishers)):
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"recorder not up ({child.poll()}):\n{log.read_text()[-3000:]}")
            bus.spin_once(0.05)
        end = time.monotonic() + 1.0  # reliable endpoints: let discovery settle both ways
        while time.monotonic() < end:
            bus.spin_once(0.05)
        pid = child.pid
        cpu, own = ProcessCpu(pid), ProcessCpu()
        io0 = proc_value(pid, "io", "write_bytes")
        busy0, total0 = machine_busy()
        stream.start_ns = time.time_ns()
        t0 = time.monotonic()
        marks = [(t0, cpu.seconds())]
        own0 = own.seconds()
        late = []
        for i in range(frames):
            due = t0 + i / RATE_HZ
            while (wait := due - time.monotonic()) > 0:
                bus.spin_once(wait)
            late.append(time.monotonic() - due)
            stream.frame(i)
            if time.monotonic() >= marks[-1][0] + SLICE_S:
                marks.append((time.monotonic(), cpu.seconds()))
        wall = time.monotonic() - t0
        marks.append((time.monotonic(), cpu.seconds()))
        own_s = own.seconds() - own0
        busy1, total1 = machine_busy()
        written = proc_value(pid, "io", "write_bytes") - io0
        # let the ring buffer time out, then push out what it still holds with unscored frames
        end = time.monotonic() + RING_KEEP_S + 0.5
        while time.monotonic() < end:
            bus.spin_once(0.05)
        for k in range(3):
            stream.frame(frames + k, scored=False)
            bus.spin_once(0.1)
        seen = status.received
        end = time.monotonic() + 10
        while time.monotonic() < end and status.received < seen + 3:
            bus.spin_once(0.05)
        rss_mb = proc_value(pid, "status", "VmHWM") / 1024
        counts = status.counts()
        values = dict(status.values)
    finally:
        if bus is not None:
            bus.shutdown()
        stop(child)
    slices = [
        (c1 - c0) / (w1 - w0) for (w0, c0), (w1, c1) in pairwise(marks) if w1 - w0 >= SLICE_S / 2
    ]
    decided = sum(
        v for k, v in counts.items() if k.startswith(DECIDED) and k != "accepted_pre-event"
    )
    never_scored = counts.get("never_scored", 0)
    accepted = accepted_frames(root, params["quota_mb"])
    issued = sum(v for k, v in counts.items() if k.startswith("accepted_"))
    flagged_kept = [v for v in accepted.values() if v[0] == "flagged"]
    tagged = sum(1 for _why, tag, boxes in flagged_kept if tag and boxes)
    lost_at = None
    if params["routine_period_s"] == 0 and len(accepted) == issued:  # every decided frame
        lost_at = [round(i / RATE_HZ, 2) for i in range(frames) if stream.stamp(i) not in accepted]
    problems = [
        line for line in log.read_text().splitlines() if "[WARNING]" in line or "[ERROR]" in line
    ]
    windows = sorted((root / "downlink").glob("window_*"))
    result = {
        "config": name,
        "sync": params["sync"],
        "routine_period_s": params["routine_period_s"],
        "seconds": wall,
        "frames_published": frames,
        "publish_rate_hz": frames / wall,
        "publisher_late_ms_p99": 1e3 * float(np.percentile(late, 99)),
        "frames_flagged": sum(flagged(i) for i in range(frames)),
        "frames_reached": decided + never_scored,
        "frames_decided": decided,
        "frames_lost": frames - decided,
        "never_scored": never_scored,
        "score_without_frame": counts.get("score_without_frame", 0),
        "counts": counts,
        "cores": (marks[-1][1] - marks[0][1]) / wall,
        "cores_median_5s": statistics.median(slices) if slices else float("nan"),
        "cores_max_5s": max(slices) if slices else float("nan"),
        "cores_5s": slices,
        "peak_rss_mb": rss_mb,
        "written_mb": written / 1e6,
        "write_mb_s": written / 1e6 / wall,
        "frames_accepted": issued,
        "frames_accepted_found": len(accepted),
        "frame_bytes": stream.frame_bytes,
        "accepted_mb": issued * stream.frame_bytes / 1e6,
        "store_on_disk_mb": sum(os.path.getsize(f) for f in (root / "store").rglob("*")) / 1e6,
        "flagged_stored": len(flagged_kept),
        "flagged_stored_with_tag": tagged,
        "windows": len(windows),
        "windows_at_s": [
            round((int(w.name.split("_")[2]) - stream.start_ns) / NS, 2) for w in windows
        ],
        "windows_complete": sum((w / "metadata.yaml").exists() for w in windows),
        "last_window": {k[12:]: v for k, v in values.items() if k.startswith("last_window_")},
        "publisher_cores": own_s / wall,
        "machine_busy_cores": (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1),
        "frames_lost_at_s": lost_at,
        "recorder_log_problems": len(problems),
        "recorder_log_first_problems": problems[:5],
    }
    shutil.rmtree(root / "store", ignore_errors=True)  # gigabytes; the figures are kept
    shutil.rmtree(root / "downlink", ignore_errors=True)
    return result


def accepted_frames(root: Path, quota_mb: float) -> dict[int, tuple[str, str, bool]]:
    """Every frame the recorder accepted, stamp -> (why, tag, has a box): the items its store
    still holds (reopened after the recorder exited) and those its windows sent (the
    ``/downlink/meta`` records of each window's bag; a fully sent log segment is deleted)."""
    frames: dict[int, tuple[str, str, bool]] = {}
    for bag_dir in sorted((root / "downlink").glob("window_*")):
        with BagReader(bag_dir) as bag:
            for message in bag.messages(["/downlink/meta"]):
                for values in parse_tags(message.decode()).values():
                    boxes = values.get("boxes", "[]") not in ("[]", "")
                    frames[message.timestamp_ns] = (values.get("why", ""), values["tag"], boxes)
    store = Store(root / "store", round(quota_mb * 1e6), sync="none")
    try:
        for item in store.pending():
            why, boxes = item.meta.get("why", ""), bool(item.meta.get("boxes"))
            frames[item.stamp_ns] = (why, item.tag, boxes)
    finally:
        store.close()
    return frames


# -- report ----------------------------------------------------------------------------------
def report(results: dict[str, Any]) -> str:
    runs = results["runs"]
    lines = [
        "# Recorder benchmark\n",
        f"{results['machine']}, Python {results['python']}; {results['command']}; "
        f"{results['seconds']:g} s of 640x480 rgb8 at 30 Hz per configuration, each frame "
        "followed by its score and then its detections (the detector node's order); 5 % "
        "flagged, in bursts of 1 s every 20 s (from 5 s into the stream: 5-6 s, 25-26 s, ...) "
        "with a box and a tag; the recorder over Cyclone DDS (loopback) in its own process, "
        "default pre/post-event windows (2 s), a 2 MB downlink window every 10 s. Times are "
        "seconds into the stream; 'lost at' is known only where every decided frame is stored "
        "(routine period 0).\n",
        "## Frames\n",
        "| config | sync | routine period | published | rate Hz | reached recorder | decided | "
        "lost | never scored | score without frame | flagged stored (with tag+box) | "
        "lost at (s) | windows at (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r['config']} | {r['sync']} | {r['routine_period_s']:g} s | "
            f"{r['frames_published']} | {r['publish_rate_hz']:.2f} | {r['frames_reached']} | "
            f"{r['frames_decided']} | {r['frames_lost']} | {r['never_scored']} | "
            f"{r['score_without_frame']} | {r['flagged_stored']} "
            f"({r['flagged_stored_with_tag']}) | {spans(r['frames_lost_at_s'])} | "
            f"{', '.join(f'{t:.1f}' for t in r['windows_at_s'])} |"
        )
    lines += [
        "\n## Cost\n",
        "| config | recorder cores (overall) | median of 5-s slices | max 5-s slice | "
        "peak RSS MB | frames / MB stored | written MB/s | windows | publisher cores | "
        "machine busy cores |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r['config']} | {r['cores']:.2f} | {r['cores_median_5s']:.2f} | "
            f"{r['cores_max_5s']:.2f} | {r['peak_rss_mb']:.0f} | "
            f"{r['frames_accepted']} / {r['accepted_mb']:.0f} | {r['write_mb_s']:.1f} | "
            f"{r['windows']} | {r['publisher_cores']:.2f} | {r['machine_busy_cores']:.2f} |"
        )
    lines += ["", verdict(runs)]
    return "\n".join(lines) + "\n"


def spans(times: list[float] | None) -> str:
    """Stream times of lost frames as runs: "18.97-19.07 (4), 29.1"."""
    if times is None:
        return "n/a"
    runs: list[list[float]] = []
    for t in times:
        if runs and t - runs[-1][-1] < 1.5 / RATE_HZ:
            runs[-1].append(t)
        else:
            runs.append([t])
    return (
        ", ".join(
            f"{r[0]:.2f}" if len(r) == 1 else f"{r[0]:.2f}-{r[-1]:.2f} ({len(r)})" for r in runs
        )
        or "-"
    )


def untagged(runs: list[dict[str, Any]]) -> str:
    missing = sum(r["flagged_stored"] - r["flagged_stored_with_tag"] for r in runs)
    if not missing:
        return ""
    return (
        f"{missing} flagged frame(s) were stored without their tag and box: the recorder takes "
        "them from the detections it already has when the score arrives, and here (as from the "
        "detector node) the score is published first. "
    )


def verdict(runs: list[dict[str, Any]]) -> str:
    parts = []
    for r in runs:
        lost = r["frames_lost"]
        ok = lost == 0 and r["cores"] < 0.5
        parts.append(
            f"`{r['config']}`: {'met' if ok else 'not met'} ({lost} frame(s) lost, "
            f"{r['cores']:.2f} cores)"
        )
    return (
        "Target (issue): recording a 640x480 stream at 30 Hz with detector outputs: no frame "
        "lost, recorder CPU under half a core. " + "; ".join(parts) + ". "
        "Lost = published - decided by the recorder's own counters (accepted or throttled); "
        "reached = decided + never scored (frames the recorder held but no score matched). "
        + untagged(runs)
        + "Caveats: DDS on loopback on one machine (no network, but the same serialisation, "
        "fragmentation and copies); the publisher (camera and detector in one Python process, "
        "which serialises each frame) shares the 2 cores with the recorder; machine busy cores "
        "count every process on the machine (anything else running included), near 2 the "
        "recorder competed for CPU; the recorder's CPU excludes the kernel's writeback "
        "threads (sync=none leaves the flushing to them); 'written' is what the recorder sent "
        "to the storage layer (/proc/<pid>/io), about the frames stored plus WAL records."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="publishing per config")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"of {', '.join(CONFIGS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    use_loopback_config()
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    work = Path(tempfile.mkdtemp(prefix="vad-recorder-bench-"))
    command = "python benchmarks/recorder.py" + "".join(f" {a}" for a in sys.argv[1:])
    results: dict[str, Any] = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "python": platform.python_version(),
        "command": f"`{command}`",
        "seconds": args.seconds,
        "runs": [],
    }
    try:
        for name in names:
            print(f"{name}: {args.seconds:g} s ...", flush=True)
            r = run_config(name, args.seconds, work)
            results["runs"].append(r)
            print(
                f"  lost {r['frames_lost']} of {r['frames_published']}, "
                f"{r['cores']:.2f} cores (median 5 s {r['cores_median_5s']:.2f}), "
                f"RSS {r['peak_rss_mb']:.0f} MB, {r['write_mb_s']:.1f} MB/s",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recorder.json").write_text(json.dumps(results, indent=1))
    text = report(results)
    (args.out / "recorder.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
