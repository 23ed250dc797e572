"""A tf2-like transform buffer without ROS: a tree of frames, edges sampled in time, lookups.

The semantics are tf2's, so a node gets the same answer under ROS 2, over Cyclone DDS or from a
bag: each frame has at most one parent; an edge's matrix maps points in the child frame to the
parent frame (a TransformStamped with ``header.frame_id`` = parent); a lookup walks from both
frames up to their common ancestor; a dynamic edge is interpolated between the two samples around
the requested time (slerp for rotation, linear for translation) and static edges hold at every
time; ``stamp_ns == 0`` asks for the latest time at which every dynamic edge of the path is known.
Samples older than ``cache_ns`` behind an edge's newest are pruned, and older ones are refused.

Unlike tf2, a lookup may reach ``tolerance_ns`` past an edge's first or last sample (taking that
sample): a camera frame stamped a few milliseconds after the last odometry message is then still
usable, and the error says by how much a stamp misses when it is not.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SetupError
from .errors import GeometryError, TransformNotYet, TransformUnavailable
from .transforms import (
    check_transform,
    invert,
    matrix_to_quaternion,
    quaternion_to_matrix,
    slerp,
)

DEFAULT_CACHE_NS = 10_000_000_000


@dataclass
class _Edge:
    """One child's link to its parent: a static matrix, or samples sorted by stamp."""

    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    matrices: list[np.ndarray] = field(default_factory=list)
    quaternions: list[np.ndarray] = field(default_factory=list)

    def insert(self, stamp_ns: int, matrix: np.ndarray, cache_ns: int) -> bool:
        if self.static:
            self.stamps, self.matrices, self.quaternions = [stamp_ns], [matrix], []
            return True
        if self.stamps and stamp_ns < self.stamps[-1] - cache_ns:
            return False  # older than anything kept: tf2 drops it too ("TF_OLD_DATA")
        i = bisect.bisect_left(self.stamps, stamp_ns)
        q = np.asarray(matrix_to_quaternion(matrix[:3, :3]))
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:
            self.matrices[i], self.quaternions[i] = matrix, q
        else:
            self.stamps.insert(i, stamp_ns)
            self.matrices.insert(i, matrix)
            self.quaternions.insert(i, q)
        cut = bisect.bisect_left(self.stamps, self.stamps[-1] - cache_ns)
        if cut:
            del self.stamps[:cut], self.matrices[:cut], self.quaternions[:cut]
        return True

    def at(self, stamp_ns: int, tolerance_ns: int, child: str) -> np.ndarray:
        """Matrix at ``stamp_ns`` (0: the newest), interpolated between samples."""
        if self.static:
            return self.matrices[0]
        if stamp_ns == 0:
            return self.matrices[-1]
        first, last = self.stamps[0], self.stamps[-1]
        if stamp_ns < first or stamp_ns > last:
            gap = first - stamp_ns if stamp_ns < first else stamp_ns - last
            if gap <= tolerance_ns:
                return self.matrices[0] if stamp_ns < first else self.matrices[-1]
            error = TransformUnavailable if stamp_ns < first else TransformNotYet
            raise error(self._extrapolation(stamp_ns, gap, tolerance_ns, child))
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if self.stamps[i] == stamp_ns:
            return self.matrices[i]
        t0, t1 = self.stamps[i - 1], self.stamps[i]
        fraction = (stamp_ns - t0) / (t1 - t0)
        out = np.eye(4)
        out[:3, :3] = quaternion_to_matrix(
            *slerp(self.quaternions[i - 1], self.quaternions[i], fraction)
        )
        a, b = self.matrices[i - 1][:3, 3], self.matrices[i][:3, 3]
        out[:3, 3] = a + fraction * (b - a)
        return out

    def _extrapolation(self, stamp_ns: int, gap: int, tolerance_ns: int, child: str) -> str:
        first, last = self.stamps[0], self.stamps[-1]
        direction = "past" if stamp_ns < first else "future"
        held = (
            f"samples from {_s(first)} to {_s(last)} s"
            if first != last
            else f"one sample at {_s(first)} s"
        )
        return (
            f"extrapolation into the {direction} on edge {self.parent!r} -> {child!r}: "
            f"requested time {_s(stamp_ns)} s is {gap / 1e6:.1f} ms "
            f"{'before' if direction == 'past' else 'after'} its "
            f"{'oldest' if direction == 'past' else 'newest'} sample, "
            f"{(gap - tolerance_ns) / 1e6:.1f} ms beyond the tolerance of {tolerance_ns / 1e6:.1f} "
            f"ms (the edge holds {held})"
        )


def _s(stamp_ns: int) -> str:
    return f"{stamp_ns / 1e9:.3f}"


class TransformBuffer:
    """Transforms between frames over time, as tf2's BufferCore keeps them (thread-safe).

    Fill it from /tf and /tf_static (``static=True``), then :meth:`lookup` the matrix that takes
    points from one frame to another at a time.
    """

    def __init__(self, cache_ns: int = DEFAULT_CACHE_NS) -> None:
        if cache_ns <= 0:
            raise SetupError(f"TransformBuffer cache_ns must be > 0, got {cache_ns}")
        self.cache_ns = int(cache_ns)
        self._edges: dict[str, _Edge] = {}  # by child frame
        self._lock = threading.Lock()

    def set_transform(
        self, parent: str, child: str, matrix: Any, stamp_ns: int, static: bool = False
    ) -> bool:
        """Record that ``matrix`` maps points in ``child`` to ``parent`` at ``stamp_ns``.

        Returns False when a dynamic sample is older than the cache keeps (dropped, as tf2 does).
        A child given a new parent, or switching between static and dynamic, loses its old
        samples: a frame has one parent at a time. Raises :class:`GeometryError` for an empty
        frame name, a frame its own parent, a loop, or a matrix that is not a rigid transform.
        """
        parent, child = _name(parent), _name(child)
        t = check_transform(matrix)
        if parent == child:
            raise GeometryError(f"frame {child!r} cannot be its own parent")
        with self._lock:
            ancestor = parent
            while ancestor in self._edges:
                ancestor = self._edges[ancestor].parent
                if ancestor == child:
                    raise GeometryError(
                        f"{parent!r} -> {child!r} would close a loop: {parent!r} already "
                        f"descends from {child!r}"
                    )
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                edge = self._edges[child] = _Edge(parent, static)
            return edge.insert(int(stamp_ns), t, self.cache_ns)

    def clear(self) -> None:
        """Forget everything (when time jumps backwards: a bag restarts, a simulation resets)."""
        with self._lock:
            self._edges.clear()

    def frames(self) -> list[str]:
        """Every frame known, as parent or child, sorted."""
        with self._lock:
            return self._frames()

    def lookup(
        self, target_frame: str, source_frame: str, stamp_ns: int = 0, tolerance_ns: int = 0
    ) -> np.ndarray:
        """4x4 matrix mapping points in ``source_frame`` to ``target_frame`` at ``stamp_ns``.

        ``stamp_ns == 0`` means the latest time all dynamic edges on the path share. A time up to
        ``tolerance_ns`` before an edge's first or after its last sample takes that sample.
        Raises :class:`TransformUnavailable` naming the reason.
        """
        target, source = _name(target_frame), _name(source_frame)
        with self._lock:
            if target == source:
                return np.eye(4)
            up_source, up_target = self._path(source, target)
            if stamp_ns == 0:
                stamp_ns = self._latest_common(up_source + up_target)
            return invert(self._chain(up_target, stamp_ns, tolerance_ns)) @ self._chain(
                up_source, stamp_ns, tolerance_ns
            )

    def can_transform(
        self, target_frame: str, source_frame: str, stamp_ns: int = 0, tolerance_ns: int = 0
    ) -> tuple[bool, str]:
        """``(True, "")`` if :meth:`lookup` would succeed, else ``(False, reason)``."""
        try:
            self.lookup(target_frame, source_frame, stamp_ns, tolerance_ns)
        except TransformUnavailable as error:
            return False, str(error)
        return True, ""

    def latest_common_time(self, target_frame: str, source_frame: str) -> int:
        """The stamp a ``stamp_ns=0`` lookup uses (0 when the path has only static edges)."""
        target, source = _name(target_frame), _name(source_frame)
        with self._lock:
            if target == source:
                return 0
            up_source, up_target = self._path(source, target)
            return self._latest_common(up_source + up_target)

    # ------------------------------------------------------------------ internals (lock held)

    def _frames(self) -> list[str]:
        return sorted(set(self._edges) | {e.parent for e in self._edges.values()})

    def _path(self, source: str, target: str) -> tuple[list[str], list[str]]:
        """Children whose edges lead from ``source`` and from ``target`` up to their common
        ancestor (each list in walking order)."""
        known = set(self._frames())
        for role, frame in (("target", target), ("source", source)):
            if frame not in known:
                listing = ", ".join(sorted(known)) if known else "none yet"
                raise TransformUnavailable(
                    f"{role} frame {frame!r} does not exist; known frames: {listing}"
                )
        up_source = self._ancestry(source)
        up_target = self._ancestry(target)
        if up_source[-1] != up_target[-1]:
            raise TransformUnavailable(
                f"frames {source!r} and {target!r} are not connected: {source!r} is in the tree "
                f"rooted at {up_source[-1]!r}, {target!r} in the tree rooted at {up_target[-1]!r}"
            )
        target_set = set(up_target)
        common = next(frame for frame in up_source if frame in target_set)
        return (
            up_source[: up_source.index(common)],
            up_target[: up_target.index(common)],
        )

    def _ancestry(self, frame: str) -> list[str]:
        """``[frame, parent, grandparent, ..., root]``."""
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
        return chain

    def _chain(self, children: list[str], stamp_ns: int, tolerance_ns: int) -> np.ndarray:
        """Matrix from the first child's frame to the last child's parent."""
        out = np.eye(4)
        for child in children:
            out = self._edges[child].at(stamp_ns, tolerance_ns, child) @ out
        return out

    def _latest_common(self, children: list[str]) -> int:
        newest = [self._edges[c].stamps[-1] for c in children if not self._edges[c].static]
        return min(newest) if newest else 0


def _name(frame: str) -> str:
    """tf2 frame ids have no leading slash (ROS 1 habits still send one)."""
    name = str(frame).lstrip("/")
    if not name:
        raise TransformUnavailable(f"invalid frame id {frame!r}: empty")
    return name
