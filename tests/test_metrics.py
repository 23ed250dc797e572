"""The evaluation metrics against scikit-learn, an independent AUPRO reference and hand sums."""

from __future__ import annotations

import itertools
import re

import cv2
import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn import metrics as skm

from vad_inspection.eval import metrics as M
from vad_inspection.eval.metrics import MetricError

# Seeds x (continuous scores | heavy ties) x (float32: packed-key sort | float64: argsort).
CASES = [
    pytest.param(seed, ties, dtype, id=f"seed{seed}-{'ties' if ties else 'cont'}-{dtype.__name__}")
    for seed in range(4)
    for ties in (False, True)
    for dtype in (np.float32, np.float64)
]


def _case(seed: int, ties: bool, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Labels with a few anomalies and scores that separate them imperfectly, some negative."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 300))
    labels = (rng.random(n) < rng.uniform(0.1, 0.5)).astype(np.int64)
    labels[:2] = [0, 1]
    scores = rng.normal(size=n) + 1.2 * labels
    if ties:
        scores = np.round(scores, 1)
    return labels, scores.astype(dtype)


# ------------------------------------------------------------------------------------------
# Image level against scikit-learn
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "ties", "dtype"), CASES)
def test_auroc_and_auc_pr_equal_sklearn(seed: int, ties: bool, dtype: type) -> None:
    labels, scores = _case(seed, ties, dtype)
    assert M.auroc(labels, scores) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert M.auc_pr(labels, scores) == pytest.approx(
        skm.average_precision_score(labels, scores), abs=1e-12
    )


@pytest.mark.parametrize(("seed", "ties", "dtype"), CASES)
def test_auroc_is_the_midrank_mann_whitney_statistic(seed: int, ties: bool, dtype: type) -> None:
    labels, scores = _case(seed, ties, dtype)
    pos, neg = scores[labels == 1], scores[labels == 0]
    u = mannwhitneyu(pos, neg).statistic  # ties count 1/2
    assert M.auroc(labels, scores) == pytest.approx(u / (pos.size * neg.size), abs=1e-12)


@pytest.mark.parametrize(("seed", "ties", "dtype"), CASES)
@pytest.mark.parametrize("drop", [False, True])
def test_roc_curve_equals_sklearn(seed: int, ties: bool, dtype: type, drop: bool) -> None:
    labels, scores = _case(seed, ties, dtype)
    fpr, tpr, thresholds = M.roc_curve(labels, scores, drop_intermediate=drop)
    ref_fpr, ref_tpr, ref_thr = skm.roc_curve(labels, scores, drop_intermediate=drop)
    np.testing.assert_allclose(fpr, ref_fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(thresholds, ref_thr)
    if not drop:  # ties are one threshold: one point per distinct score, plus (0, 0) at +inf
        assert thresholds.size == np.unique(scores).size + 1


@pytest.mark.parametrize(("seed", "ties", "dtype"), CASES)
def test_pr_curve_equals_sklearn(seed: int, ties: bool, dtype: type) -> None:
    labels, scores = _case(seed, ties, dtype)
    precision, recall, thresholds = M.pr_curve(labels, scores)
    ref_p, ref_r, ref_t = skm.precision_recall_curve(labels, scores)
    np.testing.assert_allclose(precision, ref_p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(recall, ref_r, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(thresholds, ref_t)
    assert thresholds.size == np.unique(scores).size


def _sk_thresholded(labels: np.ndarray, scores: np.ndarray, t: float) -> tuple[float, ...]:
    predicted = scores >= t
    return (
        skm.f1_score(labels, predicted, zero_division=0),
        skm.precision_score(labels, predicted, zero_division=0),
        skm.recall_score(labels, predicted),
        skm.accuracy_score(labels, predicted),
    )


@pytest.mark.parametrize(("seed", "ties", "dtype"), CASES)
def test_f1_optimal_is_the_best_sklearn_f1_over_all_thresholds(
    seed: int, ties: bool, dtype: type
) -> None:
    labels, scores = _case(seed, ties, dtype)
    candidates = np.unique(scores)[::-1]  # high to low
    # Brute force by broadcasting (one row per threshold), independent of the sorted sweep;
    # sklearn's f1_score is too slow to call at every threshold of every case.
    predicted = scores[None, :] >= candidates[:, None]
    tp = (predicted & (labels == 1)).sum(axis=1)
    f1s = 2 * tp / (predicted.sum(axis=1) + labels.sum())
    best = candidates[int(np.argmax(f1s))]  # the highest threshold among equally good ones
    result = M.f1_optimal(labels, scores)
    assert result.threshold == float(best)
    got = (result.f1, result.precision, result.recall, result.accuracy)
    assert got == pytest.approx(_sk_thresholded(labels, scores, best), abs=1e-12)
    assert result.f1 == pytest.approx(f1s.max(), abs=1e-12)


@pytest.mark.parametrize(("seed", "ties", "dtype"), CASES)
def test_at_threshold_equals_sklearn(seed: int, ties: bool, dtype: type) -> None:
    labels, scores = _case(seed, ties, dtype)
    # Below everything, an exact (possibly tied) score, a quantile, above everything.
    for t in (scores.min() - 1, scores[5], np.quantile(scores, 0.7), scores.max() + 1):
        result = M.at_threshold(labels, scores, float(t))
        got = (result.f1, result.precision, result.recall, result.accuracy)
        assert got == pytest.approx(_sk_thresholded(labels, scores, float(t)), abs=1e-12)
        assert result.threshold == float(t)


# ------------------------------------------------------------------------------------------
# Image level by hand
# ------------------------------------------------------------------------------------------


def test_small_case_by_hand() -> None:
    labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    # AUROC = fraction of (anomalous, normal) pairs ranked correctly:
    #   0.35 > 0.1 yes, 0.35 > 0.4 no, 0.8 > 0.1 yes, 0.8 > 0.4 yes  ->  3 / 4.
    assert M.auroc(labels, scores) == pytest.approx(0.75)
    # From the top: 0.8 (anomalous) P=1 R=1/2; 0.4 (normal) P=1/2 R=1/2; 0.35 (anomalous)
    # P=2/3 R=1; 0.1 adds no recall. AP = sum of recall steps x precision = 1/2*1 + 1/2*2/3.
    assert M.auc_pr(labels, scores) == pytest.approx(0.5 + 1 / 3)
    # F1 = 2TP / (2TP + FP + FN) at each threshold: 0.8 -> 2/3, 0.4 -> 2/4, 0.35 -> 4/5,
    # 0.1 -> 4/6. Best at 0.35: TP=2 FP=1 FN=0 TN=1: precision 2/3, recall 1, accuracy 3/4.
    best = M.f1_optimal(labels, scores)
    assert best == M.ThresholdedScore(
        threshold=0.35, f1=0.8, precision=2 / 3, recall=1.0, accuracy=0.75
    )
    # F1 ties: at 0.9 TP=1 FP=0 FN=1 -> 2/3; at 0.6 TP=2 FP=2 FN=0 -> 4/6. The highest wins.
    assert M.f1_optimal([1, 0, 0, 1], [0.9, 0.8, 0.7, 0.6]).threshold == 0.9
    # At 0.4: predicted anomalous {0.4, 0.8}: TP=1 FP=1 FN=1 TN=1.
    assert M.at_threshold(labels, scores, 0.4) == M.ThresholdedScore(0.4, 0.5, 0.5, 0.5, 0.5)


def test_tied_case_by_hand() -> None:
    labels, scores = [0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]
    # Pairs (anomalous, normal): (0.5, 0.5) tie -> 1/2, (0.5, 0.2), (0.9, 0.5), (0.9, 0.2) -> 1.
    assert M.auroc(labels, scores) == pytest.approx(3.5 / 4)
    # The two 0.5s are one threshold: (FPR, TPR) goes (0,0) -> (0,1/2) at 0.9 -> (1/2,1) at 0.5
    # -> (1,1) at 0.2.
    fpr, tpr, thresholds = M.roc_curve(labels, scores)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.5, 0.2])
    # AP: 0.9 gives P=1 R=1/2; 0.5 gives P=2/3 R=1  ->  1/2 + 1/3.
    assert M.auc_pr(labels, scores) == pytest.approx(0.5 + 1 / 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_minus_zero_and_zero_are_one_threshold(dtype: type) -> None:
    scores = np.array([-0.0, 0.0, -1.0, 2.0], dtype=dtype)
    # (anomalous 0.0, normal -0.0) is a tie -> 1/2; the other three pairs are correct.
    assert M.auroc([0, 1, 0, 1], scores) == pytest.approx(3.5 / 4)
    assert M.roc_curve([0, 1, 0, 1], scores)[2].size == 4


def test_array_likes_and_bool_labels_give_the_same_result() -> None:
    labels, scores = _case(7, ties=True, dtype=np.float64)
    expected = M.auroc(labels, scores)
    assert M.auroc(labels.astype(bool), scores) == expected
    assert M.auroc(labels.tolist(), scores.tolist()) == expected
    assert M.auroc(labels.astype(np.float32), scores.astype(np.float32)) == expected


def test_no_nan_when_nothing_or_everything_is_flagged() -> None:
    labels, scores = [0, 1, 1], [0.2, 0.5, 0.9]
    nothing = M.at_threshold(labels, scores, 10.0)
    assert (nothing.f1, nothing.precision, nothing.recall) == (0.0, 0.0, 0.0)
    assert nothing.accuracy == pytest.approx(1 / 3)
    everything = M.at_threshold(labels, scores, -10.0)
    assert (everything.precision, everything.recall) == (pytest.approx(2 / 3), 1.0)
    # Average precision and F1 are defined without normal images (AUROC is not).
    assert M.auc_pr([1, 1], [0.3, 0.4]) == 1.0
    assert M.f1_optimal([1, 1], [0.3, 0.4]).f1 == 1.0


# ------------------------------------------------------------------------------------------
# Pixel level
# ------------------------------------------------------------------------------------------


def _blob_masks(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Masks with 0-4 filled ellipses and rectangles per image, sometimes merged or touching."""
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for mask in masks:
        for _ in range(int(rng.integers(0, 5))):
            cx, cy = (int(v) for v in rng.integers(2, size - 2, 2))
            if rng.random() < 0.5:
                axes = tuple(int(v) for v in rng.integers(1, size // 5, 2))
                cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            else:
                w, h = (int(v) for v in rng.integers(0, size // 4, 2))
                cv2.rectangle(mask, (cx, cy), (cx + w, cy + h), 1, -1)
    masks[0, 1, 1] = 1  # at least one region in the set
    return masks.astype(bool)


def _maps(rng: np.random.Generator, masks: np.ndarray, ties: bool) -> np.ndarray:
    noise = rng.normal(size=masks.shape).astype(np.float32)
    noise = np.stack([cv2.GaussianBlur(x, (0, 0), 1.5) for x in noise])
    maps = noise * 2.0 + masks * rng.uniform(0.2, 1.5)
    return (np.round(maps, 1) if ties else maps).astype(np.float32)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_pixel_auroc_and_auc_pr_equal_sklearn_on_pooled_pixels(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    masks = _blob_masks(rng, 4, 32)
    maps = _maps(rng, masks, ties)
    y, s = masks.ravel(), maps.ravel()
    for m in (maps, maps.astype(np.float64)):
        assert M.pixel_auroc(masks, m) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
        assert M.pixel_auc_pr(masks, m) == pytest.approx(
            skm.average_precision_score(y, s), abs=1e-12
        )


def _naive_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """The MVTec AD definition, literally: for every threshold, binarise, measure the FPR on
    normal pixels and the overlap of every 8-connected ground-truth region, average the overlaps;
    then integrate the (FPR, PRO) curve with trapezoids up to the limit, interpolating there."""
    regions = []  # (image index, bool region mask)
    for i, mask in enumerate(masks):
        count, labelled = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        regions += [(i, labelled == r) for r in range(1, count)]
    normal = ~masks
    curve = [(0.0, 0.0)]  # threshold +inf: nothing predicted
    for t in np.unique(maps)[::-1]:  # every distinct value, i.e. every point of the curve
        predicted = maps >= t
        fpr = predicted[normal].sum() / normal.sum()
        pro = np.mean([predicted[i][region].mean() for i, region in regions])
        curve.append((float(fpr), float(pro)))
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if x1 <= fpr_limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            if x0 < fpr_limit:  # the segment crosses the limit: cut it there
                y_lim = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
                area += (fpr_limit - x0) * (y0 + y_lim) / 2
            break
    return area / fpr_limit


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_aupro_equals_a_naive_threshold_loop(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    masks = _blob_masks(rng, 3, 24)
    maps = _maps(rng, masks, ties)
    n_regions = sum(
        cv2.connectedComponents(m.astype(np.uint8), connectivity=8)[0] - 1 for m in masks
    )
    assert n_regions >= 3
    for limit in (0.3, 0.05):
        expected = _naive_aupro(masks, maps, limit)
        assert M.aupro(masks, maps, fpr_limit=limit) == pytest.approx(expected, abs=1e-9)
        assert M.aupro(masks, maps.astype(np.float64), fpr_limit=limit) == pytest.approx(
            expected, abs=1e-9
        )


def test_aupro_known_values_for_perfect_constant_and_inverted_maps() -> None:
    rng = np.random.default_rng(0)
    masks = _blob_masks(rng, 3, 32)
    noise = rng.random(masks.shape).astype(np.float32)
    perfect = masks + noise  # every anomalous pixel above every normal one
    for limit in (0.3, 0.05, 1.0):
        assert M.aupro(masks, perfect, fpr_limit=limit) == pytest.approx(1.0, abs=1e-12)
    # A constant map is one threshold: the curve is the diagonal (0,0)->(1,1), whose area up to
    # 0.3 is 0.3^2 / 2 = 0.045, normalised by 0.3 -> 0.15 (and 1/2 over the full range).
    constant = np.full(masks.shape, 0.7, dtype=np.float32)
    assert M.aupro(masks, constant) == pytest.approx(0.15, abs=1e-12)
    assert M.aupro(masks, constant, fpr_limit=1.0) == pytest.approx(0.5, abs=1e-12)
    # Every normal pixel above every anomalous one: PRO stays 0 until FPR reaches 1.
    assert M.aupro(masks, -perfect) == 0.0


def test_aupro_averages_over_regions_not_pixels_by_hand() -> None:
    # One 1 x 8 image: region A = pixel 0 (1 px), region B = pixels 2-4 (3 px), 4 normal pixels.
    masks = np.array([[[1, 0, 1, 1, 1, 0, 0, 0]]], dtype=bool)
    maps = np.array([[[0.9, 0.7, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1]]], dtype=np.float32)
    # Thresholds from the top, (FPR, PRO = mean of region overlaps):
    #   0.9: (0, (1 + 0) / 2 = 0.5); 0.7: (1/4, 0.5); 0.5: (1/4, 1); 0.1: (1, 1).
    # Area up to 0.3: 0.25 * 0.5 (flat at 0.5) + 0.05 * 1 (flat at 1) = 0.175, / 0.3.
    # Pooling pixels instead would give PRO 1/4 at the first step, not 1/2.
    assert M.aupro(masks, maps) == pytest.approx(0.175 / 0.3, abs=1e-12)


def test_aupro_uses_8_connectivity_by_hand() -> None:
    # (0,0) and (1,1) touch diagonally: one region of 2 px under 8-connectivity (three regions
    # would be counted under 4-connectivity); (3,3) is a second region.
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, [0, 1, 3], [0, 1, 3]] = True
    maps = np.full((1, 4, 4), 0.5, dtype=np.float32)
    maps[0, 0, 0] = maps[0, 3, 3] = 0.9
    maps[0, 1, 1] = 0.1
    # At 0.9: FPR 0 and PRO = (1/2 + 1) / 2 = 0.75 (4-connectivity: (1 + 0 + 1) / 3 = 2/3);
    # PRO stays 0.75 up to FPR 1 at 0.5, so the normalised area is 0.75.
    assert M.aupro(masks, maps) == pytest.approx(0.75, abs=1e-12)


def test_dice_and_iou_by_hand_are_pooled_over_images() -> None:
    masks = np.zeros((2, 2, 3), dtype=bool)
    predicted = np.zeros_like(masks)
    masks[0, 0, :2] = True  # image 0: truth {(0,0), (0,1)}
    predicted[0, 0, 1:] = True  # prediction {(0,1), (0,2)}: 1 px overlap
    # Dice = 2 * 1 / (2 + 2) = 1/2, IoU = 1 / 3 (union of 3 px).
    assert M.dice(masks[:1], predicted[:1]) == pytest.approx(0.5)
    assert M.iou(masks[:1], predicted[:1]) == pytest.approx(1 / 3)
    masks[1, 1, :] = True  # image 1: 3 px of truth, found exactly
    predicted[1, 1, :] = True
    # Pooled: overlap 1 + 3 = 4, |truth| = 5, |prediction| = 5: Dice 8/10, IoU 4/6.
    # (The mean of per-image scores would be (1/2 + 1) / 2 = 3/4 for Dice.)
    assert M.dice(masks, predicted) == pytest.approx(0.8)
    assert M.iou(masks, predicted) == pytest.approx(4 / 6)
    assert M.dice(masks, predicted) == pytest.approx(skm.f1_score(masks.ravel(), predicted.ravel()))
    assert M.iou(masks, predicted) == pytest.approx(
        skm.jaccard_score(masks.ravel(), predicted.ravel())
    )


def test_dice_and_iou_empty_cases() -> None:
    empty = np.zeros((2, 4, 4), dtype=bool)
    some = empty.copy()
    some[1, 2, 2] = True
    assert M.dice(empty, empty) == 1.0  # nothing to find and nothing claimed: perfect
    assert M.iou(empty, empty) == 1.0
    assert M.dice(empty, some) == 0.0
    assert M.iou(some, empty) == 0.0
    assert M.dice(some.astype(np.uint8), some.astype(np.uint8)) == 1.0


def test_tolerant_f1_by_hand() -> None:
    masks = np.zeros((2, 9, 9), dtype=bool)
    predicted = np.zeros_like(masks)
    masks[0, 4, 1:8] = True  # image 0: a 7 px horizontal crack
    predicted[0, 5, 1:8] = True  # predicted one row below: no exact overlap
    predicted[0, 0, 0] = True  # and one stray pixel 4+ px from the crack
    masks[1, 2, 2] = True  # image 1: one truth pixel, nothing predicted
    exact = M.tolerant_f1(masks, predicted, 0)
    assert (exact.precision, exact.recall) == (0.0, 0.0)
    assert exact.f1 == M.dice(masks, predicted) == 0.0
    # 1 px: the 7 shifted pixels match (precision 7/8), 7 of 8 truth pixels are found
    one = M.tolerant_f1(masks, predicted, 1)
    assert (one.tolerance, one.precision, one.recall) == (1, 7 / 8, 7 / 8)
    assert one.f1 == pytest.approx(7 / 8)
    # Euclidean radius: (0, 0) is sqrt(4^2 + 1^2) > 4 from the crack's end at (4, 1)
    assert M.tolerant_f1(masks, predicted, 4).precision == 7 / 8
    assert M.tolerant_f1(masks, predicted, 5).precision == 1.0


def test_tolerant_f1_zero_equals_dice_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    masks, predicted = rng.random((2, 3, 16, 16)) < 0.2
    assert M.tolerant_f1(masks, predicted, 0).f1 == pytest.approx(M.dice(masks, predicted))
    wider = [M.tolerant_f1(masks, predicted, t).f1 for t in range(4)]
    assert wider == sorted(wider)  # a wider match radius never scores lower
    for bad in (-1, 1.5, True):
        with pytest.raises(M.MetricError, match="tolerance must be an integer"):
            M.tolerant_f1(masks, predicted, bad)
    with pytest.raises(M.MetricError, match="needs at least one anomalous"):
        M.tolerant_f1(np.zeros_like(masks), predicted)


# ------------------------------------------------------------------------------------------
# Degenerate input
# ------------------------------------------------------------------------------------------


def test_metric_error_is_a_value_error() -> None:
    assert issubclass(MetricError, ValueError)


def test_one_class_raises_with_counts() -> None:
    msg = "image AUROC needs both normal and anomalous images; got 12 normal and 0 anomalous"
    with pytest.raises(MetricError, match=re.escape(msg)):
        M.auroc(np.zeros(12), np.arange(12.0))
    with pytest.raises(MetricError, match="got 0 normal and 3 anomalous"):
        M.auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(MetricError, match="ROC curve needs both normal and anomalous samples"):
        M.roc_curve([1, 1], [0.1, 0.2])
    for fn, name in (
        (M.auc_pr, "image AUC-PR"),
        (M.f1_optimal, "image F1"),
        (M.pr_curve, "PR curve"),
    ):
        with pytest.raises(MetricError, match=f"{name} needs at least one anomalous"):
            fn([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(MetricError, match="image F1 needs at least one anomalous image; got 2"):
        M.at_threshold([0, 0], [0.1, 0.2], 0.15)


def test_pixel_metrics_need_anomalous_pixels() -> None:
    masks = np.zeros((2, 4, 4), dtype=bool)
    maps = np.random.default_rng(0).random(masks.shape)
    msg = "AUPRO needs both normal and anomalous pixels; got 32 normal and 0 anomalous"
    with pytest.raises(MetricError, match=re.escape(msg)):
        M.aupro(masks, maps)
    with pytest.raises(MetricError, match="pixel AUROC needs both normal and anomalous pixels"):
        M.pixel_auroc(masks, maps)
    with pytest.raises(MetricError, match="pixel AUC-PR needs at least one anomalous pixel"):
        M.pixel_auc_pr(masks, maps)
    with pytest.raises(MetricError, match="got 0 normal and 32 anomalous"):
        M.aupro(~masks, maps)


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([], [], "image AUROC: empty input (no images)"),
        ([0, 1], [0.1, 0.2, 0.3], "labels and scores have different shapes (2,) and (3,)"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "scores contain 1 NaN and 0 infinite values"),
        ([0, 1, 1], [0.1, np.inf, -np.inf], "scores contain 0 NaN and 2 infinite values"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "labels must be 0/1 or bool; found other values [2]"),
        (["a", "b"], [0.1, 0.2], "labels must be 0/1 or bool; got dtype <U1"),
        ([0, 1], ["x", "y"], "scores must be numeric"),
        ([[0, 1]], [[0.1, 0.2]], "labels must have shape (N,); got shape (1, 2)"),
    ],
)
def test_bad_image_input_raises(labels: list, scores: list, message: str) -> None:
    with pytest.raises(MetricError, match=re.escape(message)):
        M.auroc(labels, scores)


def test_bad_pixel_input_raises() -> None:
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 1, 1] = True
    with pytest.raises(MetricError, match=re.escape("maps must have shape (N, H, W)")):
        M.pixel_auroc(masks, np.zeros((4, 4)))
    with pytest.raises(MetricError, match=re.escape("AUPRO: masks and maps have different")):
        M.aupro(masks, np.zeros((2, 4, 5)))
    with pytest.raises(MetricError, match="AUPRO: fpr_limit must be in"):
        M.aupro(masks, np.zeros((2, 4, 4)), fpr_limit=0.0)
    with pytest.raises(MetricError, match="AUPRO: maps contain 1 NaN"):
        M.aupro(masks, np.where(masks, np.nan, 0.0))
    with pytest.raises(MetricError, match=re.escape("Dice: predicted must be 0/1 or bool")):
        M.dice(masks, np.full(masks.shape, 0.5))
    with pytest.raises(MetricError, match="IoU: masks and predicted have different shapes"):
        M.iou(masks, masks[:1])
    with pytest.raises(MetricError, match="image F1: threshold is NaN"):
        M.at_threshold([0, 1], [0.1, 0.2], float("nan"))
