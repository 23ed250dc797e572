"""SimpleNet (Liu, Zhou, Zhang and Wang, "SimpleNet: A Simple Network for Image Anomaly Detection
and Localization", CVPR 2023).

The paper's steps, in order:

1. Feature extractor: a frozen CNN (the engine's backbone) cut at its taps; each tap is averaged
   over its 3x3 neighbourhood (local aggregation, the patch's context), brought to the first
   tap's grid (bilinear) and the taps are concatenated: one feature ``o_hw`` per position, the
   patch features CFA builds (:class:`~vad_inspection.vad.cfa_train.PatchFeatures`, imported,
   not copied).
2. Feature adaptor ``G_a``: a single linear layer (a 1x1 convolution, as many channels out as
   in) mapping the pretrained features to the target domain, ``q_hw = G_a(o_hw)``; it trains
   with the discriminator and removes the bias of features pretrained on other images.
3. Anomalous feature generator (training only): Gaussian noise ``epsilon ~ N(0, sigma^2 I)``
   (the paper's ``sigma = 0.015``) added to the adapted normal features,
   ``q-_hw = q_hw + epsilon``: synthetic anomalies in feature space, no anomalous images needed.
4. Discriminator ``D_psi``: a 2-layer MLP on each position's feature (linear, batch
   normalisation, LeakyReLU of slope 0.2, linear to one value; as 1x1 convolutions), trained to
   give normal features a high value and noised ones a low value with the truncated L1 loss
   ``l_hw = max(0, th+ - D(q_hw)) + max(0, -th- + D(q-_hw))`` (``th+ = 0.5``, ``th- = -0.5``),
   averaged over positions and images. Normal and noised features go through ``D`` as one batch
   (as the authors' code), so the batch normalisation's statistics cover both.
5. Inference: the anomaly score of each position is ``-D(q_hw)`` (no noise); the map is
   upsampled bilinearly to the input size and Gaussian-smoothed (``sigma``, 4), the image score
   its maximum.

The paper trains both networks with Adam, learning rates 1e-4 (adaptor) and 2e-4
(discriminator), 160 epochs in batches of 8. The authors' code, followed here, uses AdamW with
its default weight decay (1e-2) for the adaptor and Adam with weight decay 1e-5 for the
discriminator (its cosine learning-rate schedule is off in the published runs), initialises the
linear weights Xavier-normal, leaves the discriminator's last layer without bias and makes its
hidden layer 1024 wide (``hidden``).

Where the engine departs from the paper, and why:

* Standardised features, and the noise relative to them. The paper's ``sigma`` is absolute, set
  for WideResNet50's ImageNet features; how far features spread depends on the backbone and its
  weights. Measured on the tests' 32 px textures, MobileNetV2's concatenated taps with random
  weights spread by an RMS of 4.2e-4 per channel, so ``sigma = 0.015`` would be 36 times the
  normal variation and every anomaly would hide inside the noise. So before the adaptor each
  channel is centred on its mean over the training images and all channels are divided by one
  number, the features' RMS spread (one scale: the channels keep their relative weights); both
  are fixed before training and part of the graph, and ``noise_std`` is in units of that
  spread. Its default, 0.1, is measured rather than the paper's number (which cannot be
  translated without the paper's features): on those textures (16 images, batches of 4, the
  default learning rates and width, 20 epochs) a relative 0.015 or 0.05 left the loss flat at
  1.0 (``D`` near 0 for normal and noised features alike, so early stopping kept epoch 1) and
  normal and anomalous images unseparated (pairwise AUROC 0.53 and 0.54), while 0.1 trained
  (held-out loss 0.96 and falling), ranked every anomalous image above every normal one and put
  the map's peak on all 12 squares; 0.25 did as well on the scores (11 of 12 peaks).
* Epochs: :class:`SimpleNetConfig` defaults to at most 20, stopping early when the truncated L1
  loss of a held-out ``val_fraction`` of the images (its noise seeded, the same draws at every
  evaluation, so the comparison between epochs and the stopping point are reproducible) has not
  improved for ``patience`` epochs, and keeping the adaptor and discriminator of the best held-out
  loss. The authors' code keeps the epoch of the best AUROC *on the test set*; a robot has no
  labelled anomalies, and choosing on them would flatter the method.
* Backbone: the paper uses WideResNet50's layer2 and layer3; the engine's default is MobileNetV2
  (a robot's CPU) and, as CFA, all three of the backbone's taps (strides 4, 8 and 16), so the
  map lives on the stride-4 grid. The authors' code also pools each level's flattened 3x3 patch
  and then the concatenation to 1536 channels by adaptive averaging over channels; here the
  concatenated taps (152 channels for MobileNetV2) are used as they are (as CFA: at these widths
  pooling channels only discards information).
* Backbone weights: the paper's are ImageNet-pretrained. Where none can be downloaded (these
  development machines) the backbone has seeded random weights (``weights="random"``), as every
  other method here.
* Image score: the authors' code takes the maximum of the unsmoothed patch scores; here it is the
  maximum of the smoothed map (as CFA and PatchCore), so score and map always agree.

anomalib (2.7) has no SimpleNet. Its SuperSimpleNet (Rolih et al., 2024) extends it and keeps the
adaptor and the discriminator with the same parameterisation, so ours map onto it
(``benchmarks/vs_anomalib_trained.py``: our standardisation folded into its adaptor, the
discriminator's last layer negated, as its head outputs the anomaly value where ours outputs ``D``
and scores ``-D``); with the same features and smoothing kernel the two maps agree to 2e-6 of their
largest value (``tests/test_anomalib_fidelity.py``; its own kernel, 25 px for sigma 4 where ours is
33, moves them by up to 2e-3). Its features (the taps upsampled to twice the first tap's grid, then
3x3-averaged), its Perlin-masked noise, its focal losses and its image-level classification head
are SuperSimpleNet's, not the paper's, and stay out of this module.

This module is the inference side and has no torch in it: backbone, aggregation,
standardisation, adaptor, discriminator, the sign and the upsampling are one ONNX graph (input:
the ImageNet-normalised image batch; output: the unsmoothed map at the input size) run in one
ONNX Runtime session; the Gaussian smoothing (OpenCV, as CFA's) and the maximum follow in NumPy.
:meth:`SimpleNet.fit` imports the torch training module (:mod:`vad_inspection.vad.simplenet_train`)
lazily, so a robot that only scores never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from vad_inspection.vad.backbones import RANDOM
from vad_inspection.vad.trained_graph import GraphConfig, TrainedGraphModel

#: Names of the ONNX graph's input and output: ``map`` (N, H, W), ``-D(G_a(o))`` upsampled to the
#: input size, before the Gaussian smoothing.
GRAPH_OUTPUTS: tuple[str, ...] = ("map",)

#: The adaptor's and the discriminator's initialisation are seeded with the config's seed plus
#: this: never the same random stream as the backbone's own random weights.
HEAD_SEED_OFFSET = 1

#: Images per ONNX Runtime call when scoring (bounds the activations held at once).
PREDICT_BATCH = 8


@dataclass(frozen=True)
class SimpleNetConfig(GraphConfig):
    """Hyper-parameters, the paper's where the engine can afford them (see the module docstring).

    ``backbone`` (its three taps, concatenated, are the features), ``weights`` of the backbone
    (``random``: seeded by ``seed``; ``imagenet``; or a state-dict file), ``seed`` (the backbone's
    random weights, the adaptor's and discriminator's initialisation with
    :data:`HEAD_SEED_OFFSET`, the held-out split, the batch order and the noise), ``size``
    (height, width) of the network input. Method: the noise's standard deviation ``noise_std``
    (the paper's sigma, here in units of the standardised features' spread), the loss's margins
    ``th_pos`` and ``th_neg`` (the paper's ``th+``, ``th-``), the discriminator's ``hidden``
    width; maps smoothed with a Gaussian of ``sigma`` (0: none). Training: AdamW for the adaptor
    (``adaptor_lr``, ``adaptor_weight_decay``) and Adam for the discriminator
    (``discriminator_lr``, ``discriminator_weight_decay``), batches of ``batch_size``, at most
    ``epochs``, stopping when the held-out ``val_fraction``'s loss has not improved for
    ``patience`` epochs, counted only after
    :data:`~vad_inspection.vad.simplenet_train.WARMUP_STEPS` optimiser steps (the best kept; no
    held-out images: all ``epochs`` run, the lowest training loss kept). ``checkpoint_dir`` makes
    training resumable (None: no checkpoints); ``progress`` shows bars.
    """

    backbone: str = "mobilenet_v2"
    weights: str = RANDOM
    seed: int = 0
    size: tuple[int, int] = (256, 256)
    progress: bool = False
    noise_std: float = 0.1
    th_pos: float = 0.5
    th_neg: float = -0.5
    hidden: int = 1024
    sigma: float = 4.0
    epochs: int = 20
    batch_size: int = 8
    adaptor_lr: float = 1e-4
    adaptor_weight_decay: float = 1e-2
    discriminator_lr: float = 2e-4
    discriminator_weight_decay: float = 1e-5
    val_fraction: float = 0.1
    patience: int = 5
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        self.check_input()
        if self.noise_std <= 0 or self.hidden < 1 or self.sigma < 0:
            raise ValueError(
                "noise_std must be positive, hidden at least 1, sigma non-negative; got "
                f"{self.noise_std}, {self.hidden}, {self.sigma}"
            )
        if self.th_pos <= self.th_neg:
            # with th+ <= th- one value D(q) = D(q-) between them zeroes the loss: nothing is
            # learnt about normal against noised features
            raise ValueError(
                f"th_pos must be above th_neg; got th_pos={self.th_pos}, th_neg={self.th_neg}"
            )
        self.check_loop()
        if min(self.adaptor_lr, self.discriminator_lr) <= 0:
            raise ValueError(
                "adaptor_lr and discriminator_lr must be positive; got "
                f"{self.adaptor_lr}, {self.discriminator_lr}"
            )
        if min(self.adaptor_weight_decay, self.discriminator_weight_decay) < 0:
            raise ValueError("adaptor_weight_decay and discriminator_weight_decay must be >= 0")
        self.check_val_fraction()

    @property
    def head_seed(self) -> int:
        return self.seed + HEAD_SEED_OFFSET


class SimpleNet(TrainedGraphModel):
    """Feature adaptor and discriminator of noised features on frozen features, on ONNX Runtime;
    see the module docstring. Images are resized to the configured ``size``; maps come back at
    it."""

    name = "simplenet"
    title = "SimpleNet"
    config_class = SimpleNetConfig
    train_module = "simplenet_train"
    graph_outputs = GRAPH_OUTPUTS
    predict_batch = PREDICT_BATCH

    smoothed_after_graph = True
