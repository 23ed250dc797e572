"""FastFlow (Yu, Zheng, Wang, Wu, Zhang and Xie, "FastFlow: Unsupervised Anomaly Detection and
Localization via 2D Normalizing Flows", 2021).

The paper's steps, in order:

1. Features: a frozen CNN (the engine's backbone) gives feature maps at several scales, here the
   backbone's three taps (strides 4, 8 and 16 of the input,
   :data:`~vad_inspection.vad.backbones.BACKBONES`). Each level's map is layer-normalised (the
   paper's LayerNorm over channels and positions).
2. A 2-D normalizing flow per level: ``K`` steps (``flow_steps``; the paper 8 for ResNet18), each
   an affine coupling on the feature map. The channels are split in halves ``(x1, x2)``; a small
   fully-convolutional subnet of ``x1`` (``conv -> ReLU -> conv``, kernels alternating 3x3 and 1x1
   from one step to the next, as the paper's ResNet18 setting; width ``hidden_ratio`` times the
   channels) gives a log-scale ``s`` and a shift ``t``; ``y2 = x2 * exp(s) + t``, ``y1 = x1``, and
   ``log|det J| = sum s``. The log-scale is soft-clamped, ``s = clamp * tanh(s_raw / clamp)``
   (clamp 2), for stability; a fixed random channel permutation (log-det 0) follows every step.
3. Training on normal images only: the negative log-likelihood of the features under a standard
   normal after the flow, ``0.5 * sum(z^2) - log|det J|`` (the constant dropped), divided by the
   number of dimensions of the level and summed over the levels; Adam with lr 1e-3 and weight
   decay 1e-5 as the paper.
4. Inference: per level the log-likelihood map ``-0.5 * mean_c(z^2)`` at each position, turned
   into a probability ``exp(...)``, upsampled bilinearly to the input size and averaged over the
   levels; the anomaly map is minus that average (higher = more anomalous, in ``[-1, 0]``), the
   image score its maximum.

Where the engine departs from the paper, and why:

* Epochs: the paper trains 500; on a robot's CPU :class:`FastFlowConfig` defaults to at most 20,
  stopping early when the NLL of a held-out ``val_fraction`` of the images has not improved for
  ``patience`` epochs, and keeping the flows of the best held-out NLL.
* LayerNorm without learnable scale and shift: a learnable affine outside the flow could shrink
  the features (and so ``z``) without paying for it in the log-determinant.
* The last convolution of every subnet starts at zero (Glow's choice; the paper does not say), so
  each flow starts as the identity.
* Backbone weights: the paper's are ImageNet-pretrained. Where none can be downloaded (these
  development machines) the backbone has seeded random weights (``weights="random"``), as every
  other method here.

This module is the inference side and has no torch in it: backbone, normalisation, flows, maps,
upsampling, average and maximum are one ONNX graph (input: the ImageNet-normalised image batch;
outputs: the map at the input size and the score), run in one ONNX Runtime session.
:meth:`FastFlow.fit` imports the torch training module (:mod:`vad_inspection.vad.fastflow_train`)
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
#: ``map`` (N, H, W), minus the average of the upsampled likelihood maps; ``score`` (N,), its max.
GRAPH_INPUT = "image"
GRAPH_OUTPUTS: tuple[str, ...] = ("map", "score")

#: The flows' initialisation and permutations are seeded with the config's seed plus this: never
#: the same random stream as the backbone's own random weights.
FLOW_SEED_OFFSET = 1

#: Images per ONNX Runtime call when scoring (bounds the activations held at once).
PREDICT_BATCH = 8


@dataclass(frozen=True)
class FastFlowConfig:
    """Hyper-parameters, the paper's where the engine can afford them (see the module docstring).

    ``backbone`` (its three taps are the flows' levels), ``weights`` of the backbone (``random``:
    seeded by ``seed``; ``imagenet``; or a state-dict file), ``seed`` (the backbone's random
    weights, the flows' initialisation and permutations with :data:`FLOW_SEED_OFFSET`, the
    held-out split and the batch order), ``size`` (height, width) of the network input. Flows:
    ``flow_steps`` coupling steps per level, subnets ``hidden_ratio`` times as wide as the level's
    channels, log-scales soft-clamped to ``(-clamp, clamp)``. Training: Adam with ``lr`` and
    ``weight_decay`` (the paper's 1e-3, 1e-5) in batches of ``batch_size`` for at most ``epochs``,
    stopping when the held-out ``val_fraction``'s NLL has not improved for ``patience`` epochs,
    counted only after :data:`~vad_inspection.vad.fastflow_train.WARMUP_STEPS` optimiser steps;
    the flows of the best held-out NLL are kept (no held-out images: all ``epochs`` run and the
    epoch of the lowest training NLL is kept).
    ``checkpoint_dir`` makes training resumable (None: no checkpoints); ``progress`` shows bars.
    """

    backbone: str = "mobilenet_v2"
    weights: str = RANDOM
    seed: int = 0
    size: tuple[int, int] = (256, 256)
    progress: bool = False
    flow_steps: int = 8
    hidden_ratio: float = 1.0
    clamp: float = 2.0
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5
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
                f"FastFlowConfig.size must be (height, width) of at least 16 px; got {size}"
            )
        if self.flow_steps < 1 or self.hidden_ratio <= 0 or self.clamp <= 0:
            raise ValueError(
                "flow_steps must be at least 1, hidden_ratio and clamp positive; got "
                f"{self.flow_steps}, {self.hidden_ratio}, {self.clamp}"
            )
        if self.epochs < 0 or self.batch_size < 1 or self.patience < 1:
            raise ValueError(
                "epochs must be non-negative, batch_size and patience at least 1; got "
                f"{self.epochs}, {self.batch_size}, {self.patience}"
            )
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr must be positive, weight_decay non-negative")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1); got {self.val_fraction}")

    @property
    def flow_seed(self) -> int:
        return self.seed + FLOW_SEED_OFFSET

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "size": list(self.size)}

    @staticmethod
    def from_dict(data: dict[str, object]) -> FastFlowConfig:
        known = {f.name for f in fields(FastFlowConfig)}
        values = {k: v for k, v in data.items() if k in known}
        values["size"] = tuple(values.get("size", (256, 256)))
        return FastFlowConfig(**values)


class FastFlow:
    """2-D normalizing flows on frozen features, on ONNX Runtime; see the module docstring.

    Images are resized to the configured ``size`` (as the backbone methods do); maps come back at
    that size.
    """

    name = "fastflow"

    def __init__(self, config: FastFlowConfig | None = None) -> None:
        self.config = config or FastFlowConfig()
        self.graph: bytes | None = None
        self.input_spec: InputSpec | None = None
        self.summary: TrainingSummary | None = None
        self.history: list[dict[str, float]] = []
        self._session: ort.InferenceSession | None = None

    # -- step 3: training the flows (torch, lazily) ---------------------------------------------
    def fit(self, images: Sequence[np.ndarray]) -> None:
        """Train the flows on normal images (torch) and export backbone and flows as one graph.

        Every image is checked and normalised before training starts, so a bad image fails at
        once rather than after the training it would have wasted.
        """
        if len(images) < 2:
            raise InputError(
                f"FastFlow needs at least two normal training images; got {len(images)}"
            )
        channels = as_hwc(np.asarray(images[0])).shape[2]
        spec = InputSpec.for_channels(channels, self.config.size)
        data = to_network_input(images, spec)

        from vad_inspection.vad import fastflow_train

        result = fastflow_train.train(data, self.config)
        self.input_spec = spec
        self.graph = result.onnx
        self.summary = result.summary
        self.history = result.history
        self._session = None

    # -- step 4: inference ----------------------------------------------------------------------
    @property
    def session(self) -> ort.InferenceSession:
        """The ONNX Runtime session, created on first use."""
        if self.graph is None:
            raise RuntimeError("FastFlow is not fitted: call fit() or load a model first")
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
            raise RuntimeError("FastFlow is not fitted: call fit() or load a model first")
        if len(images) == 0:
            raise InputError("no images given")
        scores, maps = [], []
        for i in progress_bar(
            range(0, len(images), PREDICT_BATCH),
            desc="FastFlow scoring",
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
            raise RuntimeError("FastFlow is not fitted: nothing to save")
        return Artifact(
            meta={
                "method": self.name,
                "config": replace(self.config, progress=False).to_dict(),
                "input": self.input_spec.to_dict(),
                "graph_outputs": list(GRAPH_OUTPUTS),
                "training": None if self.summary is None else self.summary.to_dict(),
            },
            graphs={"fastflow": self.graph},
        )

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> FastFlow:
        """The model a file holds, quiet (no progress bars)."""
        meta = artifact.meta
        model = cls(replace(FastFlowConfig.from_dict(dict(meta["config"])), progress=False))
        model.graph = artifact.graphs["fastflow"]
        model.input_spec = InputSpec.from_dict(dict(meta["input"]))
        training = meta.get("training")
        model.summary = TrainingSummary(**dict(training)) if training else None
        return model
