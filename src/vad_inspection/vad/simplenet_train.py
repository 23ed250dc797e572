"""Training side (torch) of SimpleNet: the loss, the noise, the map, the adaptor and the
discriminator, their step and the export.

Only :meth:`vad_inspection.vad.simplenet.SimpleNet.fit` imports this module; inference runs the
exported ONNX graph without torch. The method and the paper's names are in
:mod:`vad_inspection.vad.simplenet`: ``o`` a patch feature, ``G_a`` the feature adaptor,
``q = G_a(o)`` an adapted feature, ``epsilon`` the noise, ``q- = q + epsilon`` an anomalous
feature, ``D_psi`` the discriminator, ``th+`` and ``th-`` the loss's margins. The training loop,
the checkpoints and the export are every torch-trained method's
(:mod:`vad_inspection.vad.torch_training`).

The patch features are CFA's (:class:`~vad_inspection.vad.cfa_train.PatchFeatures`: the frozen
backbone's three taps, 3x3-averaged, on the first tap's grid, concatenated), built by CFA's own
:func:`~vad_inspection.vad.cfa_train.feature_network`. They do not change during training, so
they are computed once and kept when they fit in memory
(:class:`~vad_inspection.vad.torch_training.TeacherFeatures`), else recomputed for every batch.
Their standardisation (:class:`Standardise`) is measured on the training images once, before
training, and stays fixed; the adaptor and the discriminator train together, each with its own
optimiser.

The noise is drawn from torch generators seeded from the config's seed, one per training epoch
and one for every held-out evaluation (:func:`noise_generator`), never from torch's global
stream: a run resumed from a checkpoint draws exactly the noise an uninterrupted one draws, with
no generator state to store, and every held-out evaluation scores the same noised features, so
the held-out loss, the best epoch and early stopping are reproducible.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vad_inspection.vad.backbones import get_spec
from vad_inspection.vad.cfa import CFAConfig
from vad_inspection.vad.cfa_train import PatchFeatures, as_patches
from vad_inspection.vad.cfa_train import anomaly_map as upsample
from vad_inspection.vad.cfa_train import feature_network as cfa_feature_network
from vad_inspection.vad.simplenet import GRAPH_OUTPUTS, SimpleNetConfig
from vad_inspection.vad.torch_training import CHECKPOINT as CHECKPOINT
from vad_inspection.vad.torch_training import (
    Run,
    TeacherFeatures,
    Training,
    batches,
    export_graph,
    mean_loss,
    torch_threads,
)
from vad_inspection.vad.vae import TrainingSummary

#: Early stopping counts no epoch as bad before the networks have taken this many optimiser
#: steps: the discriminator's batch normalisation evaluates with running statistics of momentum
#: 0.1, which after 50 steps keep 0.9^50 (0.5 %) of their initial values; before that the
#: held-out loss measures the lag of those statistics as much as the discriminator.
WARMUP_STEPS = 50
#: The noise streams (:func:`noise_generator`): one per training epoch, one for the held-out
#: loss. The batch order uses stream 2, as in the other trainers.
TRAIN_NOISE_STREAM = 3
HELD_OUT_NOISE_STREAM = 4
#: The slope of the discriminator's LeakyReLU for negative inputs (the paper's 0.2).
LEAKY_SLOPE = 0.2


# --------------------------------------------------------------------------------------------
# The paper's quantities: small pure functions, checked by hand in the tests
# --------------------------------------------------------------------------------------------


def truncated_l1_loss(
    normal: torch.Tensor, anomalous: torch.Tensor, th_pos: float, th_neg: float
) -> torch.Tensor:
    """The paper's loss ``max(0, th+ - D(q)) + max(0, -th- + D(q-))``, each term averaged over
    all positions (and images): ``normal`` the discriminator's values ``D(q)`` of adapted normal
    features, ``anomalous`` its values ``D(q-)`` of the noised ones (any shapes). A value beyond
    its margin costs nothing, so the discriminator is not pushed to ever larger outputs."""
    return F.relu(th_pos - normal).mean() + F.relu(anomalous - th_neg).mean()


def noise_generator(seed: int, stream: int, *index: int) -> torch.Generator:
    """A torch generator for the noise of one ``stream`` (and, e.g., one epoch ``index``) of a
    run seeded ``seed``: seeded through NumPy's ``SeedSequence`` of ``(seed, stream, *index)``,
    so neighbouring seeds and epochs give unrelated, reproducible streams."""
    entropy = np.random.SeedSequence([seed, stream, *index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(entropy))


def anomalous_features(
    adapted: torch.Tensor, noise_std: float, generator: torch.Generator
) -> torch.Tensor:
    """The anomalous feature generator: ``q- = q + epsilon``, ``epsilon ~ N(0, sigma^2 I)``
    drawn from ``generator``, independently at every position and channel of ``adapted``."""
    epsilon = torch.randn(adapted.shape, generator=generator, dtype=adapted.dtype)
    return adapted + noise_std * epsilon


def anomaly_map(
    discriminator: nn.Module, adapted: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """The inference map: ``-D(q)`` at every position of adapted features ``(N, C, h, w)``
    (higher = more anomalous), upsampled bilinearly to ``size`` (half-pixel centres, as the
    authors' code and :func:`~vad_inspection.vad.cfa_train.anomaly_map`): ``(N, H, W)``."""
    return upsample(-discriminator(adapted)[:, 0], size)


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


def feature_network(config: SimpleNetConfig) -> PatchFeatures:
    """CFA's frozen patch features (evaluation mode, no gradients) for this config's backbone,
    weights and seed: :func:`~vad_inspection.vad.cfa_train.feature_network` reads only those."""
    return cfa_feature_network(
        CFAConfig(backbone=config.backbone, weights=config.weights, seed=config.seed)
    )


class Standardise(nn.Module):
    """The engine's feature standardisation (see :mod:`~vad_inspection.vad.simplenet`): each
    channel centred on its training mean, all divided by one number, the features' RMS spread
    (one scale, so the channels keep their relative weights). Buffers only: fixed before
    training, saved with the networks and exported in the graph."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().reshape(1, -1, 1, 1).float().clone())
        self.register_buffer("scale", scale.detach().reshape(()).float().clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.scale


def feature_statistics(parts: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, scale)`` of patch features given in parts ``(n, C, h, w)``: each channel's mean
    over all images and positions ``(C,)``, and the RMS of the centred features over channels,
    images and positions, ``sqrt(mean_c var_c)``. One pass, part by part (the parts' means and
    squared deviations merged as Chan, Golub and LeVeque's pairwise update, in float64), so the
    training features are never held twice. Constant features (no spread) get scale 1: nothing
    to standardise."""
    count, mean, m2 = 0, None, None
    for part in parts:
        rows = as_patches(part).double()
        part_mean = rows.mean(0)
        part_m2 = (rows - part_mean).pow(2).sum(0)
        if mean is None:
            count, mean, m2 = len(rows), part_mean, part_m2
            continue
        total = count + len(rows)
        delta = part_mean - mean
        mean = mean + delta * (len(rows) / total)
        m2 = m2 + part_m2 + delta.pow(2) * (count * len(rows) / total)
        count = total
    if mean is None:
        raise ValueError("no features to standardise")
    rms = (m2.sum() / (count * len(mean))).sqrt()
    scale = rms if rms > 0 else torch.ones((), dtype=torch.float64)
    return mean.float(), scale.float()


def standardise_network(
    features: TeacherFeatures, index: np.ndarray, batch_size: int
) -> Standardise:
    """The standardisation measured on the patch features of the training images ``index``."""
    parts = (features(part)[0] for part in _batches(index, batch_size))
    return Standardise(*feature_statistics(parts))


def _xavier_normal(module: nn.Module) -> None:
    """The authors' initialisation: Xavier-normal weights (biases keep torch's default)."""
    if isinstance(module, nn.Conv2d):
        nn.init.xavier_normal_(module.weight)


def adaptor_network(channels: int) -> nn.Conv2d:
    """``G_a``: one linear layer on each position's feature, a 1x1 convolution from the
    concatenated taps to as many channels (Xavier-normal weights)."""
    adaptor = nn.Conv2d(channels, channels, kernel_size=1)
    _xavier_normal(adaptor)
    return adaptor


def discriminator_network(channels: int, hidden: int) -> nn.Sequential:
    """``D_psi``: linear, batch normalisation, LeakyReLU(0.2), linear to one value, on each
    position's feature (1x1 convolutions; batch normalisation over images and positions, as the
    paper's over the rows of all patches). The last layer has no bias (the authors' code: the
    margins fix the output's offset); Xavier-normal weights."""
    discriminator = nn.Sequential(
        nn.Conv2d(channels, hidden, kernel_size=1),
        nn.BatchNorm2d(hidden),
        nn.LeakyReLU(LEAKY_SLOPE),
        nn.Conv2d(hidden, 1, kernel_size=1, bias=False),
    )
    discriminator.apply(_xavier_normal)
    return discriminator


def head_networks(config: SimpleNetConfig, standardise: Standardise) -> nn.ModuleDict:
    """What follows the frozen features: ``standardise`` (fixed), the ``adaptor`` and the
    ``discriminator`` (``hidden`` wide), the last two initialised in that order with the head's
    seed; one module, so that their states are saved, kept as the best and restored together."""
    channels = sum(get_spec(config.backbone).channels)
    torch.manual_seed(config.head_seed)
    adaptor = adaptor_network(channels)
    discriminator = discriminator_network(channels, config.hidden)
    return nn.ModuleDict(
        {"standardise": standardise, "adaptor": adaptor, "discriminator": discriminator}
    )


class Scorer(nn.Module):
    """What inference runs, as one graph: ``image`` ``(N, 3, H, W)`` (ImageNet-normalised) to
    ``map`` ``(N, H, W)``, ``-D(G_a(o))`` of the standardised patch features ``o``, upsampled to
    the input size (:func:`anomaly_map`)."""

    def __init__(self, features: nn.Module, heads: nn.ModuleDict, size: tuple[int, int]) -> None:
        super().__init__()
        self.features = features.eval()
        self.heads = heads.eval()
        self.size = tuple(size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        adapted = self.heads["adaptor"](self.heads["standardise"](self.features(image)[0]))
        return anomaly_map(self.heads["discriminator"], adapted, self.size)


def export_onnx(features: nn.Module, heads: nn.ModuleDict, size: tuple[int, int]) -> bytes:
    """Backbone, aggregation, standardisation, adaptor, discriminator and upsampling as one
    ONNX graph with a dynamic batch (:class:`Scorer`)."""
    return export_graph(Scorer(features, heads, size), (3, *size), GRAPH_OUTPUTS)


# --------------------------------------------------------------------------------------------
# Training: the method's step (the loop: vad_inspection.vad.torch_training)
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` hands back: the exported graph, the networks (the frozen features;
    ``heads``: ``standardise``, ``adaptor``, ``discriminator``; for tests and inspection), which
    rows were held out, and what training did."""

    features: PatchFeatures
    heads: nn.ModuleDict
    onnx: bytes
    val_index: np.ndarray
    summary: TrainingSummary
    history: list[dict[str, float]]


def _batches(index: np.ndarray, size: int) -> list[np.ndarray]:
    """Mini-batches, a last batch of one image kept: the discriminator's batch normalisation
    runs over every position of the batch's normal and noised features (``2 h w`` rows even
    for one image)."""
    return batches(index, size)


def _loss(
    heads: nn.ModuleDict, feats: torch.Tensor, generator: torch.Generator,
    config: SimpleNetConfig,
) -> torch.Tensor:  # fmt: skip
    """The truncated L1 loss of one batch of patch features: adapted, noised, and the normal
    and noised features through the discriminator as one batch (so in training mode its batch
    normalisation sees both, as the authors' code)."""
    adapted = heads["adaptor"](heads["standardise"](feats))
    noised = anomalous_features(adapted, config.noise_std, generator)
    values = heads["discriminator"](torch.cat([adapted, noised]))
    normal, anomalous = values[: len(adapted)], values[len(adapted) :]
    return truncated_l1_loss(normal, anomalous, config.th_pos, config.th_neg)


def evaluate_loss(
    heads: nn.ModuleDict, features: TeacherFeatures, index: np.ndarray, config: SimpleNetConfig
) -> float:
    """Mean loss over the rows ``index`` of the training data, in evaluation mode, with the
    held-out noise stream restarted at every call (the same noise for every epoch's networks)."""
    generator = noise_generator(config.seed, HELD_OUT_NOISE_STREAM)
    return mean_loss(
        heads, index, config.batch_size,
        lambda part: _loss(heads, features(part)[0], generator, config),
    )  # fmt: skip


def _optimisers(heads: nn.ModuleDict, config: SimpleNetConfig) -> list[torch.optim.Optimizer]:
    """The authors' two optimisers: AdamW for the adaptor, Adam for the discriminator."""
    return [
        torch.optim.AdamW(
            heads["adaptor"].parameters(), lr=config.adaptor_lr,
            weight_decay=config.adaptor_weight_decay,
        ),
        torch.optim.Adam(
            heads["discriminator"].parameters(), lr=config.discriminator_lr,
            weight_decay=config.discriminator_weight_decay,
        ),
    ]  # fmt: skip


def train(data: np.ndarray, config: SimpleNetConfig) -> TrainResult:
    """Train the adaptor and the discriminator on ImageNet-normalised images ``(N, 3, H, W)``;
    export to ONNX.

    Seeded: the same data, options and seed give the same networks (one process, CPU). With
    ``config.checkpoint_dir`` the state is saved after every epoch and a later call with the same
    options and data resumes from it (also after the run finished: it then only re-exports). No
    noise state is saved: the noise is derived from the seed and the epoch. Torch threads:
    :func:`~vad_inspection.vad.torch_training.threads`.
    """
    with torch_threads():
        return _train(np.ascontiguousarray(data, np.float32), config)


def _train(data: np.ndarray, config: SimpleNetConfig) -> TrainResult:
    run = Run(config, data)
    feature_net = feature_network(config)
    features = TeacherFeatures(feature_net, data, config.batch_size)
    heads = head_networks(config, standardise_network(features, run.train_index, config.batch_size))
    adaptor_optimiser, discriminator_optimiser = _optimisers(heads, config)

    @functools.cache
    def epoch_noise(epoch: int) -> torch.Generator:
        """The noise of a training epoch, from its own generator (seeded per epoch, so a resumed
        run draws the noise an uninterrupted one draws)."""
        return noise_generator(config.seed, TRAIN_NOISE_STREAM, epoch)

    summary, history = run.fit(
        Training(
            title="SimpleNet",
            network=heads,
            # adaptor and discriminator step together on the same loss, each with its optimiser
            parts={
                "heads": heads,
                "adaptor_optimiser": adaptor_optimiser,
                "discriminator_optimiser": discriminator_optimiser,
            },
            batch_loss=lambda part, epoch: _loss(
                heads, features(part)[0], epoch_noise(epoch.index), config
            ),
            held_out_loss=lambda index: evaluate_loss(heads, features, index, config),
            warmup_steps=WARMUP_STEPS,
            batches=_batches,
            advice="lower the learning rates",
        )
    )
    return TrainResult(
        features=feature_net,
        heads=heads,
        onnx=export_onnx(feature_net, heads, config.size),
        val_index=run.val_index,
        summary=summary,
        history=history,
    )
