"""What every method trained with torch and served as one ONNX graph shares (STFPM, FastFlow,
CFA, RD4AD, SimpleNet): the checks before training, the lazy import of its torch module, the ONNX
Runtime session, batched scoring, and the model file. A method says only what differs: its name
and title, its config class, its training module, its graph's outputs and batch size, and whether
the map is smoothed after the graph.

Configs are frozen dataclasses with a ``size`` tuple, built on :class:`GraphConfig` (the checks
they share, the dict form); :func:`config_to_dict` and :func:`config_from_dict` store them in a
model file (unknown keys ignored, so a file written by a later version with more options still
loads).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from typing import Any, ClassVar, TypeVar

import numpy as np
import onnxruntime as ort

from vad_inspection.progress import progress_bar
from vad_inspection.vad.artifact import Artifact
from vad_inspection.vad.backbones import get_spec
from vad_inspection.vad.base import Prediction
from vad_inspection.vad.features import make_session
from vad_inspection.vad.ops import gaussian_blur
from vad_inspection.vad.preprocess import InputError, InputSpec, as_hwc, to_network_input
from vad_inspection.vad.vae import TrainingSummary

C = TypeVar("C")
M = TypeVar("M", bound="TrainedGraphModel")
GRAPH_INPUT = "image"


def config_to_dict(config: Any) -> dict[str, object]:
    return {**asdict(config), "size": list(config.size)}


def config_from_dict(cls: type[C], data: dict[str, object]) -> C:
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in data.items() if k in known}
    values["size"] = tuple(values.get("size", (256, 256)))  # type: ignore[arg-type]
    return cls(**values)


class GraphConfig:
    """What the configs of these methods share: the checks of the backbone, the input size and
    the training loop's options (each config's ``__post_init__`` calls them around its own), and
    the dict form of a model file."""

    def check_input(self) -> None:
        """The backbone known (an unknown one fails here, listing the known ones), ``weights`` a
        string, ``size`` (height, width) of at least 16 px: the deepest tap has stride 16, smaller
        inputs leave it no grid."""
        get_spec(self.backbone)
        object.__setattr__(self, "weights", str(self.weights))
        size = tuple(int(s) for s in self.size)
        object.__setattr__(self, "size", size)
        if len(size) != 2 or min(size) < 16:
            raise ValueError(
                f"{type(self).__name__}.size must be (height, width) of at least 16 px; got {size}"
            )

    def check_loop(self, batch_norm: bool = False) -> None:
        """``epochs`` non-negative, ``batch_size`` and ``patience`` at least 1; with
        ``batch_norm`` (a network that trains on batch statistics) ``batch_size`` at least 2."""
        if batch_norm and (self.epochs < 0 or self.batch_size < 2 or self.patience < 1):
            raise ValueError(
                "epochs must be non-negative, batch_size at least 2 (batch normalisation trains "
                f"on batch statistics) and patience at least 1; got {self.epochs}, "
                f"{self.batch_size}, {self.patience}"
            )
        if self.epochs < 0 or self.batch_size < 1 or self.patience < 1:
            raise ValueError(
                "epochs must be non-negative, batch_size and patience at least 1; got "
                f"{self.epochs}, {self.batch_size}, {self.patience}"
            )

    def check_val_fraction(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1); got {self.val_fraction}")

    def to_dict(self) -> dict[str, object]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, object]) -> C:
        return config_from_dict(cls, data)


class TrainedGraphModel:
    """Fit with torch (lazily), score with one ONNX graph on ONNX Runtime; see the module doc."""

    name: ClassVar[str]
    title: ClassVar[str]  # in messages and progress bars
    config_class: ClassVar[type]
    train_module: ClassVar[str]  # vad_inspection.vad.<this>.train(data, config)
    graph_outputs: ClassVar[tuple[str, ...]] = ("map", "score")
    predict_batch: ClassVar[int] = 8
    #: True where the graph's only output is the raw map (see :meth:`scores_and_maps`).
    smoothed_after_graph: ClassVar[bool] = False

    def __init__(self, config: Any = None) -> None:
        self.config = config or self.config_class()
        self.graph: bytes | None = None
        self.input_spec: InputSpec | None = None
        self.summary: TrainingSummary | None = None
        self.history: list[dict[str, float]] = []
        self._session: ort.InferenceSession | None = None

    def fit(self, images: Sequence[np.ndarray]) -> None:
        """Train on normal images (torch) and export the whole method as one graph.

        Every image is checked and normalised before training starts, so a bad image fails at
        once rather than after the training it would have wasted.
        """
        if len(images) < 2:
            raise InputError(
                f"{self.title} needs at least two normal training images; got {len(images)}"
            )
        channels = as_hwc(np.asarray(images[0])).shape[2]
        spec = InputSpec.for_channels(channels, self.config.size)
        data = to_network_input(images, spec)
        train = importlib.import_module(f"vad_inspection.vad.{self.train_module}").train
        result = train(data, self.config)
        self.input_spec = spec
        self.graph = result.onnx
        self.summary = result.summary
        self.history = result.history
        self._session = None

    @property
    def session(self) -> ort.InferenceSession:
        """The ONNX Runtime session, created on first use."""
        if self.graph is None:
            raise RuntimeError(f"{self.title} is not fitted: call fit() or load a model first")
        if self._session is None:
            self._session = make_session(self.graph)
        return self._session

    def run_graph(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs for an ImageNet-normalised batch ``(N, 3, H, W)``."""
        outputs = self.session.run(list(self.graph_outputs), {GRAPH_INPUT: batch})
        return dict(zip(self.graph_outputs, outputs, strict=True))

    def scores_and_maps(self, out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """A batch's scores and maps from the graph's outputs: as the graph gives them, or, for a
        method whose graph gives only the raw ``map`` (:attr:`smoothed_after_graph`), that map
        Gaussian-smoothed with the config's ``sigma`` and its maximum as the score. Smoothing
        outside the graph keeps ``sigma`` a setting of the model file, changed without
        retraining."""
        if not self.smoothed_after_graph:
            return out["score"], out["map"]
        smoothed = gaussian_blur(out["map"], self.config.sigma).astype(np.float32, copy=False)
        return smoothed.max(axis=(1, 2)), smoothed

    def predict(self, images: Sequence[np.ndarray]) -> Prediction:
        """Scores ``(N,)`` and maps ``(N, H, W)`` at the configured size."""
        if self.input_spec is None:
            raise RuntimeError(f"{self.title} is not fitted: call fit() or load a model first")
        if len(images) == 0:
            raise InputError("no images given")
        scores, maps = [], []
        for i in progress_bar(
            range(0, len(images), self.predict_batch),
            desc=f"{self.title} scoring",
            unit="batch",
            enabled=self.config.progress,
        ):
            batch = to_network_input(images[i : i + self.predict_batch], self.input_spec)
            score, heat = self.scores_and_maps(self.run_graph(batch))
            scores.append(score)
            maps.append(heat)
        return Prediction(
            scores=np.concatenate(scores).astype(np.float32, copy=False),
            maps=np.concatenate(maps).astype(np.float32, copy=False),
        )

    def to_artifact(self) -> Artifact:
        """The fitted model (the one graph, the config, the input description) as an artifact."""
        if self.graph is None or self.input_spec is None:
            raise RuntimeError(f"{self.title} is not fitted: nothing to save")
        return Artifact(
            meta={
                "method": self.name,
                "config": replace(self.config, progress=False).to_dict(),
                "input": self.input_spec.to_dict(),
                "graph_outputs": list(self.graph_outputs),
                "training": None if self.summary is None else self.summary.to_dict(),
            },
            graphs={self.name: self.graph},
        )

    @classmethod
    def from_artifact(cls: type[M], artifact: Artifact) -> M:
        """The model a file holds, quiet (no progress bars)."""
        meta = artifact.meta
        model = cls(replace(cls.config_class.from_dict(dict(meta["config"])), progress=False))
        model.graph = artifact.graphs[cls.name]
        model.input_spec = InputSpec.from_dict(dict(meta["input"]))
        training = meta.get("training")
        model.summary = TrainingSummary(**dict(training)) if training else None
        return model
