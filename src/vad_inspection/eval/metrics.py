"""Image- and pixel-level anomaly-detection metrics, as the papers and scikit-learn define them.

Conventions: a higher score means more anomalous, label 1 (or True) means anomalous, and a sample
is predicted anomalous when ``score >= threshold``. Every curve is computed by sorting the scores
once; samples with equal scores form one threshold (one point on the curve), exactly as
scikit-learn does, so the ranking metrics here equal ``sklearn.metrics`` on the same input.

Degenerate input (empty, mismatched shapes, NaN or infinite scores, labels other than 0/1, or a
missing class a metric needs) raises :class:`MetricError` with a message naming the metric; no
function here returns NaN.

Only numpy and OpenCV are used (scikit-learn is a test-time reference, not a dependency).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "MetricError",
    "ThresholdedScore",
    "TolerantScore",
    "at_threshold",
    "auc_pr",
    "aupro",
    "auroc",
    "dice",
    "f1_optimal",
    "iou",
    "pixel_auc_pr",
    "pixel_auroc",
    "pr_curve",
    "roc_curve",
    "tolerant_f1",
]

_Need = Literal["both", "anomalous", "none"]
_PIXEL_NAMES = ("masks", "maps")


class MetricError(ValueError):
    """The input does not define the requested metric (the message says which input and why)."""


@dataclass(frozen=True)
class ThresholdedScore:
    """Binary-decision quality at one threshold (predicted anomalous = ``score >= threshold``).

    When nothing is predicted anomalous, precision is 0 (scikit-learn's ``zero_division=0``
    convention), so F1 is 0 as well rather than undefined.
    """

    threshold: float
    f1: float
    precision: float
    recall: float
    accuracy: float


# --------------------------------------------------------------------------------------------
# Validation (shared by every public metric)
# --------------------------------------------------------------------------------------------


def _as_binary(values: np.ndarray, metric: str, name: str) -> np.ndarray:
    if values.dtype == np.bool_:
        return values
    if values.dtype.kind not in "biuf":
        raise MetricError(f"{metric}: {name} must be 0/1 or bool; got dtype {values.dtype}")
    if not ((values == 0) | (values == 1)).all():
        found = np.unique(values[(values != 0) & (values != 1)])[:5].tolist()
        raise MetricError(f"{metric}: {name} must be 0/1 or bool; found other values {found}")
    return values.astype(bool)


def _as_scores(values: np.ndarray, metric: str, name: str) -> np.ndarray:
    """Finite float scores; float32 is kept (and small integer types become float32, exactly)
    because it takes the fast sort in :func:`_sort_descending`."""
    if values.dtype.kind not in "biuf":
        raise MetricError(f"{metric}: {name} must be numeric; got dtype {values.dtype}")
    if values.dtype == np.float32:
        out = values
    elif values.dtype.kind == "b" or values.dtype.itemsize <= 2:
        out = values.astype(np.float32)
    else:
        out = values.astype(np.float64, copy=False)
    if values.dtype.kind == "f" and not np.isfinite(out).all():
        n_nan = int(np.isnan(out).sum())
        n_inf = int(np.isinf(out).sum())
        raise MetricError(
            f"{metric}: {name} contain {n_nan} NaN and {n_inf} infinite values; "
            "every score must be a finite number"
        )
    return out


def _validated(
    labels: ArrayLike,
    scores: ArrayLike,
    *,
    metric: str,
    unit: str,
    need: _Need,
    ndim: int,
    names: tuple[str, str] = ("labels", "scores"),
    binary_scores: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Check one (labels, scores) pair and return them as (bool array, float or bool array).

    ``unit`` is the singular noun of one sample ("image", "pixel"); ``need`` says which classes
    the metric cannot do without; ``binary_scores`` validates the second array as 0/1 too (for
    predicted masks).
    """
    y = np.asarray(labels)
    s = np.asarray(scores)
    shape_hint = "(N,)" if ndim == 1 else "(N, H, W)"
    for name, arr in zip(names, (y, s), strict=True):
        if arr.ndim != ndim:
            raise MetricError(
                f"{metric}: {name} must have shape {shape_hint}; got shape {arr.shape}"
            )
    if y.shape != s.shape:
        raise MetricError(
            f"{metric}: {names[0]} and {names[1]} have different shapes {y.shape} and {s.shape}"
        )
    if y.size == 0:
        raise MetricError(f"{metric}: empty input (no {unit}s)")
    y = _as_binary(y, metric, names[0])
    s = _as_binary(s, metric, names[1]) if binary_scores else _as_scores(s, metric, names[1])
    n_pos = int(np.count_nonzero(y))
    n_neg = y.size - n_pos
    got = f"got {n_neg} normal and {n_pos} anomalous"
    if need == "both" and (n_pos == 0 or n_neg == 0):
        raise MetricError(f"{metric} needs both normal and anomalous {unit}s; {got}")
    if need == "anomalous" and n_pos == 0:
        raise MetricError(f"{metric} needs at least one anomalous {unit}; {got}")
    return y, s


# --------------------------------------------------------------------------------------------
# The one sort every curve is built on
# --------------------------------------------------------------------------------------------

_SIGN = np.int32(-(2**31))


def _float32_key(scores: np.ndarray) -> np.ndarray:
    """uint32 keys that sort like the float32 scores (sign bit flipped, negatives inverted)."""
    bits = (scores + np.float32(0.0)).view(np.int32)  # + 0 turns -0.0 into +0.0: one threshold
    mask = bits >> 31  # arithmetic shift: -1 for negative floats, 0 otherwise
    mask |= _SIGN
    bits ^= mask
    return bits.view(np.uint32)


def _float32_from_key(keys: np.ndarray) -> np.ndarray:
    bits = keys.astype(np.uint32).view(np.int32)
    mask = ~(bits >> 31)
    mask |= _SIGN
    return (bits ^ mask).view(np.float32)


def _sort_descending(scores: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sort 1-D ``scores`` high to low, carrying an unsigned integer ``code`` per sample.

    Returns ``(thresholds, last, codes_sorted)``: the distinct scores from high to low, the index
    (in the sorted order) of the last sample having each of them, and the codes in sorted order.
    A cumulative sum over ``codes_sorted`` read at ``last`` gives any count "at or above each
    threshold" with equal scores merged into one threshold.

    float32 scores take a fast path: each score becomes an order-preserving 32-bit key packed
    with its code into one uint64; a plain (SIMD) ``np.sort`` of those is about ten times faster
    than ``np.argsort`` on the 6.5 M pixels of 100 maps of 256 x 256. float64 scores have no
    spare bits for the code and use ``argsort`` (about 3x slower overall).
    """
    n = scores.size
    if scores.dtype == np.float32 and n < 2**32:
        packed = _float32_key(scores).astype(np.uint64)
        packed <<= np.uint64(32)
        packed |= codes.astype(np.uint64, copy=False)
        packed.sort()
        packed = packed[::-1]
        keys = (packed >> np.uint64(32)).astype(np.uint32)
        codes_sorted = (packed & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        last = np.append(np.flatnonzero(keys[1:] != keys[:-1]), n - 1)
        return _float32_from_key(keys[last]).astype(np.float64), last, codes_sorted
    order = np.argsort(scores)[::-1]
    sorted_scores = scores[order]
    last = np.append(np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]), n - 1)
    return sorted_scores[last].astype(np.float64), last, codes[order]


def _binary_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positives, true positives, threshold) at every distinct score, high to low."""
    thresholds, last, y_sorted = _sort_descending(s.ravel(), y.ravel())
    tps = np.cumsum(y_sorted, dtype=np.int64)[last]
    fps = last + 1 - tps
    return fps, tps, thresholds


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    fps, tps, _ = _binary_counts(y, s)
    fps = np.concatenate(([0], fps)).astype(np.float64)
    tps = np.concatenate(([0], tps)).astype(np.float64)
    # Trapezoids between consecutive distinct thresholds; a tie block of a positives and b
    # negatives is a diagonal step worth a * b / 2, i.e. each tied pair counts one half.
    area = np.dot(np.diff(fps), tps[1:] + tps[:-1]) / 2.0
    return float(area / (fps[-1] * tps[-1]))


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
    fps, tps, _ = _binary_counts(y, s)
    precision = tps / (tps + fps)
    recall_steps = np.diff(tps, prepend=0) / tps[-1]
    return float(np.dot(recall_steps, precision))


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------


def roc_curve(
    labels: ArrayLike, scores: ArrayLike, *, drop_intermediate: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)`` with thresholds from ``+inf`` down to the lowest score.

    Same output as ``sklearn.metrics.roc_curve`` (the first point (0, 0) has threshold ``inf``);
    ``drop_intermediate=True`` removes collinear points exactly as scikit-learn does, which keeps
    plots of large (pixel) curves small without changing their area. Our default keeps every
    distinct threshold.
    """
    y, s = _validated(labels, scores, metric="ROC curve", unit="sample", need="both", ndim=1)
    fps, tps, thresholds = _binary_counts(y, s)
    if drop_intermediate and fps.size > 2:
        corner = np.logical_or(np.diff(fps, 2), np.diff(tps, 2))
        keep = np.flatnonzero(np.concatenate(([True], corner, [True])))
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fpr = np.concatenate(([0.0], fps / fps[-1]))
    tpr = np.concatenate(([0.0], tps / tps[-1]))
    return fpr, tpr, np.concatenate(([np.inf], thresholds))


def pr_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve ``(precision, recall, thresholds)``, as ``precision_recall_curve``.

    Thresholds are the distinct scores in increasing order; ``precision`` and ``recall`` have one
    more entry, the conventional end point (precision 1, recall 0) that closes the step function.
    """
    y, s = _validated(labels, scores, metric="PR curve", unit="sample", need="anomalous", ndim=1)
    fps, tps, thresholds = _binary_counts(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return (
        np.concatenate((precision[::-1], [1.0])),
        np.concatenate((recall[::-1], [0.0])),
        thresholds[::-1].copy(),
    )


# --------------------------------------------------------------------------------------------
# Image level
# --------------------------------------------------------------------------------------------


def auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Image AUROC: the probability that a random anomalous image outscores a random normal one.

    Ties count one half (the midrank / Mann-Whitney U statistic), which is what the trapezoidal
    area under the tie-merged ROC curve gives; equal to ``sklearn.metrics.roc_auc_score``.
    Needs both classes.
    """
    y, s = _validated(labels, scores, metric="image AUROC", unit="image", need="both", ndim=1)
    return _auroc(y, s)


def auc_pr(labels: ArrayLike, scores: ArrayLike) -> float:
    """Image "AUC-PR" / "AP": average precision, ``sum_k (R_k - R_{k-1}) * P_k`` over thresholds.

    This is the step-wise (non-interpolated) area under the precision-recall curve, equal to
    ``sklearn.metrics.average_precision_score``. We do not integrate the PR curve with trapezoids:
    linear interpolation between PR points is not achievable by any classifier and overstates the
    area (Davis & Goadrich, ICML 2006), and AP is what the anomaly-detection literature and
    scikit-learn report under both names. A random ranking scores about the anomaly rate, not 0.5.
    Needs at least one anomalous image.
    """
    y, s = _validated(labels, scores, metric="image AUC-PR", unit="image", need="anomalous", ndim=1)
    return _average_precision(y, s)


def _thresholded(threshold: float, tp: int, fp: int, n_pos: int, n_neg: int) -> ThresholdedScore:
    """The one place precision, recall, F1 and accuracy are defined from counts."""
    fn = n_pos - tp
    tn = n_neg - fp
    return ThresholdedScore(
        threshold=float(threshold),
        f1=2.0 * tp / (2 * tp + fp + fn),  # n_pos > 0 is checked, so the denominator is > 0
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / n_pos,
        accuracy=(tp + tn) / (n_pos + n_neg),
    )


def f1_optimal(labels: ArrayLike, scores: ArrayLike) -> ThresholdedScore:
    """The best F1 over all thresholds, and precision, recall and accuracy at that threshold.

    Candidate thresholds are the distinct scores (any other threshold gives the same predictions
    as one of them). This is the "F1-max" of the anomaly-detection literature: an optimistic,
    oracle-threshold number; report :func:`at_threshold` with a threshold calibrated on held-out
    normal data next to it. Among equally good thresholds the highest (fewest alarms) is returned.
    Needs at least one anomalous image.
    """
    y, s = _validated(labels, scores, metric="image F1", unit="image", need="anomalous", ndim=1)
    fps, tps, thresholds = _binary_counts(y, s)
    n_pos, n_neg = int(tps[-1]), int(fps[-1])
    best = int(np.argmax(2 * tps / (tps + fps + n_pos)))
    return _thresholded(thresholds[best], int(tps[best]), int(fps[best]), n_pos, n_neg)


def at_threshold(labels: ArrayLike, scores: ArrayLike, threshold: float) -> ThresholdedScore:
    """F1, precision, recall and accuracy when predicting anomalous for ``score >= threshold``.

    Use with a threshold fixed before seeing the test labels (e.g. calibrated on validation
    normals), which is what a deployed robot would run with. Needs at least one anomalous image.
    """
    y, s = _validated(labels, scores, metric="image F1", unit="image", need="anomalous", ndim=1)
    threshold = float(threshold)
    if np.isnan(threshold):
        raise MetricError("image F1: threshold is NaN")
    predicted = s >= threshold
    tp = int(np.count_nonzero(predicted & y))
    fp = int(np.count_nonzero(predicted & ~y))
    n_pos = int(np.count_nonzero(y))
    return _thresholded(threshold, tp, fp, n_pos, y.size - n_pos)


# --------------------------------------------------------------------------------------------
# Pixel level
# --------------------------------------------------------------------------------------------


def pixel_auroc(masks: ArrayLike, maps: ArrayLike) -> float:
    """Pixel AUROC over all pixels of all images pooled (MVTec AD's "pixel-wise AUROC").

    Same definition as :func:`auroc`, with pixels for images. Dominated by the many easy normal
    pixels, and so favours large defects; read it together with :func:`aupro`.
    """
    m, s = _validated(
        masks, maps, metric="pixel AUROC", unit="pixel", need="both", ndim=3, names=_PIXEL_NAMES
    )
    return _auroc(m, s)


def pixel_auc_pr(masks: ArrayLike, maps: ArrayLike) -> float:
    """Pixel average precision over all pixels pooled; same definition as :func:`auc_pr`.

    Unlike pixel AUROC it is sensitive to the heavy class imbalance (defects cover a few percent
    of the pixels), so it separates maps that pixel AUROC rates alike.
    """
    m, s = _validated(
        masks,
        maps,
        metric="pixel AUC-PR",
        unit="pixel",
        need="anomalous",
        ndim=3,
        names=_PIXEL_NAMES,
    )
    return _average_precision(m, s)


def _region_codes(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected ground-truth regions (8-connectivity, per image) numbered 1..R over the whole
    set, 0 for normal pixels; and the size of each region (index r - 1)."""
    codes = np.zeros(masks.shape, dtype=np.uint32)
    sizes: list[np.ndarray] = []
    offset = 0
    for i, mask in enumerate(masks):
        count, labelled = cv2.connectedComponents(
            mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S
        )
        if count > 1:
            codes[i] = np.where(labelled > 0, labelled + offset, 0)
            sizes.append(np.bincount(labelled.ravel(), minlength=count)[1:])
            offset += count - 1
    return codes, np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)


def _partial_trapezoid(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under (x, y) from x[0] to ``x_max``, the curve interpolated linearly at
    ``x_max`` (x is non-decreasing and spans ``x_max``)."""
    k = int(np.searchsorted(x, x_max, side="right"))  # x[:k] <= x_max < x[k:]
    area = float(np.dot(np.diff(x[:k]), y[1:k] + y[: k - 1]) / 2.0)
    if k < x.size and x[k - 1] < x_max:
        y_max = y[k - 1] + (y[k] - y[k - 1]) * (x_max - x[k - 1]) / (x[k] - x[k - 1])
        area += (x_max - x[k - 1]) * (y[k - 1] + y_max) / 2.0
    return area


def aupro(masks: ArrayLike, maps: ArrayLike, fpr_limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap (PRO) curve up to ``fpr_limit`` (MVTec AD).

    Bergmann et al., "The MVTec Anomaly Detection Dataset", IJCV 2021: for each threshold, PRO is
    the mean over all connected ground-truth regions of the whole set (8-connectivity) of the
    fraction of the region predicted anomalous, and the false-positive rate is taken over the
    normal pixels. Averaging per region makes a small crack count as much as a large stain,
    which pixel AUROC does not. The curve, from (0, 0), is integrated with trapezoids up to
    ``fpr_limit`` (interpolated there) and divided by ``fpr_limit``, so a perfect map scores 1.0,
    a constant map ``fpr_limit / 2`` and a map that ranks every normal pixel above every
    anomalous one 0.0.

    Computed exactly at every distinct map value with one sort: each anomalous pixel adds
    ``1 / (R * |its region|)`` to PRO and each normal pixel ``1 / n_normal`` to the FPR.
    """
    m, s = _validated(
        masks, maps, metric="AUPRO", unit="pixel", need="both", ndim=3, names=_PIXEL_NAMES
    )
    fpr_limit = float(fpr_limit)
    if not 0.0 < fpr_limit <= 1.0:
        raise MetricError(f"AUPRO: fpr_limit must be in (0, 1]; got {fpr_limit}")
    codes, sizes = _region_codes(m)  # at least one region: need="both" saw anomalous pixels
    weight = np.concatenate(([0.0], 1.0 / (sizes.size * sizes.astype(np.float64))))
    _, last, codes_sorted = _sort_descending(s.ravel(), codes.ravel())
    n_normal = m.size - int(sizes.sum())
    fpr = np.cumsum(codes_sorted == 0, dtype=np.int64)[last] / n_normal
    pro = np.minimum(np.cumsum(weight[codes_sorted])[last], 1.0)  # rounding may pass 1 by ulps
    return (
        _partial_trapezoid(np.concatenate(([0.0], fpr)), np.concatenate(([0.0], pro)), fpr_limit)
        / fpr_limit
    )


def _overlap_counts(masks: ArrayLike, predicted: ArrayLike, metric: str) -> tuple[int, int, int]:
    m, p = _validated(
        masks,
        predicted,
        metric=metric,
        unit="pixel",
        need="none",
        ndim=3,
        names=("masks", "predicted"),
        binary_scores=True,
    )
    return int(np.count_nonzero(m & p)), int(np.count_nonzero(m)), int(np.count_nonzero(p))


def dice(masks: ArrayLike, predicted: ArrayLike) -> float:
    """Dice coefficient ``2 |G & P| / (|G| + |P|)`` of bool predicted masks, pooled.

    Pooled means the intersection and sizes are summed over all pixels of all images before
    dividing (not a mean of per-image scores), so normal images with no prediction neither help
    nor hurt, and large defects weigh more. If both ground truth and prediction are empty
    everywhere, the prediction is perfect and Dice is 1.0.
    """
    inter, n_true, n_pred = _overlap_counts(masks, predicted, "Dice")
    return 2.0 * inter / (n_true + n_pred) if n_true + n_pred else 1.0


def iou(masks: ArrayLike, predicted: ArrayLike) -> float:
    """Intersection over union ``|G & P| / |G | P|`` (Jaccard) of bool predicted masks, pooled.

    Pooled over all pixels of all images, as :func:`dice`; both empty gives 1.0.
    ``IoU = Dice / (2 - Dice)``, so the two always rank predictions the same way.
    """
    inter, n_true, n_pred = _overlap_counts(masks, predicted, "IoU")
    union = n_true + n_pred - inter
    return inter / union if union else 1.0


@dataclass(frozen=True)
class TolerantScore:
    """Precision, recall and F1 of predicted masks when a pixel within ``tolerance`` px of the
    other mask counts as matched (:func:`tolerant_f1`)."""

    tolerance: int
    precision: float
    recall: float
    f1: float


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def tolerant_f1(masks: ArrayLike, predicted: ArrayLike, tolerance: int = 2) -> TolerantScore:
    """Precision, recall and F1 of bool predicted masks with a ``tolerance`` px match radius,
    pooled over all images: the protocol of the CrackForest paper (Shi et al. 2016, 2 px).

    A predicted pixel is correct when a ground-truth pixel lies within ``tolerance`` px
    (Euclidean) of it; a ground-truth pixel is found when a predicted pixel lies that close.
    Thin structures are annotated by hand a few pixels wide, so pixel-exact overlap (Dice)
    scores a prediction one pixel to the side of a crack like a miss; this says how much of the
    Dice gap is placement. ``tolerance`` 0 gives Dice as F1. With nothing predicted, precision
    is 0 (as :class:`ThresholdedScore`).
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise MetricError(f"tolerant F1: tolerance must be an integer >= 0 px; got {tolerance!r}")
    m, p = _validated(
        masks,
        predicted,
        metric="tolerant F1",
        unit="pixel",
        need="anomalous",
        ndim=3,
        names=("masks", "predicted"),
        binary_scores=True,
    )
    disk = _disk(tolerance)
    near_truth = np.stack([cv2.dilate(x.astype(np.uint8), disk) for x in m]).astype(bool)
    near_prediction = np.stack([cv2.dilate(x.astype(np.uint8), disk) for x in p]).astype(bool)
    n_pred = int(np.count_nonzero(p))
    precision = np.count_nonzero(p & near_truth) / n_pred if n_pred else 0.0
    recall = np.count_nonzero(m & near_prediction) / np.count_nonzero(m)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return TolerantScore(tolerance, float(precision), float(recall), float(f1))
