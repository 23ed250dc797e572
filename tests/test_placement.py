"""The detector's placement waits for the robot's pose at a frame's stamp rather than
extrapolating an older one (a moving robot's extrapolated pose puts a defect where it is not)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vad_inspection.geometry import TransformBuffer
from vad_inspection.geometry.errors import TransformUnavailable
from vad_inspection.nodes.placement import PlacementConfig, Placer
from vad_inspection.vad.tags import TagBook

MS = 1_000_000


def _pose(x: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[0, 3] = x
    return matrix


def _placer(tf: TransformBuffer, wait_ms: int) -> Placer:
    config = PlacementConfig(tf_tolerance_ns=100 * MS, tf_wait_ns=wait_ms * MS)
    return Placer(config, tf, TagBook())


def test_a_lookup_waits_for_the_pose_that_brackets_the_stamp() -> None:
    tf = TransformBuffer()
    tf.set_transform("map", "base_link", _pose(0.0), 0)
    # the pose at 100 ms (x = 1) arrives 50 ms after the frame stamped 50 ms is placed
    later = threading.Timer(0.05, tf.set_transform, ("map", "base_link", _pose(1.0), 100 * MS))
    later.start()
    try:
        matrix = _placer(tf, wait_ms=2000)._lookup("map", "base_link", 50 * MS)
    finally:
        later.join()
    assert matrix[0, 3] == np.float64(0.5)  # interpolated, not the extrapolated 0.0


def test_without_the_wait_or_past_it_the_tolerance_extrapolates() -> None:
    tf = TransformBuffer()
    tf.set_transform("map", "base_link", _pose(0.0), 0)
    assert _placer(tf, wait_ms=0)._lookup("map", "base_link", 50 * MS)[0, 3] == 0.0
    start = time.monotonic()
    assert _placer(tf, wait_ms=30)._lookup("map", "base_link", 50 * MS)[0, 3] == 0.0
    assert time.monotonic() - start >= 0.03  # it did wait for the pose that never came


def test_a_missing_mount_is_waited_for_once_then_not_again() -> None:
    """The camera mount's static transform still in flight when the first frame is placed (the
    detector's start-up race that once left a defect in 2-D and gave it a tag of its own)."""
    tf = TransformBuffer()
    tf.set_transform("map", "base_link", _pose(0.0), 0)
    mount = threading.Timer(0.05, tf.set_transform, ("base_link", "camera", _pose(0.25), 0, True))
    mount.start()
    try:
        matrix = _placer(tf, wait_ms=2000)._lookup("map", "camera", 0)
    finally:
        mount.join()
    assert matrix[0, 3] == 0.25
    # a frame that never comes: one wait, then the next lookups fail at once
    placer = _placer(tf, wait_ms=100)
    for expected_wait in (True, False, False):
        start = time.monotonic()
        with pytest.raises(TransformUnavailable, match="nowhere"):
            placer._lookup("map", "nowhere", 0)
        assert (time.monotonic() - start >= 0.1) is expected_wait
