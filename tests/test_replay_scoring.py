"""The replay report's figures against hand-made truth: what counts, and why a figure is missing."""

from __future__ import annotations

import numpy as np
import pytest

from vad_inspection.replay import scoring
from vad_inspection.replay.scoring import FrameOutcome, Outcome


def outcome(scores: dict[int, float | None], latency: float = 10.0) -> Outcome:
    got = Outcome()
    for stamp, score in scores.items():
        got.frames[stamp] = FrameOutcome(stamp, score, latency if score is not None else None,
                                         received_ns=stamp * 5_000_000)  # fmt: skip
    return got


def test_image_metrics_use_only_scored_frames_with_truth() -> None:
    why: dict[str, str] = {}
    truth = {1: False, 2: False, 3: True, 4: True, 5: True}
    got = scoring.image_metrics(truth, outcome({1: 0.1, 2: 0.6, 3: 0.7, 4: None, 9: 0.9}), why)
    # frames 1, 2 normal (0.1, 0.6), 3 anomalous (0.7); 4 missed and 9 without truth left out
    assert got["image_auroc"] == pytest.approx(1.0) and got["image_auprc"] == pytest.approx(1.0)
    assert why == {}
    one_class = scoring.image_metrics({1: False}, outcome({1: 0.1}), why)
    assert one_class == {"image_auroc": None, "image_auprc": None}
    assert why["image_auroc"] == "the scored frames hold one class only"


def test_pixel_metrics_shrink_maps_and_masks_alike() -> None:
    mask = np.zeros((256, 256), bool)
    mask[64:128, 64:128] = True
    heat = np.where(mask, 0.9, 0.1).astype(np.float32)
    got = outcome({1: 0.9})
    got.frames[1].heat = scoring.shrink(heat)
    assert got.frames[1].heat.shape == (128, 128)
    why: dict[str, str] = {}
    figures = scoring.pixel_metrics({1: mask}, got, why)
    assert figures["pixel_auroc"] == pytest.approx(1.0) and figures["dice"] == pytest.approx(1.0)
    assert scoring.pixel_metrics({}, got, why)["aupro"] is None
    assert why["aupro"] == "no pixel masks in the truth"


def test_defects_match_within_the_radius_or_half_their_size() -> None:
    truth = [
        {"id": "a", "position": [0.0, 0.0, 0.0], "size_m": 0.0},
        {"id": "b", "position": [5.0, 0.0, 0.0], "size_m": 2.0},  # matches within 1 m
        {"id": "c", "position": [9.0, 0.0, 0.0], "size_m": 0.0},  # nothing near
    ]
    got = Outcome(tags={"T1": (0.1, 0.0, 0.0), "T2": (5.8, 0.0, 0.0), "T3": (20.0, 0.0, 0.0)})
    why: dict[str, str] = {}
    figures = scoring.defect_metrics(truth, got, 0.15, why)
    assert figures["defects_found"] == 2 and figures["defects_total"] == 3
    assert figures["pose_error_m"]["median"] == pytest.approx(0.45)
    assert figures["spurious_tags"] == 1


def test_run_figures_count_missed_frames_and_latency() -> None:
    got = outcome({1: 0.2, 2: None, 3: 0.4}, latency=20.0)
    run = scoring.run_figures(got, {1: 0, 2: 0, 3: 0, 4: 0}, wall_s=2.0)
    assert (run["frames_sent"], run["frames_scored"], run["missed"]) == (4, 2, 2)
    assert run["latency_ms"]["p50"] == 20.0 and run["jitter_ms"] is None  # one interval only
    steady = outcome({1: 0.1, 2: 0.1, 3: 0.1})
    assert scoring.run_figures(steady, {1: 0, 2: 0, 3: 0}, 1.0)["jitter_ms"] == 0.0
    assert run["mean_rate_hz"] == 1.0


def test_verdict_says_when_detection_is_no_better_than_chance() -> None:
    assert scoring.verdict({"image_auroc": 0.52})[1] is False
    text, ok = scoring.verdict({"image_auroc": 0.91, "pixel_auroc": 0.8})
    assert ok and "0.91" in text and "pixel AUROC 0.80" in text
    assert scoring.verdict({"image_auroc": None})[0] == "no image ground truth: run figures only"


def test_by_category_groups_scored_frames() -> None:
    frames = [
        {"stamp_ns": 1, "anomalous": False, "category": "ground"},
        {"stamp_ns": 2, "anomalous": False, "category": "ground"},
        {"stamp_ns": 3, "anomalous": True, "category": "drill holes"},
    ]
    rows = scoring.by_category(frames, outcome({1: 0.2, 2: 0.6, 3: 0.9}))
    assert rows[0] == {"category": "drill holes", "frames": 1, "anomalous": True,
                       "mean_score": 0.9, "flagged": 1}  # fmt: skip
    assert rows[1]["frames"] == 2 and rows[1]["flagged"] == 1
