"""A replay's outcome against the bag's ground truth: the report's figures (pure: no transport).

Truth is what ``vad-inspection sim`` writes beside a bag (``<bag>.truth.json``, and
``<bag>.masks.npz`` where pixel masks exist); a bag without it gets the run figures only, and
each metric that cannot be measured says why instead of showing a number.

- image AUROC and AUC-PR over the scored frames whose truth is known (both classes needed), on
  the raw score (the normalised one is clipped to [0, 1]: clearly normal frames tie at 0);
- pixel AUROC, AUPRO (FPR up to 0.3) and Dice of the map at the decision threshold (the
  detector's ``~/anomaly_map`` is normalised so that 0.5 is its threshold), over frames with
  masks, at most ``PIXEL_SIDE`` px a side (maps and masks shrunk alike, to keep memory flat);
- distinct defects: a truth defect counts as found when a defect the detector placed in 3-D (its
  tag's position: the detector's weighted mean over the sightings) lies within
  ``max(match_radius_m, half the defect's size)``; the pose
  error is that distance; tags matching no truth defect are counted as spurious;
- missed frames (sent, never scored), latency p50/p90/max (score received minus frame sent) and
  jitter (standard deviation of the intervals between scores, as ros2_benchmark reports it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..eval import metrics

PIXEL_SIDE = 128
CHANCE_AUROC = 0.6  # below this an image AUROC is reported as no better than chance


@dataclass
class FrameOutcome:
    """What came back for one sent frame (``score`` None: never scored)."""

    stamp_ns: int
    score: float | None = None  # normalised (0.5 = threshold), clipped to [0, 1]
    latency_ms: float | None = None
    heat: np.ndarray | None = None  # the normalised anomaly map, shrunk (0.5 = threshold)
    received_ns: int | None = None  # monotonic clock of the collecting process
    raw: float | None = None  # the model's raw score: keeps the order the clipped one loses


@dataclass
class DefectSighting:
    tag: str
    position: tuple[float, float, float]


@dataclass
class Outcome:
    frames: dict[int, FrameOutcome] = field(default_factory=dict)  # by stamp, in send order
    tags: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # last position


def shrink(image: np.ndarray, side: int = PIXEL_SIDE) -> np.ndarray:
    """At most ``side`` px on the longer side; masks stay binary (nearest), maps are averaged."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if image.dtype == bool:
        return cv2.resize(image.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    return cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA)


def _quantiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return {
        "p50": float(np.median(array)),
        "p90": float(np.percentile(array, 90)),
        "max": float(array.max()),
    }


def image_metrics(
    truth: Mapping[int, bool], outcome: Outcome, why: dict[str, str]
) -> dict[str, float | None]:
    pairs = [(truth[s], f.score if f.raw is None else f.raw) for s, f in outcome.frames.items()
             if s in truth and f.score is not None]  # fmt: skip
    labels = np.array([p[0] for p in pairs], dtype=bool)
    scores = np.array([p[1] for p in pairs], dtype=np.float64)
    if not pairs or labels.all() or not labels.any():
        reason = "no ground truth" if not truth else "the scored frames hold one class only"
        why["image_auroc"] = why["image_auprc"] = reason
        return {"image_auroc": None, "image_auprc": None}
    return {
        "image_auroc": metrics.auroc(labels, scores),
        "image_auprc": metrics.auc_pr(labels, scores),
    }


def pixel_metrics(
    masks: Mapping[int, np.ndarray], outcome: Outcome, why: dict[str, str]
) -> dict[str, float | None]:
    names = ("pixel_auroc", "aupro", "dice")
    pairs = [(shrink(masks[s].astype(bool)), f.heat) for s, f in outcome.frames.items()
             if s in masks and f.heat is not None]  # fmt: skip
    pairs = [(m, cv2.resize(h.astype(np.float32), m.shape[::-1])) for m, h in pairs]
    if not pairs or not any(m.any() for m, _ in pairs):
        for name in names:
            why[name] = "no pixel masks in the truth" if not masks else "no defect pixels scored"
        return dict.fromkeys(names)
    truth = np.stack([m for m, _ in pairs])
    maps = np.stack([h for _, h in pairs]).astype(np.float32)
    return {
        "pixel_auroc": metrics.pixel_auroc(truth, maps),
        "aupro": metrics.aupro(truth, maps),
        "dice": metrics.dice(truth, maps >= 0.5),
    }


def defect_metrics(
    defects: Sequence[Mapping[str, Any]], outcome: Outcome, radius_m: float, why: dict[str, str]
) -> dict[str, Any]:
    if not defects:
        why["defects_found"] = why["pose_error_m"] = "no 3-D defect truth in the bag"
        return {"defects_found": None, "defects_total": None, "pose_error_m": None,
                "spurious_tags": len(outcome.tags)}  # fmt: skip
    placed = np.array(list(outcome.tags.values()), dtype=np.float64).reshape(-1, 3)
    errors: list[float] = []
    used: set[int] = set()
    for d in defects:
        if not len(placed):
            break
        distance = np.linalg.norm(placed - np.asarray(d["position"], dtype=np.float64), axis=1)
        nearest = int(distance.argmin())
        if distance[nearest] <= max(radius_m, float(d.get("size_m") or 0.0) / 2):
            errors.append(float(distance[nearest]))
            used.add(nearest)
    pose = None
    if errors:
        pose = {"median": float(np.median(errors)), "p90": float(np.percentile(errors, 90))}
    else:
        why["pose_error_m"] = "no defect found"
    return {
        "defects_found": len(errors),
        "defects_total": len(defects),
        "pose_error_m": pose,
        "spurious_tags": len(placed) - len(used),
    }


def run_figures(outcome: Outcome, sent_ns: Mapping[int, int], wall_s: float) -> dict[str, Any]:
    scored = [f for f in outcome.frames.values() if f.score is not None]
    latencies = [f.latency_ms for f in scored if f.latency_ms is not None]
    arrivals = np.sort([f.received_ns for f in scored if f.received_ns is not None])
    intervals = np.diff(arrivals) / 1e6
    return {
        "frames_sent": len(sent_ns),
        "frames_scored": len(scored),
        "missed": len(sent_ns) - len(scored),
        "mean_rate_hz": len(scored) / wall_s if wall_s > 0 else 0.0,
        "latency_ms": _quantiles(latencies),
        "jitter_ms": float(np.std(intervals)) if len(intervals) > 1 else None,
        "wall_s": wall_s,
    }


def by_category(
    frames: Sequence[Mapping[str, Any]], outcome: Outcome, threshold: float = 0.5
) -> list[dict[str, Any]]:
    """Per class of the truth: how many frames, their mean score, how many were flagged."""
    groups: dict[str, list[tuple[bool, float]]] = {}
    for f in frames:
        got = outcome.frames.get(int(f["stamp_ns"]))
        if got is None or got.score is None:
            continue
        category = f.get("category") or ("anomalous" if f["anomalous"] else "normal")
        groups.setdefault(category, []).append((bool(f["anomalous"]), got.score))
    rows = []
    for category, items in groups.items():
        scores = np.array([s for _, s in items])
        rows.append({
            "category": category, "frames": len(items), "anomalous": items[0][0],
            "mean_score": float(scores.mean()), "flagged": int((scores >= threshold).sum()),
        })  # fmt: skip
    return sorted(rows, key=lambda r: (not r["anomalous"], -r["mean_score"]))


def verdict(metrics_: Mapping[str, Any]) -> tuple[str, bool]:
    """One line a person reads first: does the detection work on this bag?"""
    auroc = metrics_.get("image_auroc")
    if auroc is None:
        return "no image ground truth: run figures only", True
    pixel = metrics_.get("pixel_auroc")
    extra = f", pixel AUROC {pixel:.2f}" if pixel is not None else ""
    if auroc < CHANCE_AUROC:
        return f"image AUROC {auroc:.2f}{extra}: no better than chance on this bag", False
    return f"image AUROC {auroc:.2f}{extra}: detection works on this bag", True
