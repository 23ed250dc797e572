"""RD4AD (Deng and Li, "Anomaly Detection via Reverse Distillation from One-Class Embedding",
CVPR 2022).

The paper's steps, in order:

1. Teacher encoder ``E``: a CNN (the engine's backbone), frozen, gives the features ``f_E^k`` of
   three of its layers (strides 4, 8 and 16 of the input: the backbone's three taps,
   :data:`~vad_inspection.vad.backbones.BACKBONES`).
2. One-class bottleneck embedding ``OCBE``, trainable, in two parts:

   * multi-scale feature fusion ``MFF``: the shallower levels are brought to the deepest level's
     grid by strided 3x3 convolutions (each with batch normalisation and ReLU; the first level
     by two of them, the second by one), the three are concatenated and fused by a 1x1
     convolution (``mff_fusion``; see below);
   * one-class embedding ``OCE``: residual block(s), the first with stride 2, condense the fused
     features into a compact embedding (stride 32, twice the deepest tap's channels, as ResNet's
     ``layer4`` after ``layer3``). The embedding is deliberately low-dimensional, so what it
     cannot hold (an anomaly's pattern) is not passed on to the decoder.

3. Student decoder ``D``, trainable: the encoder *reversed*, residual blocks that each double the
   grid (transposed 2x2 convolutions) from the embedding back to the three levels, with the
   teacher's channels and grids, deepest first: ``f_D^3, f_D^2, f_D^1``. The student sees no
   image, only the embedding of the teacher's features ("reverse" distillation).
4. Training on normal images only: at each level ``k`` and position ``(h, w)`` the cosine
   distance ``M^k(h, w) = 1 - <f_E^k(h, w), f_D^k(h, w)> / (||f_E^k(h, w)|| ||f_D^k(h, w)||)``;
   the loss is ``L_KD = sum_k 1/(H_k W_k) sum_{h, w} M^k(h, w)`` (the mean over positions,
   summed over the levels), averaged over the images. The paper trains ``OCBE`` and ``D`` with
   Adam (lr 0.005, betas (0.5, 0.999)) for 200 epochs in batches of 16.
5. Inference: the anomaly map is ``sum_k Upsample(M^k)``, each level upsampled bilinearly to the
   input size (corners aligned, as the authors' code: the paper does not say); it is smoothed by
   a Gaussian of sigma 4 and the image score is its maximum.

Where the engine departs from the paper, and why:

* Epochs: 200 epochs are too slow on a robot's CPU; :class:`RD4ADConfig` defaults to at most 20,
  stopping early when the loss on a held-out ``val_fraction`` of the training images has not
  improved for ``patience`` epochs, and keeping the ``OCBE`` and ``D`` of the best held-out loss.
* Teacher weights: the paper's teacher is an ImageNet-pretrained WideResNet50-2. Where no
  pretrained weights can be downloaded (these development machines) the teacher is the backbone
  with seeded random weights (``weights="random"``, as every other method here gets its
  backbone); ``OCBE`` and ``D`` are initialised with another seed (``seed + 1``).
* Networks built to the backbone: the paper's ``OCBE`` and ``D`` are ResNet layers mirroring a
  WideResNet50-2. Here they are built from the backbone's tap channels, so the same code serves
  the default MobileNetV2 (three taps of 24, 32 and 96 channels) as well as ResNet18 and
  WideResNet50-2; ``OCE`` has ``oce_blocks`` basic residual blocks (the official code: the
  three bottlenecks of ResNet's ``layer4``) and ``D`` one basic block per level (the official
  code: as many as the encoder's layer, three to six bottlenecks), to keep a CPU step cheap.
  A decoder level has no final ReLU: MobileNetV2's taps are the outputs of linear bottlenecks
  and take negative values, which a ReLU output could not point towards.
  The official code's layout (which anomalib 2.7 copies) is one option set away, so that its
  weights and ours map one to one (``benchmarks/vs_anomalib_trained.py`` copies ours into
  anomalib's): ``mff_fusion=False`` (the official code defines the paper's 1x1 fusion
  convolution but never calls it: the concatenation goes straight into ``OCE``), ``oce_blocks``
  and ``decoder_blocks`` as many as the backbone's ``layer4`` and ``layer3`` to ``layer1`` hold
  (ResNet18: 2 and 2), and ``decoder_relu=True`` (every decoder block ends with a ReLU, as
  ResNet's basic blocks; right for ResNet's non-negative taps). The official code has
  bottleneck blocks for the wider ResNets; here all blocks are basic ones.
* The loss is the paper's, per position. The official code and anomalib instead flatten each level
  into one vector per image and take one cosine distance per level and image. That one weights each
  position by the length of its features and asks for the whole level to be one multiple of the
  teacher's; the paper's weights every position alike and asks for each position's direction,
  exactly what the anomaly map then measures. ``loss="flattened"`` trains with the official code's.
  Measured (``benchmarks/vs_anomalib_trained.py``: synthetic scenes of 128 px, ResNet18 with random
  weights, 64 images, 10 epochs, 60 test images), the official code's loss did better in the
  official layout (image AUROC 1.000 against the paper's 0.831) and worse in the default one (0.746
  against 0.937; one earlier run of the same gave 0.821, not reproduced since); a thread on the
  official repository (hq-deng/RD4AD issue 22) reports the paper's loss losing accuracy on MVTec.
  The default stays the paper's until measurements on real defects decide. Adam's ``beta2`` is the
  paper's and the official code's 0.999 (anomalib's is 0.99).

This module is the inference side and has no torch in it: teacher, ``OCBE``, decoder, the
distance maps, the upsampling and their sum are one ONNX graph (input: the ImageNet-normalised
image batch; output: the unsmoothed map at the input size) run in one ONNX Runtime session; the
Gaussian smoothing (OpenCV, as CFA's) and the maximum follow in NumPy, so ``sigma`` can change
without retraining. :meth:`RD4AD.fit` imports the torch training module
(:mod:`vad_inspection.vad.rd4ad_train`) lazily, so a robot that only scores never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from vad_inspection.vad.backbones import RANDOM
from vad_inspection.vad.trained_graph import GraphConfig, TrainedGraphModel

#: Names of the ONNX graph's input and output: ``map`` (N, H, W), the sum of the upsampled
#: cosine-distance maps, before the Gaussian smoothing.
GRAPH_OUTPUTS: tuple[str, ...] = ("map",)

#: ``OCBE`` and the decoder are initialised with the config's seed plus this: never the teacher's
#: own random weights, whatever the seed.
STUDENT_SEED_OFFSET = 1

#: The training losses: the paper's cosine distance per position, averaged (``position``), or the
#: official code's one cosine distance per flattened level (``flattened``); see the module
#: docstring.
LOSSES: tuple[str, ...] = ("position", "flattened")

#: Images per ONNX Runtime call when scoring (bounds the activations held at once).
PREDICT_BATCH = 8


@dataclass(frozen=True)
class RD4ADConfig(GraphConfig):
    """Hyper-parameters, the paper's where the engine can afford them (see the module docstring).

    ``backbone`` (the teacher; its three taps are the distilled levels, and ``OCBE`` and the
    decoder are built to their channels), ``weights`` of the teacher (``random``: seeded by
    ``seed``; ``imagenet``; or a state-dict file), ``seed`` (teacher's random weights, the
    student's initialisation with :data:`STUDENT_SEED_OFFSET`, the held-out split and the batch
    order), ``size`` (height, width) of the network input. Method: ``mff_fusion`` (the paper's 1x1
    convolution after the concatenation in ``MFF``; False: none, as the official code),
    ``oce_blocks`` residual blocks in the one-class embedding, ``decoder_blocks`` residual blocks
    per decoder level and ``decoder_relu`` (a ReLU at the end of each decoder level; the official
    code's layout for ResNet18: False, 2, 2, True); maps smoothed with a Gaussian of ``sigma`` (the
    paper's 4; 0: none). Training: the ``loss`` (:data:`LOSSES`: ``position``, the paper's, or
    ``flattened``, the official code's), Adam with ``lr``, ``beta1`` and ``beta2`` (the paper's
    0.005, 0.5, 0.999; two scalars rather than a tuple so each can be set as a command-line option)
    in batches of ``batch_size`` (the paper's 16) for at most ``epochs`` (the paper: 200), stopping
    when the loss on the held-out ``val_fraction`` of the images has not improved for ``patience``
    epochs, counted only after :data:`~vad_inspection.vad.rd4ad_train.WARMUP_STEPS` optimiser steps
    (the batch normalisation's running statistics lag behind at first); the networks of the best
    held-out loss are kept (no held-out images: all ``epochs`` run and the epoch of the lowest
    training loss is kept). ``checkpoint_dir`` makes training resumable (None: no checkpoints);
    ``progress`` shows bars.
    """

    backbone: str = "mobilenet_v2"
    weights: str = RANDOM
    seed: int = 0
    size: tuple[int, int] = (256, 256)
    progress: bool = False
    mff_fusion: bool = True
    oce_blocks: int = 1
    decoder_blocks: int = 1
    decoder_relu: bool = False
    sigma: float = 4.0
    loss: str = "position"
    epochs: int = 20
    batch_size: int = 16
    lr: float = 0.005
    beta1: float = 0.5
    beta2: float = 0.999
    val_fraction: float = 0.1
    patience: int = 5
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        self.check_input()
        if min(self.oce_blocks, self.decoder_blocks) < 1 or self.sigma < 0:
            raise ValueError(
                "oce_blocks and decoder_blocks must be at least 1 and sigma non-negative; got "
                f"{self.oce_blocks}, {self.decoder_blocks}, {self.sigma}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}; got {self.loss!r}")
        self.check_loop(batch_norm=True)
        if self.lr <= 0 or not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ValueError(
                f"lr must be positive, beta1 and beta2 in [0, 1); got {self.lr}, {self.beta1}, "
                f"{self.beta2}"
            )
        self.check_val_fraction()

    @property
    def student_seed(self) -> int:
        return self.seed + STUDENT_SEED_OFFSET


class RD4AD(TrainedGraphModel):
    """Reverse distillation from a one-class embedding, on ONNX Runtime; see the module
    docstring. Images are resized to the configured ``size``; maps come back at it."""

    name = "rd4ad"
    title = "RD4AD"
    config_class = RD4ADConfig
    train_module = "rd4ad_train"
    graph_outputs = GRAPH_OUTPUTS
    predict_batch = PREDICT_BATCH

    smoothed_after_graph = True
