"""The user-facing jobs behind ``vad-inspection fit`` and ``predict``, as plain functions.

Fit learns "normal" from a dataset's normal images and calibrates a threshold on normal images it
held out; predict scores image files with a fitted model and writes heat-map overlays. A bad file
among many is reported and skipped, never fatal: one corrupt frame must not stop a survey.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vad_inspection.data.imageio import read_image
from vad_inspection.data.types import Dataset, DatasetError, Sample
from vad_inspection.errors import FrameError
from vad_inspection.progress import progress_bar
from vad_inspection.vad.base import AnomalyModel
from vad_inspection.vad.calibration import DEFAULT_K, Calibration, from_normal_scores
from vad_inspection.vad.detector import Detector
from vad_inspection.vad.registry import CommonOptions, create_model
from vad_inspection.viz import overlay, write_png

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")


@dataclass(frozen=True)
class FitReport:
    method: str
    train_images: int
    val_images: int
    fit_seconds: float
    calibration: Calibration | None


def training_split(
    dataset: Dataset, val_fraction: float, seed: int, max_train: int | None = None
) -> tuple[list[Sample], list[Sample]]:
    """Normal images for fitting and held-out normal images for calibration.

    A published training split (MVTec's ``train``) is respected; otherwise all normal images
    are used. The held-out part is a seeded random ``val_fraction`` of them.
    """
    normal = [s for s in dataset.normal if s.split in (None, "train")]
    if not normal:
        raise DatasetError(f"{dataset.root}: no normal images to learn from")
    order = np.random.default_rng(seed).permutation(len(normal))
    n_val = round(len(normal) * val_fraction) if len(normal) >= 3 else 0
    val = [normal[i] for i in sorted(order[:n_val])]
    train = [normal[i] for i in sorted(order[n_val:])]
    if max_train is not None:
        train = train[:max_train]
    return train, val


def load_images(samples: Sequence[Sample], desc: str, progress: bool = True) -> list[np.ndarray]:
    return [s.image() for s in progress_bar(samples, desc=desc, unit="img", enabled=progress)]


def fit(
    method: str,
    dataset: Dataset,
    common: CommonOptions,
    *,
    val_fraction: float = 0.1,
    threshold_k: float = DEFAULT_K,
    threshold_quantile: float | None = None,
    max_train: int | None = None,
    **method_options: object,
) -> tuple[AnomalyModel, FitReport]:
    """Fit ``method`` on the dataset's normal images and calibrate on held-out normals."""
    train, val = training_split(dataset, val_fraction, common.seed, max_train)
    images = load_images(train, "loading training images", common.progress)
    held_out = load_images(val, "loading calibration images", common.progress)
    return fit_images(
        method, images, held_out, common, threshold_k=threshold_k,
        threshold_quantile=threshold_quantile, **method_options,
    )  # fmt: skip


def hold_out(
    images: Sequence[np.ndarray], seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames of one stream split into fit and calibration sets: a fifth (at least 4) held out,
    drawn across the stream so the calibration sees the whole pass, not its end."""
    held = max(4, len(images) // 5)
    if len(images) < held + 2:
        raise ValueError(f"{len(images)} frames are too few: need at least {held + 2}")
    order = np.random.default_rng(seed).permutation(len(images))
    train = [images[i] for i in sorted(order[held:])]
    return train, [images[i] for i in sorted(order[:held])]


def fit_images(
    method: str,
    images: Sequence[np.ndarray],
    held_out: Sequence[np.ndarray],
    common: CommonOptions,
    *,
    threshold_k: float = DEFAULT_K,
    threshold_quantile: float | None = None,
    **method_options: object,
) -> tuple[AnomalyModel, FitReport]:
    """Fit ``method`` on normal ``images``; calibrate on the normal ``held_out`` ones (none or
    one: no calibration). What ``fit`` does for a dataset and the detector's ``~/fit`` for frames
    off the robot's own camera."""
    model = create_model(method, common, **method_options)
    start = time.perf_counter()
    model.fit(list(images))
    seconds = time.perf_counter() - start
    calibration = None
    if len(held_out) >= 2:
        scores = model.predict(list(held_out))
        calibration = from_normal_scores(scores.scores, threshold_k, threshold_quantile)
    return model, FitReport(method, len(images), len(held_out), seconds, calibration)


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders expanded to the images inside them (sorted)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(path)
    return out


@dataclass(frozen=True)
class PredictResult:
    path: Path
    score: float | None
    normalized: float | None
    anomalous: bool | None
    overlay: Path | None
    error: str | None = None


def _read(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DatasetError(f"{path}: not a readable .npy array ({error})") from error
    return read_image(path)


def predict_files(
    detector: Detector,
    paths: Sequence[Path],
    out_dir: Path | None,
    progress: bool = True,
) -> list[PredictResult]:
    """Score each file through the detector's per-frame path (the node's, at the file's own
    size); write ``<stem>_overlay.png`` heat maps with the defect mask outlined into ``out_dir``
    when given. A file that cannot be read or scored is reported in its result, never fatal."""
    results: list[PredictResult] = []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for path in progress_bar(paths, desc="scoring", unit="img", enabled=progress):
        try:
            image = _read(path)
            frame = detector(image)
        except (DatasetError, FrameError, OSError) as error:
            results.append(PredictResult(path, None, None, None, None, str(error)))
            continue
        written = None
        if out_dir is not None:
            written = out_dir / f"{path.stem}_overlay.png"
            outline = frame.mask if detector.post.calibrated else None
            write_png(written, overlay(image, frame.heat, outline=outline))
        results.append(PredictResult(path, frame.score, frame.normalized, frame.anomalous, written))
    return results
