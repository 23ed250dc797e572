"""Evaluate one model on one split, the way the papers do, and collect everything a table needs.

Fit on the split's training images, calibrate thresholds on its held-out normal images, score the
test images, then compute image metrics, pixel metrics (where the dataset has masks) and costs
(fit time, per-image latency, peak memory, the size of its model file). Every model sees the same
resized pixels.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vad_inspection.data.types import Dataset, Sample
from vad_inspection.eval import metrics as M
from vad_inspection.eval.metrics import MetricError
from vad_inspection.eval.report import Curve, ResultRow
from vad_inspection.eval.resources import PeakMemory, measure_latency
from vad_inspection.eval.settings import Split
from vad_inspection.progress import progress_bar
from vad_inspection.vad.base import AnomalyModel, Prediction
from vad_inspection.vad.calibration import DEFAULT_K, from_normal_scores
from vad_inspection.vad.detector import Detector, PostProcessor
from vad_inspection.vad.preprocess import resize_image, resize_mask
from vad_inspection.vad.registry import CommonOptions, create_model, save_model


@dataclass(frozen=True)
class EvalConfig:
    """How images are presented and thresholds calibrated; the same for every model in a table.

    ``threshold_k``: image threshold = mean + k * std of validation-normal scores (the same
    default as ``fit``, :data:`~vad_inspection.vad.calibration.DEFAULT_K`; the crack paper's
    rule is k = 1). ``pixel_quantile``: pixel threshold = that quantile of
    validation-normal map values, for Dice and IoU.
    """

    size: int = 256
    batch_size: int = 32
    threshold_k: float = DEFAULT_K
    pixel_quantile: float = 0.99
    latency_images: int = 20
    progress: bool = True
    model_options: CommonOptions = field(default_factory=CommonOptions)
    method_options: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalOutcome:
    row: ResultRow
    curve: Curve


def load_images(samples: Sequence[Sample], size: int, desc: str, progress: bool) -> np.ndarray:
    """Read and resize ``samples`` into one (N, size, size, C) array."""
    images = [
        resize_image(s.image(), (size, size))
        for s in progress_bar(samples, desc=desc, unit="img", enabled=progress, leave=False)
    ]
    return np.stack(images)


def load_masks(samples: Sequence[Sample], size: int) -> np.ndarray | None:
    """Masks resized to the model grid, or None when the dataset has no pixel labels."""
    masks = [s.mask() for s in samples]
    if any(m is None for m in masks):
        return None
    return np.stack([resize_mask(m, (size, size)) for m in masks])


def predict_batched(model: AnomalyModel, images: np.ndarray, batch_size: int) -> Prediction:
    parts = [model.predict(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return Prediction.concat(parts)


def evaluate(model_name: str, dataset_name: str, split: Split, config: EvalConfig) -> EvalOutcome:
    """Fit ``model_name`` on ``split.train`` and measure it on ``split.test``."""
    size, progress = config.size, config.progress
    tag = f"{model_name} S{split.setting}"
    train = load_images(split.train, size, f"{tag} train", progress)
    val = load_images(split.val, size, f"{tag} val", progress) if split.val else None
    test = load_images(split.test, size, f"{tag} test", progress)
    labels = np.array([s.label for s in split.test], dtype=np.int64)
    masks = load_masks(split.test, size)

    options = replace(config.model_options, size=size, progress=progress)
    model = create_model(model_name, options, **config.method_options.get(model_name, {}))
    with PeakMemory(trace=False) as memory:
        start = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - start
        test_pred = predict_batched(model, test, config.batch_size)
    latency = measure_latency(lambda im: model.predict(im[None]), test[: config.latency_images])

    values = {"fit_s": fit_s, "latency_ms": latency.median_ms, "peak_mb": memory.peak_rss_mb}
    footprint = model_file_mb(model)
    if footprint is not None:
        values["model_mb"] = footprint
    post = None
    if val is not None:
        val_pred = predict_batched(model, val, config.batch_size)
        post = PostProcessor(
            calibration=from_normal_scores(val_pred.scores, k=config.threshold_k),
            map_calibration=from_normal_scores(val_pred.maps, quantile=config.pixel_quantile),
        )
    values.update(decision_metrics(labels, masks, test_pred, post))
    row = ResultRow(model=model_name, dataset=dataset_name, setting=split.setting, metrics=values)
    curve = Curve(model=model_name, setting=split.setting, labels=labels, scores=test_pred.scores)
    return EvalOutcome(row=row, curve=curve)


def model_file_mb(model: AnomalyModel) -> float | None:
    """The size in MB (1e6 bytes) of the file ``vad-inspection fit`` would write for ``model``
    (what a robot stores and loads); None for a model with nothing to save (the baselines)."""
    if not hasattr(model, "to_artifact"):
        return None
    with tempfile.TemporaryDirectory(prefix="vad_footprint_") as tmp:
        return save_model(model, Path(tmp) / "model.vad", None).stat().st_size / 1e6


def decision_metrics(
    labels: np.ndarray,
    masks: np.ndarray | None,
    prediction: Prediction,
    post: PostProcessor | None,
) -> dict[str, float]:
    """Image metrics, pixel metrics where there are masks, and the metrics of the decisions
    ``post`` makes (its image threshold; its masks, by the model's mask rule) when given."""
    values = {
        "image_auroc": M.auroc(labels, prediction.scores),
        "image_auc_pr": M.auc_pr(labels, prediction.scores),
        "image_f1": M.f1_optimal(labels, prediction.scores).f1,
    }
    if post is not None and post.calibrated:
        calibrated = M.at_threshold(labels, prediction.scores, post.image_threshold)
        values["image_f1_cal"] = calibrated.f1
        values["image_acc_cal"] = calibrated.accuracy
    if masks is not None and masks.any():
        values["pixel_auroc"] = M.pixel_auroc(masks, prediction.maps)
        values["pixel_auc_pr"] = M.pixel_auc_pr(masks, prediction.maps)
        values["aupro"] = M.aupro(masks, prediction.maps)
        if post is not None and post.calibrated:
            predicted = post.masks(prediction)
            values["dice"] = M.dice(masks, predicted)
            values["iou"] = M.iou(masks, predicted)
    return values


def evaluate_file(
    detector: Detector,
    dataset: Dataset,
    config: EvalConfig,
    samples: Sequence[Sample] | None = None,
) -> EvalOutcome:
    """Score a fitted model file on a dataset it was not fitted on (another site, another day,
    a held-out set): every image of ``samples`` (default: all of the dataset's), at the model's
    own input size, judged with the thresholds the file was calibrated with. Nothing is refit."""
    samples = list(samples if samples is not None else (*dataset.normal, *dataset.anomalous))
    labels = np.array([s.label for s in samples], dtype=np.int64)
    if len(set(labels.tolist())) < 2:
        raise MetricError(
            f"{dataset.name}: scoring a model file needs normal and anomalous images; "
            f"this dataset has only {'anomalous' if labels.all() else 'normal'} ones"
        )
    size = detector.size
    images = [
        detector.prepare(resize_image(s.image(), size))
        for s in progress_bar(samples, desc=f"{detector.name} images", unit="img",
                              enabled=config.progress, leave=False)
    ]  # fmt: skip
    masks = load_masks(samples, size[0]) if size[0] == size[1] else None
    with PeakMemory(trace=False) as memory:
        prediction = predict_batched(detector.model, np.stack(images), config.batch_size)
    latency = measure_latency(lambda im: detector.model.predict(im[None]), np.stack(images[:20]))
    values = decision_metrics(labels, masks, prediction, detector.post)
    values.update({"latency_ms": latency.median_ms, "peak_mb": memory.peak_rss_mb})
    name = f"{detector.name} ({Path(detector.source).name})" if detector.source else detector.name
    row = ResultRow(model=name, dataset=dataset.name, setting=0, metrics=values)
    curve = Curve(model=name, setting=0, labels=labels, scores=prediction.scores)
    return EvalOutcome(row=row, curve=curve)
