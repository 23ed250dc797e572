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
   SGD (lr 0.4, momentum 0.9, weight decay 1e-4) for 100 epochs with batches of 32. The
   authors' code (and anomalib's) steps on the loss *summed* over a batch's images, which is
   what lr 0.4 was chosen for; so does this one (the history and the held-out loss are means).
   Stepping on the mean instead is 32 times smaller a step: measured against anomalib trained
   independently from the same start (``benchmarks/vs_anomalib_trained.py``), MobileNetV2 image
   AUROC 0.961 against its 1.000.
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

from dataclasses import dataclass

from vad_inspection.vad.backbones import RANDOM
from vad_inspection.vad.trained_graph import GraphConfig, TrainedGraphModel

#: Names of the ONNX graph's input and outputs (the contract between training and inference):
#: ``map`` (N, H, W), the product of the upsampled distance maps; ``score`` (N,), its maximum.
GRAPH_OUTPUTS: tuple[str, ...] = ("map", "score")

#: The student's random initialisation is seeded with the config's seed plus this: never the
#: teacher's own random weights, whatever the seed.
STUDENT_SEED_OFFSET = 1

#: Images per ONNX Runtime call when scoring (bounds the activations held at once).
PREDICT_BATCH = 8


@dataclass(frozen=True)
class STFPMConfig(GraphConfig):
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
        self.check_input()
        self.check_loop(batch_norm=True)
        if self.lr <= 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("lr must be positive, momentum and weight_decay non-negative")
        self.check_val_fraction()

    @property
    def student_seed(self) -> int:
        return self.seed + STUDENT_SEED_OFFSET


class STFPM(TrainedGraphModel):
    """Student-teacher feature pyramid matching on ONNX Runtime; see the module docstring.

    Images are resized to the configured ``size`` (as the backbone methods do); maps come back at
    that size.
    """

    name = "stfpm"
    title = "STFPM"
    config_class = STFPMConfig
    train_module = "stfpm_train"
    graph_outputs = GRAPH_OUTPUTS
    predict_batch = PREDICT_BATCH
