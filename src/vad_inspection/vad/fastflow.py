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

from dataclasses import dataclass

from vad_inspection.vad.backbones import RANDOM
from vad_inspection.vad.trained_graph import GraphConfig, TrainedGraphModel

#: Names of the ONNX graph's input and outputs (the contract between training and inference):
#: ``map`` (N, H, W), minus the average of the upsampled likelihood maps; ``score`` (N,), its max.
GRAPH_OUTPUTS: tuple[str, ...] = ("map", "score")

#: The flows' initialisation and permutations are seeded with the config's seed plus this: never
#: the same random stream as the backbone's own random weights.
FLOW_SEED_OFFSET = 1

#: Images per ONNX Runtime call when scoring (bounds the activations held at once).
PREDICT_BATCH = 8


@dataclass(frozen=True)
class FastFlowConfig(GraphConfig):
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
        self.check_input()
        if self.flow_steps < 1 or self.hidden_ratio <= 0 or self.clamp <= 0:
            raise ValueError(
                "flow_steps must be at least 1, hidden_ratio and clamp positive; got "
                f"{self.flow_steps}, {self.hidden_ratio}, {self.clamp}"
            )
        self.check_loop()
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr must be positive, weight_decay non-negative")
        self.check_val_fraction()

    @property
    def flow_seed(self) -> int:
        return self.seed + FLOW_SEED_OFFSET


class FastFlow(TrainedGraphModel):
    """2-D normalizing flows on frozen features, on ONNX Runtime; see the module docstring.

    Images are resized to the configured ``size`` (as the backbone methods do); maps come back at
    that size.
    """

    name = "fastflow"
    title = "FastFlow"
    config_class = FastFlowConfig
    train_module = "fastflow_train"
    graph_outputs = GRAPH_OUTPUTS
    predict_batch = PREDICT_BATCH
