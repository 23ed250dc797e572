"""``vad-inspection replay``: a bag through the player into the detector, scored against its truth.

The graph is the robot's: the :class:`~vad_inspection.nodes.player.PlayerNode` publishes the bag,
the :class:`~vad_inspection.nodes.detector.DetectorNode` scores it, and a collector listens to
the detector's ``~/score``, ``~/anomaly_map`` and ``~/defects`` as any other consumer would. On
``local`` all three share one process (in-process bus, CDR on every hop); on ``dds`` the
detector runs in its own process (``vad-inspection run detector``) over Cyclone DDS, as on a
robot. By default the player runs closed-loop as fast as the detector answers, so the run loses
no frame and repeats exactly; ``rate`` > 0 plays in (scaled) real time instead, where a slow
model misses frames and the report counts them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SetupError
from ..eval.resources import ProcessCpu
from ..msgs.anomaly import RAW_CLASS, parse_tags
from ..msgs.image import compressed_to_frame, msg_to_frame, to_rgb
from ..msgs.time import stamp_to_ns
from ..nodes.detector import DetectorNode
from ..nodes.player import PlayerNode
from ..transport import DEFAULT, LATCHED, SENSOR_DATA, Bus, create_bus
from ..transport.bag import BagReader
from ..viz import overlay
from . import scoring
from .html import GalleryItem
from .playback import IMAGE_TYPES

GALLERY = 6


@dataclass(frozen=True)
class ReplayConfig:
    bag: Path
    model: Path
    transport: str = "local"  # local | dds
    rate: float = 0.0  # 0: as fast as the detector answers
    closed_loop: bool = True
    timeout_s: float = 30.0  # longest wait for one frame's score (closed loop), or for the end
    threshold: float = 0.5
    match_radius_m: float = 0.15
    detector_params: tuple[tuple[str, Any], ...] = ()  # extra detector parameters


@dataclass
class GraphExtras:
    """More of the robot's graph around the detector, each node its own process over ``dds``
    (the hazard map, the recorder): ``nodes`` (executable, parameters, remappings); ``ready``
    topics (name, type) that must have delivered a message before the bag plays (a latched
    status); ``keep`` topics (name, type) whose last message is kept (in :attr:`last`);
    ``end_service`` a std_srvs/Trigger called once every frame is scored (a downlink window at
    the end of the pass; its reply in :attr:`reply`), then ``settle_s`` for the last outputs."""

    nodes: tuple[tuple[str, dict[str, Any], dict[str, str]], ...] = ()
    ready: tuple[tuple[str, str], ...] = ()
    keep: tuple[tuple[str, str], ...] = ()
    end_service: str = ""
    settle_s: float = 2.0
    last: dict[str, Any] = field(default_factory=dict)
    reply: Any = None
    logs: dict[str, str] = field(default_factory=dict)  # node -> its stderr, when it failed
    statuses: dict[str, dict[str, str]] = field(default_factory=dict)  # /diagnostics by name


@dataclass
class Streams:
    """What the bag holds for the detector."""

    image: str
    image_type: str
    camera_info: str | None
    depth: str | None
    frames: int
    duration_s: float
    topics: dict[str, str]


def find_streams(bag: BagReader) -> Streams:
    topics = bag.topics()
    counts = bag.message_counts()
    images = [t for t, typ in topics.items() if typ in IMAGE_TYPES and "depth" not in t]
    if not images:
        raise SetupError(f"{bag.path}: no camera topic (sensor_msgs Image or CompressedImage)")
    image = sorted(images, key=lambda t: (-counts.get(t, 0), t))[0]
    infos = [t for t, typ in topics.items() if typ == "sensor_msgs/msg/CameraInfo"]
    depths = [t for t, typ in topics.items() if typ == "sensor_msgs/msg/Image" and "depth" in t]
    first, last = bag.time_span()
    return Streams(
        image=image,
        image_type="compressed" if topics[image].endswith("CompressedImage") else "raw",
        camera_info=infos[0] if infos else None,
        depth=depths[0] if depths else None,
        frames=counts.get(image, 0),
        duration_s=(last - first) / 1e9,
        topics=topics,
    )


def bag_frames(path: Path, limit: int) -> tuple[list[np.ndarray], Streams]:
    """Up to ``limit`` camera frames of a bag, spread evenly over it: normal data to fit a model
    on (a clean pass of the scenario, a recorded patrol) with ``fit --from-bag``."""
    with BagReader(path) as bag:
        streams = find_streams(bag)
        step = max(1, streams.frames // max(limit, 1))
        decode = compressed_to_frame if streams.image_type == "compressed" else msg_to_frame
        frames = [
            np.array(decode(m.decode()).image, copy=True)
            for index, m in enumerate(bag.messages([streams.image]))
            if index % step == 0
        ][:limit]
    return frames, streams


def load_truth(bag: Path) -> tuple[dict[str, Any] | None, dict[int, np.ndarray]]:
    """``<bag>.truth.json`` and ``<bag>.masks.npz`` beside the bag, where they exist."""
    base = bag.with_suffix("") if bag.is_file() else bag
    truth_path = base.with_name(base.name + ".truth.json")
    masks_path = base.with_name(base.name + ".masks.npz")
    truth = json.loads(truth_path.read_text()) if truth_path.is_file() else None
    masks: dict[int, np.ndarray] = {}
    if masks_path.is_file():
        with np.load(masks_path) as stored:
            masks = {int(k): stored[k] for k in stored.files}
    return truth, masks


def sha256_of(path: Path) -> str:
    """Of a file, or of a bag directory's files in name order (so a copy hashes the same)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Collector:
    """The detector's outputs as they arrive, kept per frame stamp."""

    def __init__(self, bus: Bus, node: str, sent_ns: dict[int, int]) -> None:
        self.outcome = scoring.Outcome()
        self._sent = sent_ns
        self._maps: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self.subscriptions = [
            bus.create_subscription(f"/{node}/score", "vision_msgs/msg/Classification",
                                    self._on_score, DEFAULT),
            bus.create_subscription(f"/{node}/anomaly_map", "sensor_msgs/msg/Image",
                                    self._on_map, SENSOR_DATA),
            bus.create_subscription(f"/{node}/defects", "vision_msgs/msg/Detection3DArray",
                                    self._on_defects, DEFAULT),
            bus.create_subscription(f"/{node}/tags", "diagnostic_msgs/msg/DiagnosticArray",
                                    self._on_tags, LATCHED),
        ]  # fmt: skip
        self.fused: dict[str, tuple[float, float, float]] = {}

    @property
    def scored(self) -> int:
        return len(self.outcome.frames)

    def _on_score(self, msg: Any) -> None:
        now = time.monotonic_ns()
        stamp = stamp_to_ns(msg.header.stamp)
        score = float(msg.results[0].score) if msg.results else None
        raw = next((float(r.score) for r in msg.results if r.class_id == RAW_CLASS), None)
        sent = self._sent.get(stamp)
        with self._lock:
            self.outcome.frames[stamp] = scoring.FrameOutcome(
                stamp,
                score,
                None if sent is None else (now - sent) / 1e6,
                self._maps.pop(stamp, None),
                now,
                raw,
            )

    def _on_map(self, msg: Any) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        # float16 at most 128 px a side: 32 KB a frame, whatever the camera
        heat = scoring.shrink(np.array(msg_to_frame(msg).image, dtype=np.float32))
        heat = heat.astype(np.float16)
        with self._lock:
            got = self.outcome.frames.get(stamp)
            if got is not None:
                got.heat = heat
            else:
                self._maps[stamp] = heat

    def _on_tags(self, msg: Any) -> None:
        """The detector's own estimate per tag (a weighted mean over its sightings): better
        than any one sighting, so it replaces the last sighting's position at the end."""
        for tag, values in parse_tags(msg).items():
            if {"x", "y", "z"} <= values.keys():
                self.fused[tag] = (float(values["x"]), float(values["y"]), float(values["z"]))

    def positions(self) -> dict[str, tuple[float, float, float]]:
        return {**self.outcome.tags, **self.fused}

    def _on_defects(self, msg: Any) -> None:
        for d in msg.detections:
            p = d.bbox.center.position
            self.outcome.tags[str(d.id)] = (float(p.x), float(p.y), float(p.z))


def _spin_in_thread(bus: Bus, stop: threading.Event) -> threading.Thread:
    def spin() -> None:
        while not stop.is_set():
            bus.spin_once(0.02)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    return thread


def _detector_settings(config: ReplayConfig, streams: Streams) -> tuple[dict, dict]:
    params = {
        "model": str(config.model), "autostart": True, "image_type": streams.image_type,
        "use_depth": streams.depth is not None, "threshold": config.threshold,
        "image_reliability": "reliable" if config.closed_loop else "best_effort",
        **dict(config.detector_params),
    }  # fmt: skip
    image_in = "image/compressed" if streams.image_type == "compressed" else "image"
    remaps = {image_in: streams.image}
    if streams.camera_info:
        remaps["camera_info"] = streams.camera_info
    if streams.depth:
        remaps["depth"] = streams.depth
    return params, remaps


def _player_params(config: ReplayConfig, streams: Streams) -> dict[str, Any]:
    # closed loop: the detector subscribes to its camera inputs reliably (nothing may be lost),
    # so the player offers them reliably too, whatever QoS they were recorded with
    camera = [t for t in (streams.image, streams.camera_info, streams.depth) if t]
    reliable = [f"{t}=reliable" for t in camera] if config.closed_loop else [""]
    return {
        "bag": str(config.bag), "rate": config.rate, "closed_loop": config.closed_loop,
        "closed_loop_timeout_s": config.timeout_s, "score_topic": "/detector/score",
        "qos_overrides": reliable,
    }  # fmt: skip


def replay(
    config: ReplayConfig,
    on_progress: Callable[[int, int], None] | None = None,
    extras: GraphExtras | None = None,
) -> tuple[dict[str, Any], list[GalleryItem], list[GalleryItem]]:
    """Run the replay; the report (JSON-able) and the worst and best frames with heat maps.
    ``extras`` (``dds`` only) starts more nodes and keeps their outputs (filled in place)."""
    if extras is not None and extras.nodes and config.transport != "dds":
        raise SetupError("more nodes beside the detector need transport dds (one process each)")
    if not config.model.is_file():
        raise SetupError(f"{config.model}: no such model file")
    with BagReader(config.bag) as bag:
        streams = find_streams(bag)
    truth, masks = load_truth(config.bag)
    det_params, det_remaps = _detector_settings(config, streams)
    stop = threading.Event()
    buses: list[Bus] = []
    nodes: list[Any] = []
    threads: list[threading.Thread] = []
    child: subprocess.Popen | None = None
    others: dict[str, subprocess.Popen] = {}
    cpu = ProcessCpu()
    try:
        if config.transport == "local":
            from ..transport.local import LocalGraph

            graph = LocalGraph()
            det_bus = create_bus("local", "detector", graph=graph, parameters=det_params,
                                 remappings=det_remaps)  # fmt: skip
            buses.append(det_bus)
            nodes.append(DetectorNode(det_bus))
            threads.append(_spin_in_thread(det_bus, stop))
            options: dict[str, Any] = {"graph": graph}
        elif config.transport == "dds":
            child = start_node_process("detector", det_params, det_remaps)
            for name, params, remaps in extras.nodes if extras else ():
                others[name] = start_node_process(name, params, remaps)
            cpu = ProcessCpu(child.pid)
            options = {}
        else:
            raise SetupError(f"transport {config.transport!r}: use local or dds")
        player_bus = create_bus(config.transport, "player",
                                parameters=_player_params(config, streams), **options)  # fmt: skip
        buses.append(player_bus)
        player = PlayerNode(player_bus)
        nodes.append(player)
        threads.append(_spin_in_thread(player_bus, stop))
        col_bus = create_bus(config.transport, "replay_collector", **options)
        buses.append(col_bus)
        collector = Collector(col_bus, "detector", player.sent_ns)
        kept: dict[str, Any] = extras.last if extras else {}
        for topic, typename in (extras.keep + extras.ready) if extras else ():
            col_bus.create_subscription(
                topic, typename, lambda m, t=topic: kept.__setitem__(t, m), LATCHED
            )
        if extras:  # every node's last status, by name (they share /diagnostics)
            statuses = extras.statuses
            col_bus.create_subscription(
                "/diagnostics",
                "diagnostic_msgs/msg/DiagnosticArray",
                lambda m: statuses.update(parse_tags(m)),
                DEFAULT,
            )
        if not player.trigger("configure"):
            raise SetupError(f"player: {player.last_error}")
        _wait_for_detector(player_bus, collector, streams, config, child)
        if extras:
            _wait_for_extras(col_bus, extras, others, config)
        wall0, cpu0 = time.monotonic(), cpu.seconds()
        player.trigger("activate")
        deadline = None
        while True:
            col_bus.spin_once(0.05)
            if on_progress is not None:
                on_progress(collector.scored, streams.frames)
            if player.finished.is_set():
                deadline = deadline or time.monotonic() + (
                    2.0 if config.closed_loop else config.timeout_s
                )
                if collector.scored >= len(player.sent_ns) or time.monotonic() > deadline:
                    break
            if child is not None and child.poll() is not None:
                raise SetupError(f"the detector process exited ({child.returncode})")
        wall_s = time.monotonic() - wall0
        cores = (cpu.seconds() - cpu0) / wall_s if wall_s > 0 else 0.0
        sent = dict(player.sent_ns)
        unanswered = player.counts["unanswered"]
        problems = [*player.bag_warnings, *(f"{t}: {why}; not played" for t, why in
                    player.skipped.items())]  # fmt: skip
        if player.playback_error:
            problems.append(f"playback stopped early: {player.playback_error}")
        col_bus.spin_once(0.1)  # the last latched tags
        if extras:
            _finish_extras(col_bus, extras, others)
        outcome = collector.outcome
        outcome.tags = collector.positions()
    finally:
        stop.set()
        for node in nodes:
            node.close()
        for thread in threads:
            thread.join(5)
        for bus in reversed(buses):
            bus.shutdown()
        for process in [child, *others.values()]:
            if process is None:
                continue
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    report = _report(config, streams, truth, masks, outcome, sent, wall_s, cores, unanswered)
    report["bag"]["problems"] = problems
    report["caveats"] += [f"bag: {p}" for p in problems]
    worst, best = _gallery(config.bag, streams, truth, outcome)
    return report, worst, best


def start_node_process(
    executable: str, params: dict[str, Any], remaps: dict[str, str]
) -> subprocess.Popen:
    """``vad-inspection run <executable>`` over dds with these parameters and remappings."""
    command = [sys.executable, "-m", "vad_inspection.cli", "run", executable, "--transport", "dds"]
    for key, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        command += ["-p", f"{key}:={text}"]
    for source, target in remaps.items():
        command += ["-r", f"{source}:={target}"]
    # the log goes to a file, not a pipe: a chatty node must never block on a full pipe
    with tempfile.NamedTemporaryFile(prefix=f"vad_{executable}_", suffix=".log",
                                     delete=False) as log:  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log,
                                   env=os.environ.copy())  # fmt: skip
    process.log_path = log.name  # type: ignore[attr-defined]
    return process


def process_log(process: subprocess.Popen, tail: int = 2000) -> str:
    """The end of a node process's log (stderr)."""
    try:
        return Path(process.log_path).read_text(errors="replace")[-tail:]  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return ""


def _wait_for_extras(
    bus: Bus, extras: GraphExtras, others: dict[str, subprocess.Popen], config: ReplayConfig
) -> None:
    """Until each ready topic has delivered (the nodes are up and active)."""
    deadline = time.monotonic() + max(config.timeout_s, 60.0)
    while time.monotonic() < deadline:
        bus.spin_once(0.05)
        if all(topic in extras.last for topic, _ in extras.ready):
            return
        for name, process in others.items():
            if process.poll() is not None:
                raise SetupError(f"the {name} process exited ({process.returncode}):\n"
                                 f"{process_log(process)}")  # fmt: skip
    missing = [t for t, _ in extras.ready if t not in extras.last]
    raise SetupError(f"no message on {', '.join(missing)} within the timeout")


def _finish_extras(bus: Bus, extras: GraphExtras, others: dict[str, subprocess.Popen]) -> None:
    """The end-of-pass service call, then time for the last outputs to arrive."""
    if extras.end_service:
        from ..msgs.defaults import new_message

        client = bus.create_client(extras.end_service, "std_srvs/srv/Trigger")
        if client.wait_for_service(10.0):
            extras.reply = client.call(new_message("std_srvs/srv/Trigger_Request"), timeout=60.0)
    end = time.monotonic() + extras.settle_s
    while time.monotonic() < end:
        bus.spin_once(0.05)
    for name, process in others.items():
        if process.poll() is not None:
            extras.logs[name] = process_log(process)


def _wait_for_detector(
    bus: Bus, collector: Collector, streams: Streams, config: ReplayConfig, child: Any
) -> None:
    """Until the detector listens to the camera and its score reaches the collector."""
    pub = next(p for p in bus.publishers if p.topic == bus.resolve(streams.image))
    deadline = time.monotonic() + max(config.timeout_s, 60.0)
    score_sub = collector.subscriptions[0]
    while time.monotonic() < deadline:
        if pub.subscription_count >= 1 and score_sub.publisher_count >= 1:
            return
        if child is not None and child.poll() is not None:
            err = process_log(child)
            raise SetupError(f"the detector process exited ({child.returncode}):\n{err[-2000:]}")
        time.sleep(0.05)
    raise SetupError(f"the detector did not subscribe to {streams.image} within the timeout")


def _model_info(path: Path) -> dict[str, Any]:
    from ..vad import artifact

    meta = dict(artifact.load(path).meta)
    weights = meta.get("weights") or ("random" if "'weights': 'random'" in str(meta.get("config"))
                                      else "not recorded in the model file")  # fmt: skip
    return {"path": str(path), "sha256": sha256_of(path), "method": str(meta.get("method", "?")),
            "weights": str(weights)}  # fmt: skip


def _report(
    config: ReplayConfig, streams: Streams, truth: dict | None, masks: dict[int, np.ndarray],
    outcome: scoring.Outcome, sent: dict[int, int], wall_s: float, cores: float, unanswered: int,
) -> dict[str, Any]:  # fmt: skip
    why: dict[str, str] = {}
    frames_truth = (truth or {}).get("frames", [])
    labels = {int(f["stamp_ns"]): bool(f["anomalous"]) for f in frames_truth}
    figures: dict[str, Any] = {
        **scoring.image_metrics(labels, outcome, why),
        **scoring.pixel_metrics(masks, outcome, why),
        **scoring.defect_metrics((truth or {}).get("defects", []), outcome,
                                 config.match_radius_m, why),
        "threshold": config.threshold,
    }  # fmt: skip
    figures["why"] = why
    text, ok = scoring.verdict(figures)
    run = scoring.run_figures(outcome, sent, wall_s)
    mode = "closed loop" if config.closed_loop else f"rate {config.rate:g}x"
    run.update({"transport": config.transport, "mode": mode, "cpu_cores": cores,
                "unanswered": unanswered})  # fmt: skip
    model = _model_info(config.model)
    caveats = []
    if model["weights"] != "imagenet":
        caveats.append(
            f"backbone weights: {model['weights']}; models fitted here use seeded random "
            "weights (no pretrained ones can be downloaded), so figures are a floor, not the "
            "method's"
        )
    if masks:
        caveats.append(f"pixel metrics on maps and masks shrunk to {scoring.PIXEL_SIDE} px a side")
    categories = {int(f["stamp_ns"]): f.get("category", "") for f in frames_truth}
    return {
        "title": f"Replay of {config.bag.name} with {config.model.name}",
        "bag": {"path": str(config.bag), "sha256": sha256_of(config.bag),
                "frames": streams.frames, "duration_s": streams.duration_s,
                "topics": streams.topics, "scenario": (truth or {}).get("scenario")},
        "model": model,
        "run": run,
        "metrics": figures,
        "by_category": scoring.by_category(frames_truth, outcome, config.threshold),
        "caveats": caveats,
        "verdict": text,
        "verdict_ok": ok,
        "frames": [
            {"stamp_ns": s, "score": (got := outcome.frames.get(s)) and got.score,
             "flagged": bool(got and got.score is not None and got.score >= config.threshold),
             "truth": labels.get(s), "category": categories.get(s, ""),
             "latency_ms": got.latency_ms if got else None, "raw": got.raw if got else None}
            for s in sorted(sent)
        ],
    }  # fmt: skip


def _gallery(
    bag_path: Path, streams: Streams, truth: dict | None, outcome: scoring.Outcome
) -> tuple[list[GalleryItem], list[GalleryItem]]:
    scored = sorted((f for f in outcome.frames.values() if f.score is not None),
                    key=lambda f: -(f.score if f.raw is None else f.raw))  # fmt: skip
    worst, best = scored[:GALLERY], scored[-GALLERY:][::-1] if len(scored) > GALLERY else []
    wanted = {f.stamp_ns: f for f in [*worst, *best]}
    frames_truth = {int(f["stamp_ns"]): f for f in (truth or {}).get("frames", [])}
    decode = compressed_to_frame if streams.image_type == "compressed" else msg_to_frame
    pictures: dict[int, np.ndarray] = {}
    with BagReader(bag_path) as bag:
        for m in bag.messages([streams.image]):
            frame = decode(m.decode())
            got = wanted.get(frame.stamp_ns)
            if got is None:
                continue
            rgb = to_rgb(frame)
            if got.heat is not None:
                import cv2

                heat = cv2.resize(got.heat.astype(np.float32), (rgb.shape[1], rgb.shape[0]))
                rgb = overlay(rgb, np.clip(heat, 0, 1), outline=heat >= 0.5)
            pictures[frame.stamp_ns] = rgb

    def item(f: scoring.FrameOutcome) -> GalleryItem:
        t = frames_truth.get(f.stamp_ns, {})
        return GalleryItem(f.stamp_ns, float(f.score or 0.0), t.get("anomalous"),
                           t.get("category", ""), pictures[f.stamp_ns])  # fmt: skip

    keep = [f for f in worst if f.stamp_ns in pictures], [f for f in best if f.stamp_ns in pictures]
    return [item(f) for f in keep[0]], [item(f) for f in keep[1]]
