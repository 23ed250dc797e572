"""A scenario written as a rosbag2 bag with its truth beside it, as ``vad-inspection sim`` writes
it and as a launch with ``scenario:=<name>`` plays it.

Beside ``<bag>``: ``<bag>.truth.json`` (frames, defects, the scenario's summary) and, where the
scenario has pixel masks, ``<bag>.masks.npz``. :func:`scenario_bag` keeps one bag per scenario
and settings in a cache folder, so launching the same scenario twice writes it once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..transport import SENSOR_DATA
from ..transport.bag import BagWriter
from . import catalog
from .stream import TOPICS, messages, truth_record
from .types import Scenario

START_NS = 1_000_000_000


@dataclass(frozen=True)
class WrittenBag:
    bag: Path
    truth: Path
    masks: Path | None
    frames: int
    anomalous: int
    defects: int


def write_bag(
    scan: Scenario,
    out: Path,
    *,
    distro: str = "jazzy",
    storage: str = "mcap",
    compressed: str = "",
    depth: bool = True,
    progress: Callable[[int], None] | None = None,
) -> WrittenBag:
    """The scenario's messages into a new bag at ``out``, its truth (and masks) beside it;
    ``progress`` is told of each camera frame written."""
    stream = messages(scan, start_ns=START_NS, compressed=compressed, depth=depth, distro=distro)
    with BagWriter(out, distro, storage) as bag:
        added: set[str] = set()  # only the topics the scenario has (no depth: no depth topic)
        for item in stream:
            if item.topic not in added:
                latched = "latched" if item.topic == "/tf_static" else None
                camera = SENSOR_DATA if item.topic.startswith("/camera/") else None
                bag.add_topic(item.topic, TOPICS[item.topic], latched or camera)
                added.add(item.topic)
            bag.write(item.topic, item.stamp_ns, item.message)
            if progress and item.topic.startswith("/camera/image_raw"):
                progress(1)
    record, masks = truth_record(scan, START_NS)
    truth_path = out.with_name(out.name + ".truth.json")
    truth_path.write_text(json.dumps(record, indent=1))
    masks_path = None
    if masks:
        masks_path = out.with_name(out.name + ".masks.npz")
        np.savez_compressed(masks_path, **masks)
    return WrittenBag(out, truth_path, masks_path, scan.frame_count,
                      sum(f["anomalous"] for f in record["frames"]), len(scan.defects))  # fmt: skip


def scenario_bag(
    name: str, data_root: Path, cache: Path, overrides: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:  # fmt: skip
    """The bag of scenario ``name`` (a sim/ name or a YAML) with ``overrides``, written into
    ``cache`` the first time and reused after (keyed by the name, settings and data root). A
    half-written bag from an interrupted run is written again."""
    key = json.dumps([name, str(Path(data_root).resolve()), dict(overrides or {})], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    out = Path(cache) / f"{Path(name).stem}-{digest}"
    if (out / "metadata.yaml").is_file() and out.with_name(out.name + ".truth.json").is_file():
        return out
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bag(catalog.load(name, data_root, **dict(overrides or {})), out, progress=progress)
    return out
