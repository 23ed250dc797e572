"""Defect tags: the same defect seen again, from another viewpoint or another pass, keeps its name.

An inspector wants "crack D0007, seen 14 times, worst score 0.93, at (12.1, 3.4, 0.0) in map", not
fourteen anonymous detections. Sightings are associated by 3-D position in the target frame within
a radius when a position is known (depth or a plane), otherwise by image overlap with the tag's
last box (a camera that holds still or moves slowly). Pure bookkeeping, no ROS: the detector node
feeds it and publishes :meth:`TagBook.tags`; the recorder saves them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

#: A box ``(x, y, width, height)`` in pixels.
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Tag:
    """One defect across its sightings. ``position`` is in ``frame`` (None: seen in 2-D only)."""

    tag: str
    sightings: int
    first_seen_ns: int
    last_seen_ns: int
    best_score: float
    last_score: float
    position: tuple[float, float, float] | None
    frame: str
    last_box: Box
    position_weight: float = 0.0  # the sightings' weights behind ``position``


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


class TagBook:
    """Assigns tags to sightings. ``radius_m``: two sightings closer than this in the target frame
    are one defect; ``min_iou``: without 3-D, a box overlapping a tag's last box this much is it.
    A position refines as a weighted running mean of its sightings (each is noisy by the depth's
    noise; one cut by the image border counts little, its centroid being off-centre)."""

    def __init__(self, radius_m: float = 0.15, min_iou: float = 0.3, prefix: str = "D") -> None:
        if radius_m <= 0 or not 0 < min_iou <= 1:
            raise ValueError(
                f"radius_m must be > 0 and min_iou in (0, 1]; got {radius_m}, {min_iou}"
            )
        self.radius_m = radius_m
        self.min_iou = min_iou
        self.prefix = prefix
        self._tags: dict[str, Tag] = {}
        self._count = 0

    def tags(self) -> list[Tag]:
        """Every tag, oldest first."""
        return list(self._tags.values())

    def __len__(self) -> int:
        return len(self._tags)

    def observe(
        self,
        stamp_ns: int,
        score: float,
        box: Box,
        position: tuple[float, float, float] | None = None,
        frame: str = "",
        taken: frozenset[str] = frozenset(),
        weight: float = 1.0,
    ) -> Tag:
        """Record one sighting and return its tag (an existing one, or a new one).

        ``taken``: tags already given to other regions of the same frame (two regions of one
        image are two defects, even when they are close). ``weight``: how much this sighting's
        position counts in the tag's mean (small for a defect cut by the image border, whose
        visible part's centroid is off the defect's centre).
        """
        match = self._match(box, position, frame, taken)
        if match is None:
            self._count += 1
            tag = Tag(
                tag=f"{self.prefix}{self._count:04d}",
                sightings=1,
                first_seen_ns=stamp_ns,
                last_seen_ns=stamp_ns,
                best_score=score,
                last_score=score,
                position=position,
                frame=frame if position is not None else "",
                last_box=box,
                position_weight=weight if position is not None else 0.0,
            )
        else:
            n = match.sightings + 1
            merged, total = match.position, match.position_weight
            if position is not None:
                if merged is None or total <= 0:
                    merged, total = position, weight
                else:
                    total += weight
                    merged = tuple(float(m + (p - m) * weight / total)
                                   for m, p in zip(merged, position, strict=True))  # fmt: skip
            tag = replace(
                match,
                sightings=n,
                last_seen_ns=max(match.last_seen_ns, stamp_ns),
                best_score=max(match.best_score, score),
                last_score=score,
                position=merged,
                frame=match.frame or (frame if position is not None else ""),
                last_box=box,
                position_weight=total,
            )
        self._tags[tag.tag] = tag
        return tag

    def _match(
        self,
        box: Box,
        position: tuple[float, float, float] | None,
        frame: str,
        taken: frozenset[str],
    ) -> Tag | None:
        candidates = [t for t in self._tags.values() if t.tag not in taken]
        if position is not None:
            placed = [t for t in candidates if t.position is not None and t.frame == frame]
            if placed:
                here = np.asarray(position)
                distances = [float(np.linalg.norm(np.asarray(t.position) - here)) for t in placed]
                best = int(np.argmin(distances))
                if distances[best] <= self.radius_m:
                    return placed[best]
            return None
        overlaps = [(box_iou(box, t.last_box), t) for t in candidates if t.position is None]
        overlaps = [(iou, t) for iou, t in overlaps if iou >= self.min_iou]
        return max(overlaps, key=lambda pair: pair[0])[1] if overlaps else None


@dataclass(frozen=True)
class Defect:
    """One defect region of one frame, named: what the detector node publishes per region.

    ``score`` is the region's peak on the normalised scale; ``box`` its pixel box ``(x, y, w,
    h)``; ``position`` and ``size`` (metres, width / height / depth) are in ``frame`` when the
    region could be placed in 3-D, else None with ``why_not_3d`` saying why.
    """

    tag: str
    score: float
    box: Box
    centroid: tuple[float, float]
    area: int
    position: tuple[float, float, float] | None = None
    size: tuple[float, float, float] | None = None
    frame: str = ""
    why_not_3d: str = ""
