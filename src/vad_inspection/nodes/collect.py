"""Frames off a camera topic, for learning normal from a live stream (`fit --from-topic`).

The detector's ``~/fit`` service does the same inside a running node; this is for a machine
without one: subscribe, take the next ``count`` decodable frames, report the bad ones, stop.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FrameError, SetupError
from ..msgs.image import compressed_to_frame, msg_to_frame
from ..transport import SENSOR_DATA, Bus


@dataclass
class Collection:
    """The frames taken and what was refused, by cause."""

    frames: list[np.ndarray] = field(default_factory=list)
    encoding: str = ""
    refused: Counter[str] = field(default_factory=Counter)


def collect_frames(
    bus: Bus,
    topic: str,
    count: int,
    *,
    compressed: bool = False,
    timeout_s: float = 120.0,
    progress: Any = None,
) -> Collection:
    """The next ``count`` frames published on ``topic`` (best effort, as cameras publish).

    Raises :class:`SetupError` naming the topic when fewer arrive within ``timeout_s`` (no
    publisher, wrong name, wrong type). Frames whose size or encoding differs from the first are
    refused and counted: one model learns one camera.
    """
    typename = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    decode = compressed_to_frame if compressed else msg_to_frame
    got = Collection()
    shape: tuple[int, ...] | None = None

    def on_frame(msg: Any) -> None:
        nonlocal shape
        if len(got.frames) >= count:
            return
        try:
            frame = decode(msg)
        except FrameError as error:
            got.refused[f"undecodable: {error}"] += 1
            return
        if shape is None:
            shape, got.encoding = frame.image.shape, frame.encoding
        elif frame.image.shape != shape or frame.encoding != got.encoding:
            got.refused[f"{frame.encoding} {frame.image.shape} differs from the first frame"] += 1
            return
        got.frames.append(np.array(frame.image, copy=True))
        if progress is not None:
            progress.update(1)

    subscription = bus.create_subscription(topic, typename, on_frame, SENSOR_DATA)
    try:
        deadline = time.monotonic() + timeout_s
        while len(got.frames) < count and time.monotonic() < deadline:
            bus.spin_once(0.1)
    finally:
        subscription.destroy()
    if len(got.frames) < count:
        refused = "; ".join(f"{n}x {cause}" for cause, n in got.refused.most_common(3))
        raise SetupError(
            f"{bus.resolve(topic)} [{typename}]: {len(got.frames)} of {count} frames in "
            f"{timeout_s:g} s"
            + (f" (refused: {refused})" if refused else " (is a camera publishing?)")
        )
    return got
