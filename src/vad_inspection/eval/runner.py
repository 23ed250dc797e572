"""Evaluate one model on one split, the way the papers do, and collect everything a table needs.

Fit on the split's training images, calibrate thresholds on its held-out normal images, score the
test images, then compute image metrics, pixel metrics (where the dataset has masks) and costs
(fit time, per-image latency, peak memory). Every model sees the same resized pixels.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from vad_inspection.data.types import Sample
from vad_inspection.eval import metrics as M
from vad_inspection.eval.report import Curve, ResultRow
from vad_inspection.eval.resources import PeakMemory, measure_latency
from vad_inspection.eval.settings import Split
from vad_inspection.progress import progress_bar
from vad_inspection.vad.base import AnomalyModel, Prediction
from vad_inspection.vad.preprocess import resize_image, resize_mask
from vad_inspection.vad.registry import CommonOptions, create_model


@dataclass(frozen=True)
class EvalConfig:
    """How images are presented and thresholds calibrated; the same for every model in a table.

    ``threshold_k``: image threshold = mean + k * std of validation-normal scores (the crack
    paper's rule with k = 1). ``pixel_quantile``: pixel threshold = that quantile of
    validation-normal map values, for Dice and IoU.
    """

    size: int = 256
    batch_size: int = 32
    threshold_k: float = 1.0
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

    values: dict[str, float] = {
        "image_auroc": M.auroc(labels, test_pred.scores),
        "image_auc_pr": M.auc_pr(labels, test_pred.scores),
        "image_f1": M.f1_optimal(labels, test_pred.scores).f1,
        "fit_s": fit_s,
        "latency_ms": latency.median_ms,
        "peak_mb": memory.peak_rss_mb,
    }
    val_pred = predict_batched(model, val, config.batch_size) if val is not None else None
    if val_pred is not None:
        threshold = float(val_pred.scores.mean() + config.threshold_k * val_pred.scores.std())
        calibrated = M.at_threshold(labels, test_pred.scores, threshold)
        values["image_f1_cal"] = calibrated.f1
        values["image_acc_cal"] = calibrated.accuracy
    if masks is not None and masks.any():
        values["pixel_auroc"] = M.pixel_auroc(masks, test_pred.maps)
        values["pixel_auc_pr"] = M.pixel_auc_pr(masks, test_pred.maps)
        values["aupro"] = M.aupro(masks, test_pred.maps)
        if val_pred is not None:
            pixel_threshold = float(np.quantile(val_pred.maps, config.pixel_quantile))
            predicted = test_pred.masks(pixel_threshold)
            values["dice"] = M.dice(masks, predicted)
            values["iou"] = M.iou(masks, predicted)
    row = ResultRow(model=model_name, dataset=dataset_name, setting=split.setting, metrics=values)
    curve = Curve(model=model_name, setting=split.setting, labels=labels, scores=test_pred.scores)
    return EvalOutcome(row=row, curve=curve)
