"""STFPM (Wang, Wu, Cui and Yang, "Student-Teacher Feature Pyramid Matching for Anomaly
Detection", BMVC 2021).

The paper's steps, in order:

1. Teacher and student: a CNN (the engine's backbone) is the **teacher**; it is frozen and gives a
   feature pyramid, the activations of three of its layers (strides 4, 8 and 16 of the input: the
   backbone's three taps, :data:`~vad_inspection.vad.backbones.BACKBONES`). The **student** has the
   same architecture and is initialised at random.
2. Training on normal images only: at every level ``l`` the features of teacher and student are
   L2-normalised along the channels, ``F_hat = F / ||F||_2`` at each position ``(i, j)``, and the
   student learns to reproduce the teacher's normalised features:
   ``loss_l(I) = 1 / (2 w_l h_l) * sum_ij ||F_hat_t^l(I)_ij - F_hat_s^l(I)_ij||_2^2``, summed over
   the three levels (all weights ``alpha_l = 1``) and averaged over the images. The paper trains by
   SGD (lr 0.4, momentum 0.9, weight decay 1e-4) for 100 epochs with batches of 32.
3. Inference: at each level the per-position distance
   ``Omega^l_ij = 1/2 ||F_hat_t^l_ij - F_hat_s^l_ij||_2^2`` is a map on that level's grid; each is
   upsampled bilinearly to the input size and the anomaly map is their **product**
   ``Omega = prod_l Upsample(Omega^l)`` (a pixel is anomalous only where the student fails at every
   scale). The image score is the map's maximum. The paper does not smooth the map, nor is it
   smoothed here.

Where the engine departs from the paper, and why:

* Epochs: on a robot's CPU 100 epochs are too slow; :class:`STFPMConfig` defaults to at most 20,
  stopping early when the loss on a held-out ``val_fraction`` of the training images has not
  improved for ``patience`` epochs, and keeping the student of the best held-out loss.
* Teacher weights: the paper's teacher is ImageNet-pretrained. Where no pretrained weights can be
  downloaded (these development machines) the teacher is the backbone with seeded random weights
  (``weights="random"``, as every other method here gets its backbone); the student is always
  randomly initialised, with another seed (``seed + 1``).

This module is the inference side and has no torch in it: teacher, student, the distance maps,
the upsampling, the product and the maximum are one ONNX graph (input: the ImageNet-normalised
image batch; outputs: the map at the input size and the score), run in one ONNX Runtime session.
:meth:`STFPM.fit` imports the torch training module (:mod:`vad_inspection.vad.stfpm_train`)
lazily, so a robot that only loads and scores a model never imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import onnxruntime as ort

from vad_inspection.progress import progress_bar
from vad_inspection.vad.artifact import Artifact
from vad_inspection.vad.backbones import RANDOM, get_spec
from vad_inspection.vad.base import Prediction
from vad_inspection.vad.features import make_session
from vad_inspection.vad.preprocess import InputError, InputSpec, as_hwc, to_network_input
from vad_inspection.vad.vae import TrainingSummary

#: Names of the ONNX graph's input and outputs (the contract between training and inference):
#: ``map`` (N, H, W), the product of the upsampled distance maps; ``score`` (N,), its maximum.
GRAPH_INPUT = "image"
GRAPH_OUTPUTS: tuple[str, ...] = ("map", "score")

#: The student's random initialisation is seeded with the config's seed plus this: never the
#: teacher's own random weights, whatever the seed.
STUDENT_SEED_OFFSET = 1

#: Images per ONNX Runtime call when scoring (bounds the activations held at once).
PREDICT_BATCH = 8


@dataclass(frozen=True)
class STFPMConfig:
    """Hyper-parameters, the paper's where the engine can afford them (see the module docstring).

    ``backbone`` (teacher and student architecture; its three taps are the pyramid levels),
    ``weights`` of the teacher (``random``: seeded by ``seed``; ``imagenet``; or a state-dict
    file), ``seed`` (teacher's random weights, the student's initialisation with
    :data:`STUDENT_SEED_OFFSET`, the held-out split and the batch order), ``size`` (height, width)
    of the network input. Training: SGD with ``lr``, ``momentum`` and ``weight_decay`` (the
    paper's 0.4, 0.9, 1e-4) in batches of ``batch_size`` for at most ``epochs`` (the paper: 100),
    stopping when the loss on the held-out ``val_fraction`` of the images has not improved for
    ``patience`` epochs, counted only once the student has taken 100 optimiser steps
    (:data:`~vad_inspection.vad.stfpm_train.WARMUP_STEPS`: until then its batch normalisation's
    running statistics lag and the held-out loss rises before it falls); the student of the best
    held-out loss is kept (no held-out images: all ``epochs`` run and the epoch of the lowest
    training loss is kept).
    ``checkpoint_dir`` makes training resumable (None: no checkpoints); ``progress`` shows bars.
    """

    backbone: str = "mobilenet_v2"
    weights: str = RANDOM
    seed: int = 0
    size: tuple[int, int] = (256, 256)
    progress: bool = False
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    patience: int = 5
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        get_spec(self.backbone)  # an unknown backbone fails here, listing the known ones
        object.__setattr__(self, "weights", str(self.weights))
        size = tuple(int(s) for s in self.size)
        object.__setattr__(self, "size", size)
        if len(size) != 2 or min(size) < 16:
            # the deepest level has stride 16: smaller inputs leave it no grid
            raise ValueError(
                f"STFPMConfig.size must be (height, width) of at least 16 px; got {size}"
            )
        if self.epochs < 0 or self.batch_size < 2 or self.patience < 1:
            raise ValueError(
                "epochs must be non-negative, batch_size at least 2 (batch normalisation trains "
                f"on batch statistics) and patience at least 1; got {self.epochs}, "
                f"{self.batch_size}, {self.patience}"
            )
        if self.lr <= 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("lr must be positive, momentum and weight_decay non-negative")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1); got {self.val_fraction}")

    @property
    def student_seed(self) -> int:
        return self.seed + STUDENT_SEED_OFFSET

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "size": list(self.size)}

    @staticmethod
    def from_dict(data: dict[str, object]) -> STFPMConfig:
        known = {f.name for f in fields(STFPMConfig)}
        values = {k: v for k, v in data.items() if k in known}
        values["size"] = tuple(values.get("size", (256, 256)))
        return STFPMConfig(**values)


class STFPM:
    """Student-teacher feature pyramid matching on ONNX Runtime; see the module docstring.

    Images are resized to the configured ``size`` (as the backbone methods do); maps come back at
    that size.
    """

    name = "stfpm"

    def __init__(self, config: STFPMConfig | None = None) -> None:
        self.config = config or STFPMConfig()
        self.graph: bytes | None = None
        self.input_spec: InputSpec | None = None
        self.summary: TrainingSummary | None = None
        self.history: list[dict[str, float]] = []
        self._session: ort.InferenceSession | None = None

    # -- step 2: training the student (torch, lazily) -------------------------------------------
    def fit(self, images: Sequence[np.ndarray]) -> None:
        """Train the student on normal images (torch) and export teacher and student as one graph.

        Every image is checked and normalised before training starts, so a bad image fails at
        once rather than after the training it would have wasted.
        """
        if len(images) < 2:
            raise InputError(f"STFPM needs at least two normal training images; got {len(images)}")
        channels = as_hwc(np.asarray(images[0])).shape[2]
        spec = InputSpec.for_channels(channels, self.config.size)
        data = to_network_input(images, spec)

        from vad_inspection.vad import stfpm_train

        result = stfpm_train.train(data, self.config)
        self.input_spec = spec
        self.graph = result.onnx
        self.summary = result.summary
        self.history = result.history
        self._session = None

    # -- step 3: inference ----------------------------------------------------------------------
    @property
    def session(self) -> ort.InferenceSession:
        """The ONNX Runtime session, created on first use."""
        if self.graph is None:
            raise RuntimeError("STFPM is not fitted: call fit() or load a model first")
        if self._session is None:
            self._session = make_session(self.graph)
        return self._session

    def run_graph(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs for an ImageNet-normalised batch ``(N, 3, H, W)``."""
        outputs = self.session.run(list(GRAPH_OUTPUTS), {GRAPH_INPUT: batch})
        return dict(zip(GRAPH_OUTPUTS, outputs, strict=True))

    def predict(self, images: Sequence[np.ndarray]) -> Prediction:
        """Scores ``(N,)`` (the map's maximum) and maps ``(N, H, W)`` at the configured size."""
        if self.input_spec is None:
            raise RuntimeError("STFPM is not fitted: call fit() or load a model first")
        if len(images) == 0:
            raise InputError("no images given")
        scores, maps = [], []
        for i in progress_bar(
            range(0, len(images), PREDICT_BATCH),
            desc="STFPM scoring",
            unit="batch",
            enabled=self.config.progress,
        ):
            out = self.run_graph(to_network_input(images[i : i + PREDICT_BATCH], self.input_spec))
            scores.append(out["score"])
            maps.append(out["map"])
        return Prediction(
            scores=np.concatenate(scores).astype(np.float32, copy=False),
            maps=np.concatenate(maps).astype(np.float32, copy=False),
        )

    # -- persistence ----------------------------------------------------------------------------
    def to_artifact(self) -> Artifact:
        """The fitted model (the one graph, the config, the input description) as an artifact."""
        if self.graph is None or self.input_spec is None:
            raise RuntimeError("STFPM is not fitted: nothing to save")
        return Artifact(
            meta={
                "method": self.name,
                "config": replace(self.config, progress=False).to_dict(),
                "input": self.input_spec.to_dict(),
                "graph_outputs": list(GRAPH_OUTPUTS),
                "training": None if self.summary is None else self.summary.to_dict(),
            },
            graphs={"stfpm": self.graph},
        )

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> STFPM:
        """The model a file holds, quiet (no progress bars)."""
        meta = artifact.meta
        model = cls(replace(STFPMConfig.from_dict(dict(meta["config"])), progress=False))
        model.graph = artifact.graphs["stfpm"]
        model.input_spec = InputSpec.from_dict(dict(meta["input"]))
        training = meta.get("training")
        model.summary = TrainingSummary(**dict(training)) if training else None
        return model
