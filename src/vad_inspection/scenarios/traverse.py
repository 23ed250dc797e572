"""A Mars rover traverse: a rover's own labelled frames played as a camera stream.

The stream is what a rover's downlink prioritiser faces: mostly the ordinary traverse (the
``traverse`` classes: ``ground`` in ``msl_surface``, ``typical`` in ``mastcam``), now and then
what a scientist wants first (the dataset's anomalous samples: drill holes and the dust-removal
tool's spots in ``msl_surface``, the eight novelty categories in ``mastcam``), and routine
clutter (any other normal class: rover parts, calibration targets, sky) that a prioritiser must
not waste downlink on. Frames are drawn from one split in sol order where the sample names carry
the sol (``msl_surface`` products start with it), so the stream moves through the mission as the
rover did; ``novelty_fraction`` and ``clutter_fraction`` set how often the two kinds come.

Frames keep the dataset's pixels: colour as ``rgb8``, multispectral tiles as OpenCV's generic
``8UC<n>`` (whole numbers 0-255, as Mastcam's are) or ``32FC<n>``, with ``bands`` naming each
band in the summary (an Image message has no field for it). ``size`` resizes to a square (the
browse products vary a little in size; a camera does not); 0 keeps the data's size.

Truth per frame: anomalous or not, its class as ``category``, the sample it shows; no pixel masks
and no 3-D positions (the data has neither). The rover drives along +x of ``map`` at ``speed``
m/s with the camera on a forward mount, so replay and recorder see a moving robot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from ..data.types import ANOMALOUS, Dataset, Sample
from ..geometry import CameraModel
from .surface import MOUNT_FORWARD
from .types import DefectTruth, FrameTruth, ScenarioError, View


@dataclass(frozen=True)
class TraverseConfig:
    name: str
    frames: int = 100
    novelty_fraction: float = 0.05
    clutter_fraction: float = 0.15
    traverse: tuple[str, ...] = ("ground",)  # the normal classes the rover drives over
    split: str = "test"  # held-out sols, so a model fitted on the train split meets new terrain
    size: int = 256  # square frames of this many pixels; 0 keeps the data's size
    bands: tuple[str, ...] = ()  # the name of each band, for a multispectral stream
    rate_hz: float = 1.0
    speed: float = 0.04  # m/s: Curiosity's top speed is about 0.04
    hfov_deg: float = 15.0  # Mastcam-34's field of view is about 15 degrees
    seed: int = 0
    optical_frame: str = "mastcam_optical"


def _sol(sample_id: str) -> int:
    """The sol a sample was taken on, from its name (``0182ML...`` or ``..._sol0072_...``)."""
    name = sample_id.rsplit("/", 1)[-1]
    found = re.search(r"sol(\d+)", name) or re.match(r"(\d{4})", name)
    return int(found[1]) if found else 0


def encoding_of(image: np.ndarray) -> str:
    """The ROS encoding a frame of these pixels travels as (``rgb8``, ``mono8``, ``8UC6``...)."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    if image.dtype == np.uint8 and channels in (1, 3):
        return "mono8" if channels == 1 else "rgb8"
    kinds = {np.dtype(np.uint8): "8U", np.dtype(np.uint16): "16U", np.dtype(np.float32): "32F"}
    if image.dtype not in kinds:
        raise ScenarioError(f"cannot stream {image.dtype} pixels; expected uint8/uint16/float32")
    return f"{kinds[image.dtype]}C{channels}"


def _as_streamed(image: np.ndarray) -> np.ndarray:
    """Whole numbers 0-255 (the Mastcam tiles, published as float64) travel as uint8, losslessly."""
    if image.dtype.kind != "f":
        return image
    finite = bool(np.all(np.isfinite(image)))
    if finite and image.min() >= 0 and image.max() <= 255 and np.array_equal(image, np.rint(image)):
        return image.astype(np.uint8)
    return image.astype(np.float32)


class RoverTraverse:
    """The scenario (pure: no transport): ``msl_surface`` with ``clutter=normal``, or ``mastcam``
    (with ``multispectral=true`` for the six-band stream)."""

    def __init__(self, dataset: Dataset, config: TraverseConfig) -> None:
        self.config = config
        rng = np.random.default_rng(config.seed)
        pool = [s for s in dataset.samples if s.split == config.split]
        kinds: dict[str, list[Sample]] = {
            "novelty": [s for s in pool if s.label == ANOMALOUS],
            "traverse": [s for s in pool if s.label != ANOMALOUS and s.category in config.traverse],
            "clutter": [
                s for s in pool if s.label != ANOMALOUS and s.category not in config.traverse
            ],
        }
        want = {
            "novelty": round(config.frames * config.novelty_fraction),
            "clutter": round(config.frames * config.clutter_fraction),
        }
        want["traverse"] = config.frames - want["novelty"] - want["clutter"]
        short = {k: {"have": len(kinds[k]), "need": n} for k, n in want.items()
                 if len(kinds[k]) < n}  # fmt: skip
        if short or want["traverse"] < 0:
            raise ScenarioError(
                f"{config.name}: split {config.split!r} of {dataset.name} has too few frames: "
                f"{short or want}; lower frames or the fractions, or choose another split"
            )
        chosen: list[Sample] = []
        for kind, count in want.items():
            picks = rng.choice(len(kinds[kind]), size=count, replace=False)
            chosen += [kinds[kind][i] for i in sorted(picks)]
        order = rng.permutation(len(chosen))  # ties in sol (or no sol at all) in random order
        self.samples = [chosen[i] for i in sorted(order, key=lambda i: _sol(chosen[i].id))]
        first = self._pixels(self.samples[0]) if self.samples else np.zeros((1, 1, 3), np.uint8)
        self.encoding = encoding_of(first)
        channels = 1 if first.ndim == 2 else first.shape[2]
        if config.bands and len(config.bands) != channels:
            raise ScenarioError(
                f"{config.name}: {len(config.bands)} band names for {channels}-band frames"
            )
        height, width = first.shape[:2]
        fx = (width / 2) / np.tan(np.radians(config.hfov_deg) / 2)
        self.camera = CameraModel(
            width, height,
            np.array([[fx, 0, (width - 1) / 2], [0, fx, (height - 1) / 2], [0, 0, 1.0]]),
            np.zeros(5), "plumb_bob", config.optical_frame,
        )  # fmt: skip
        self.defects: list[DefectTruth] = []

    def _pixels(self, sample: Sample) -> np.ndarray:
        image = _as_streamed(sample.image())
        size = self.config.size
        if size and image.shape[:2] != (size, size):
            resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
            image = resized if resized.ndim == image.ndim else resized[:, :, None]
        return np.ascontiguousarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1
                                    else image)  # fmt: skip

    @property
    def optical_frame(self) -> str:
        return self.config.optical_frame

    @property
    def frame_count(self) -> int:
        return len(self.samples)

    def base_from_optical(self) -> np.ndarray:
        mount = np.eye(4)
        mount[:3, :3] = MOUNT_FORWARD
        mount[:3, 3] = (0.8, 0.0, 1.9)  # Mastcam on the mast, about 1.9 m above the ground
        return mount

    def views(self, start_ns: int = 0) -> Iterator[View]:
        c = self.config
        for index, sample in enumerate(self.samples):
            image = self._pixels(sample)
            if encoding_of(image) != self.encoding or image.shape[:2] != (
                self.camera.height, self.camera.width,
            ):  # fmt: skip
                raise ScenarioError(
                    f"{c.name}: {sample.id} is {image.shape} {image.dtype}, unlike the stream's "
                    f"first frame ({self.encoding}); set size to stream frames of one size"
                )
            pose = np.eye(4)
            pose[0, 3] = index * c.speed / c.rate_hz
            yield View(
                stamp_ns=start_ns + round(index * 1e9 / c.rate_hz),
                image=image,
                depth_m=None,
                world_from_base=pose,
                truth=FrameTruth(sample.label == ANOMALOUS, None, (), sample.category),
                source=sample.id,
                encoding=self.encoding,
            )

    def summary(self) -> dict[str, object]:
        counts: dict[str, int] = {}
        for s in self.samples:
            counts[s.category] = counts.get(s.category, 0) + 1
        sols = [_sol(s.id) for s in self.samples]
        return {
            "name": self.config.name, "kind": "traverse", "frames": len(self.samples),
            "rate_hz": self.config.rate_hz, "encoding": self.encoding,
            "bands": list(self.config.bands),
            "novelties": sum(s.label == ANOMALOUS for s in self.samples),
            "classes": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
            "sols": [min(sols), max(sols)] if any(sols) else [],
        }  # fmt: skip
