"""The constrained VAE on real CrackForest 64 px tiles against the two trivial baselines.

Setting 1 of the evaluation harness (seed 0), its thresholds and metrics; the margins asserted are
the ones measured on the 2-core development machine (``benchmarks/vae.py``, README), less a small
allowance for floating-point differences between CPUs. The VAE is trained with the crack options
(:data:`~vad_inspection.vad.vae.CRACK_OPTIONS`). What is asserted is also what the README says:
its darker-than-reconstruction map beats both baselines on pixel AUROC and Dice and meets the
issue's pixel AUROC and Dice targets, the mask rule (width by each crack's depth, short regions
dropped) is what lifts Dice over 0.6, its image score beats both and meets the image AUROC target,
the line detector is what lifts the image score, the Grad-CAM attention map of the same network is
worse than both, and ``dark_lines`` (the crack options without the network) matches the VAE.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_dataset

from vad_inspection.data import open_dataset
from vad_inspection.eval import metrics as M
from vad_inspection.eval.runner import load_images, load_masks, predict_batched
from vad_inspection.eval.settings import build_split
from vad_inspection.vad.registry import BASELINES, CommonOptions, create_model
from vad_inspection.vad.vae import CRACK_OPTIONS

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

SIZE = 64
TOLERANCE = 0.01
PLAIN_MASKS = {"mask_width_fraction": 0.0, "mask_min_length": 0}


def _metrics(model, val: np.ndarray, test: np.ndarray, labels, masks) -> dict[str, float]:
    """Image AUROC, pixel AUROC and Dice with the harness's rules (runner.evaluate)."""
    val_pred, test_pred = predict_batched(model, val, 64), predict_batched(model, test, 64)
    predicted = test_pred.masks(float(np.quantile(val_pred.maps, 0.99)))
    return {
        "image_auroc": M.auroc(labels, test_pred.scores),
        "pixel_auroc": M.pixel_auroc(masks, test_pred.maps),
        "dice": M.dice(masks, predicted),
    }


@pytest.fixture(scope="module")
def measured() -> dict[str, dict[str, float]]:
    root = shared_dataset("crackforest")
    split = build_split(open_dataset(f"crackforest:{root}?tile={SIZE}"), 1, seed=0)
    train = load_images(split.train, SIZE, "train", False)
    val = load_images(split.val, SIZE, "val", False)
    test = load_images(split.test, SIZE, "test", False)
    labels = np.array([s.label for s in split.test])
    masks = load_masks(split.test, SIZE)
    common = CommonOptions(size=SIZE, seed=0)
    vae = create_model("vae", common, **CRACK_OPTIONS)
    vae.fit(list(train))
    assert vae.summary.seconds < 600  # the training budget on two cores
    out = {
        "vae_attention": _metrics(
            vae.with_options(map_source="attention"), val, test, labels, masks
        ),
        "vae_darker": _metrics(vae, val, test, labels, masks),
        "vae_darker_no_line": _metrics(
            vae.with_options(line_length=0, sigma=2.0, **PLAIN_MASKS), val, test, labels, masks
        ),
        "vae_darker_plain_masks": _metrics(
            vae.with_options(**PLAIN_MASKS), val, test, labels, masks
        ),
    }
    for name in BASELINES:
        out[name] = _metrics(create_model(name, common), val, test, labels, masks)
    out["dark_lines"] = _metrics(create_model("dark_lines", common), val, test, labels, masks)
    print(out)
    return out


def test_darker_map_beats_both_baselines_at_pixel_level(measured) -> None:
    vae, dark, contrast = (
        measured["vae_darker"],
        measured["darkest_pixel"],
        measured["local_contrast"],
    )
    # measured: pixel AUROC 0.955 vs 0.831 / 0.875; Dice 0.605 vs 0.302 / 0.332
    assert vae["pixel_auroc"] >= contrast["pixel_auroc"] + 0.080 - TOLERANCE
    assert vae["pixel_auroc"] >= dark["pixel_auroc"] + 0.124 - TOLERANCE
    assert vae["pixel_auroc"] >= 0.95 - TOLERANCE  # the target
    assert vae["dice"] >= contrast["dice"] + 0.273 - TOLERANCE
    assert vae["dice"] >= dark["dice"] + 0.303 - TOLERANCE
    assert vae["dice"] >= 0.6 - TOLERANCE  # the target


def test_mask_rule_lifts_dice_and_leaves_the_map_alone(measured) -> None:
    rule, plain = measured["vae_darker"], measured["vae_darker_plain_masks"]
    # measured: Dice 0.605 vs 0.550 with the threshold alone
    assert rule["dice"] >= plain["dice"] + 0.055 - TOLERANCE
    assert rule["pixel_auroc"] == plain["pixel_auroc"]
    assert rule["image_auroc"] == plain["image_auroc"]


def test_image_score_beats_both_baselines(measured) -> None:
    vae, dark, contrast = (
        measured["vae_darker"],
        measured["darkest_pixel"],
        measured["local_contrast"],
    )
    # measured: image AUROC 0.907 vs 0.791 (darkest pixel) and 0.712 (local contrast)
    assert vae["image_auroc"] >= dark["image_auroc"] + 0.116 - TOLERANCE
    assert vae["image_auroc"] >= contrast["image_auroc"] + 0.195 - TOLERANCE
    assert vae["image_auroc"] >= 0.90 - TOLERANCE  # the target


def test_line_detector_raises_image_auroc_pixel_auroc_and_dice(measured) -> None:
    with_line, without = measured["vae_darker_plain_masks"], measured["vae_darker_no_line"]
    # measured: image AUROC 0.907 vs 0.834, Dice 0.550 vs 0.499, pixel AUROC 0.955 vs 0.941
    # (without: the Gaussian sigma 2 map the crack options had before the line detector; both
    # with plain thresholded masks)
    assert with_line["image_auroc"] >= without["image_auroc"] + 0.073 - TOLERANCE
    assert with_line["dice"] >= without["dice"] + 0.051 - TOLERANCE
    assert with_line["pixel_auroc"] >= without["pixel_auroc"] + 0.014 - TOLERANCE


def test_attention_map_does_not_beat_the_baselines(measured) -> None:
    """The paper's claim does not hold on these tiles (README); if this fails, update it."""
    attention = measured["vae_attention"]
    for name in BASELINES:
        assert attention["pixel_auroc"] < measured[name]["pixel_auroc"]
        assert attention["dice"] < measured[name]["dice"]


def test_darker_map_is_matched_by_a_one_sided_high_pass(measured) -> None:
    """README: on these tiles the VAE's map is no better than ``dark_lines``, the same polarity
    and line detector on a local mean instead of the reconstruction.
    If the VAE pulls ahead (or falls behind) by more than the tolerance, update the README."""
    vae, reference = measured["vae_darker"], measured["dark_lines"]
    # measured: 0.955 vs 0.955 (pixel AUROC), 0.605 vs 0.608 (Dice), 0.907 vs 0.906 (image AUROC)
    for metric in ("pixel_auroc", "dice", "image_auroc"):
        assert abs(vae[metric] - reference[metric]) <= 0.02, metric
