"""The five methods trained with torch (STFPM, FastFlow, CFA, RD4AD, SimpleNet) at a tiny size,
for their tests (``test_trained_methods.py``, what they share; ``test_<method>.py``, what is
their own): striped 32 px images, each method's tiny config, fitted models of each (a good one
and a quick one, fitted once per session, whichever test file asks first, on one thread as the
tests run: the ``one_thread`` fixture), and the checks of what a fitted model finds.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from vad_inspection.vad.base import Prediction
from vad_inspection.vad.cfa import CFA, CFAConfig
from vad_inspection.vad.fastflow import FastFlow, FastFlowConfig
from vad_inspection.vad.rd4ad import RD4AD, RD4ADConfig
from vad_inspection.vad.simplenet import SimpleNet, SimpleNetConfig
from vad_inspection.vad.stfpm import STFPM, STFPMConfig
from vad_inspection.vad.trained_graph import TrainedGraphModel

SIZE = 32


def textured(rng: np.random.Generator, square: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """A striped, noisy RGB image; with ``square`` a bright 10 px square at a random place."""
    image = rng.normal(120, 6, (SIZE, SIZE, 3))
    image[:, ::2] += 50
    y, x = (int(v) for v in rng.integers(4, SIZE - 14, 2))
    if square:
        image[y : y + 10, x : x + 10] = 250
    return np.clip(image, 0, 255).astype(np.uint8), (y, x)


@functools.cache
def images() -> tuple[np.ndarray, ...]:
    """The 16 normal training images every tiny fit uses."""
    rng = np.random.default_rng(0)
    return tuple(textured(rng)[0] for _ in range(16))


@dataclass(frozen=True)
class Method:
    """A method as the shared tests see it.

    ``tiny``: its config for 16 images (2 held out) in batches of 4, 4 steps per epoch.
    ``frozen``: the training result's field holding the frozen backbone, and ``frozen_network``
    the training module's function that builds it afresh. ``other_options``: a change of options
    a checkpoint refuses. ``bad_batch_size``: the largest batch size the config refuses."""

    model: type[TrainedGraphModel]
    tiny: Any
    frozen: str
    frozen_network: str
    other_options: dict[str, Any] = field(default_factory=lambda: {"lr": 0.1})
    bad_batch_size: int = 0

    @property
    def name(self) -> str:
        return self.model.name

    def train_module(self) -> ModuleType:
        return importlib.import_module(f"vad_inspection.vad.{self.model.train_module}")


def _tiny(config_class: type, epochs: int = 8) -> Any:
    return config_class(size=(SIZE, SIZE), epochs=epochs, batch_size=4)


#: 8 epochs (32 steps: no early stopping before the warm-ups of 50 or 100 steps), SimpleNet 20
#: (its default: at 8 the discriminator had not yet put every map's peak on its square).
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(STFPM, _tiny(STFPMConfig), "teacher", "teacher_network", bad_batch_size=1),
        Method(FastFlow, _tiny(FastFlowConfig), "features", "feature_network"),
        Method(CFA, _tiny(CFAConfig), "features", "feature_network"),
        Method(RD4AD, _tiny(RD4ADConfig), "teacher", "teacher_network", {"lr": 0.001}, 1),
        Method(
            SimpleNet, _tiny(SimpleNetConfig, 20), "features", "feature_network", {"noise_std": 0.2}
        ),
    )
}


def fit(name: str, quick: bool = False) -> TrainedGraphModel:
    """The method ``name`` fitted with its tiny config on :func:`images`; ``quick``: for 2 epochs
    on 8 of them (6 trained on, 2 held out), for tests that need a fitted model, not a good one."""
    method = METHODS[name]
    config = replace(method.tiny, epochs=2) if quick else method.tiny
    model = method.model(config)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VAD_INSPECTION_THREADS", "1")
        model.fit(list(images()[:8] if quick else images()))
    return model


@functools.cache
def fitted(name: str, quick: bool = False) -> TrainedGraphModel:
    """:func:`fit`, once per session."""
    return fit(name, quick)


def detects_squares(
    name: str, epochs: int | None = 8
) -> tuple[TrainedGraphModel, Prediction, list[tuple[int, int]]]:
    """The tiny fit of ``name`` (:func:`fitted`), checked as every method's must be: 14 images
    trained on and 2 held out, ``epochs`` epochs run (None: any number), every one in the
    history, the training loss lower at the end; for 6 new images with a bright 10 px square,
    maps ``(6, SIZE, SIZE)`` and scores in float32, each score its map's maximum, all of them
    above the scores of 6 new normal images. The model, that prediction and the squares'
    top-left corners."""
    model = fitted(name)
    summary = model.summary
    assert (summary.train_images, summary.val_images) == (14, 2)
    assert epochs is None or summary.epochs_run == epochs
    assert [h["epoch"] for h in model.history] == list(range(summary.epochs_run))
    assert model.history[-1]["train_loss"] < model.history[0]["train_loss"]
    rng = np.random.default_rng(1)
    normal = [textured(rng)[0] for _ in range(6)]
    anomalous = [textured(rng, square=True) for _ in range(6)]
    normal_scores = model.predict(normal).scores
    prediction = model.predict([image for image, _ in anomalous])
    assert prediction.maps.shape == (6, SIZE, SIZE) and prediction.maps.dtype == np.float32
    assert prediction.scores.dtype == np.float32
    np.testing.assert_allclose(prediction.scores, prediction.maps.max(axis=(1, 2)), rtol=1e-6)
    assert prediction.scores.min() > normal_scores.max(), (prediction.scores, normal_scores)
    return model, prediction, [corner for _, corner in anomalous]


def assert_peaks_on_squares(prediction: Prediction, corners: list[tuple[int, int]]) -> None:
    """Every map's peak lies in its square or within 4 px of it."""
    for (y, x), amap in zip(corners, prediction.maps, strict=True):
        iy, ix = np.unravel_index(amap.argmax(), amap.shape)
        assert y - 4 <= iy < y + 14 and x - 4 <= ix < x + 14, ((y, x), (iy, ix))
