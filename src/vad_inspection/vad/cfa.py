"""CFA (Lee, Lee and Song, "CFA: Coupled-hypersphere-based Feature Adaptation for Target-Oriented
Anomaly Localization", 2022).

The paper's steps, in order:

1. Patch features: a frozen CNN (the engine's backbone) cut at its three taps (strides 4, 8 and
   16 of the input, :data:`~vad_inspection.vad.backbones.BACKBONES`); each tap is averaged over
   its 3x3 neighbourhood (the patch's local context), brought to the first tap's grid (bilinear)
   and the three are concatenated, as PaDiM and PatchCore do: one feature ``p_t`` per position.
2. The patch descriptor ``phi``: a trainable 1x1 convolution from those features to the target
   space of ``D / gamma_d`` channels (the paper's "Descriptor"; its CoordConv coordinates are left
   out).
3. The memory bank ``C``: the descriptor's features of the training images *before training*,
   averaged over the images position by position (one centroid per position); with
   ``gamma_c > 1`` k-means (``kmeans_iterations``, seeded) reduces them ``gamma_c``-fold. ``C``
   then stays fixed.
4. Training on normal images only, the descriptor alone: every feature ``phi(p_t)`` is pulled
   into the hypersphere of radius ``r`` around each of its ``K`` nearest centroids,
   ``L_att = 1/(T K) sum_t sum_k max(0, ||phi(p_t) - c_k||^2 - r^2)``, and pushed away from the
   ``J`` next-nearest (hard negatives),
   ``L_rep = 1/(T J) sum_t sum_j max(0, r^2 - ||phi(p_t) - c_j||^2 - alpha)``;
   the loss is their sum (the paper's ``K = 3, J = 3, r = 1e-5, alpha = 0.1``). With those values
   ``r^2 - alpha < 0``, so the repulsive term is zero: kept as the paper writes it, and active
   for a larger ``radius`` or a negative ``alpha``.
5. Inference: at each position the (Euclidean, as the authors' code and anomalib; not squared)
   distances to the ``K`` nearest centroids ``d_1 <= ... <= d_K``; the patch score is the
   paper's ``softmin(d)_1 * d_1`` (the nearest distance weighted by its softmin weight over the
   ``K``: a patch close to one centroid but far from the others, an ambiguous match, counts
   less than its bare distance). The map is upsampled bilinearly to the input size and
   Gaussian-smoothed (``sigma``, 4), the image score its maximum.

Where the engine departs from the paper, and why:

* Epochs: the paper trains tens of epochs on a GPU; :class:`CFAConfig` defaults to at most 20,
  stopping early when the loss of a held-out ``val_fraction`` has not improved for ``patience``
  epochs, and keeping the descriptor of the best held-out loss.
* Memory bank: the paper keeps one centroid per position (``gamma_c = 1``); the default here is
  ``gamma_c = 4``. Scoring a frame computes its distances to every centroid, so at 256 px on
  MobileNetV2 (4096 positions) the paper's bank costs 52.8 ms a frame on two cores and the
  reduced one 16.8 ms, under the 30 ms a robot's camera rate asks for; training, which searches
  the same bank at every step, runs 3.3 times faster. The cost in agreement: image-score Spearman
  0.988 between the two (``benchmarks/cfa_gamma_c.py``, random backbone weights). ``gamma_c=1``
  reproduces the paper (and anomalib's default), as the anomalib comparison does.
* Backbone weights: the paper's are ImageNet-pretrained. Where none can be downloaded (these
  development machines) the backbone has seeded random weights (``weights="random"``), as every
  other method here.

This module is the inference side and has no torch in it: backbone, patch features, descriptor,
the distances to the memory bank (an ONNX initializer), the scores and the upsampling are one
ONNX graph (input: the ImageNet-normalised image batch; output: the unsmoothed map at the input
size) run in one ONNX Runtime session; the Gaussian smoothing (OpenCV, as PatchCore's) and the
maximum follow in NumPy. :meth:`CFA.fit` imports the torch training module
(:mod:`vad_inspection.vad.cfa_train`) lazily, so a robot that only scores never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from vad_inspection.vad.backbones import RANDOM
from vad_inspection.vad.trained_graph import GraphConfig, TrainedGraphModel

#: Names of the ONNX graph's input and output: ``map`` (N, H, W), the patch scores upsampled to
#: the input size, before the Gaussian smoothing.
GRAPH_OUTPUTS: tuple[str, ...] = ("map",)

#: The descriptor's initialisation and the k-means start are seeded with the config's seed plus
#: this: never the same random stream as the backbone's own random weights.
DESCRIPTOR_SEED_OFFSET = 1

#: Images per ONNX Runtime call when scoring: small, as each holds an (h*w) x M distance matrix
#: (at 256 px, 4096 x 4096 floats, 64 MiB).
PREDICT_BATCH = 2


@dataclass(frozen=True)
class CFAConfig(GraphConfig):
    """Hyper-parameters, the paper's where the engine can afford them (see the module docstring).

    ``backbone`` (its three taps, concatenated, are the patch features), ``weights`` of the
    backbone (``random``: seeded by ``seed``; ``imagenet``; or a state-dict file), ``seed`` (the
    backbone's random weights, the descriptor's initialisation and the k-means start with
    :data:`DESCRIPTOR_SEED_OFFSET`, the held-out split and the batch order), ``size`` (height,
    width) of the network input. Method: descriptor channel reduction ``gamma_d``, memory bank
    reduction ``gamma_c`` (by ``kmeans_iterations`` of k-means), ``k`` nearest centroids
    attracted, ``j`` hard negatives repelled, hypersphere ``radius`` and repulsion margin
    ``alpha``; maps smoothed with a Gaussian of ``sigma`` (0: none). Training: AdamW with ``lr``
    and ``weight_decay`` in batches of ``batch_size`` for at most ``epochs``, stopping when the
    held-out ``val_fraction``'s loss has not improved for ``patience`` epochs (the best kept; no
    held-out images: all ``epochs`` run, the lowest training loss kept). ``checkpoint_dir`` makes
    training resumable (None: no checkpoints); ``progress`` shows bars.
    """

    backbone: str = "mobilenet_v2"
    weights: str = RANDOM
    seed: int = 0
    size: tuple[int, int] = (256, 256)
    progress: bool = False
    gamma_d: int = 1
    gamma_c: int = 4
    kmeans_iterations: int = 10
    k: int = 3
    j: int = 3
    radius: float = 1e-5
    alpha: float = 0.1
    sigma: float = 4.0
    epochs: int = 20
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 5e-4
    val_fraction: float = 0.1
    patience: int = 5
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        self.check_input()
        if self.gamma_d < 1 or self.gamma_c < 1 or self.kmeans_iterations < 0:
            raise ValueError(
                "gamma_d and gamma_c must be at least 1, kmeans_iterations non-negative; got "
                f"{self.gamma_d}, {self.gamma_c}, {self.kmeans_iterations}"
            )
        if self.k < 1 or self.j < 0 or self.radius < 0 or self.sigma < 0:
            raise ValueError(
                f"k must be at least 1, j, radius and sigma non-negative; got {self.k}, "
                f"{self.j}, {self.radius}, {self.sigma}"
            )
        self.check_loop()
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr must be positive, weight_decay non-negative")
        self.check_val_fraction()

    @property
    def descriptor_seed(self) -> int:
        return self.seed + DESCRIPTOR_SEED_OFFSET


class CFA(TrainedGraphModel):
    """Coupled-hypersphere feature adaptation on frozen features, on ONNX Runtime; see the
    module docstring. Images are resized to the configured ``size``; maps come back at it."""

    name = "cfa"
    title = "CFA"
    config_class = CFAConfig
    train_module = "cfa_train"
    graph_outputs = GRAPH_OUTPUTS
    predict_batch = PREDICT_BATCH

    smoothed_after_graph = True
