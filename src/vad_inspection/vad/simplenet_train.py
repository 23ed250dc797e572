"""Training side (torch) of SimpleNet: the loss, the noise, the map, the adaptor and the
discriminator, the training loop and the export.

Only :meth:`vad_inspection.vad.simplenet.SimpleNet.fit` imports this module; inference runs the
exported ONNX graph without torch. The method and the paper's names are in
:mod:`vad_inspection.vad.simplenet`: ``o`` a patch feature, ``G_a`` the feature adaptor,
``q = G_a(o)`` an adapted feature, ``epsilon`` the noise, ``q- = q + epsilon`` an anomalous
feature, ``D_psi`` the discriminator, ``th+`` and ``th-`` the loss's margins.

The patch features are CFA's (:class:`~vad_inspection.vad.cfa_train.PatchFeatures`: the frozen
backbone's three taps, 3x3-averaged, on the first tap's grid, concatenated), built by CFA's own
:func:`~vad_inspection.vad.cfa_train.feature_network`. They do not change during training, so
they are computed once and kept when they fit in memory
(:class:`~vad_inspection.vad.stfpm_train.TeacherFeatures`), else recomputed for every batch.
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

import io
import math
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vad_inspection.progress import progress_bar
from vad_inspection.vad import checkpoint
from vad_inspection.vad.backbones import get_spec
from vad_inspection.vad.cfa import CFAConfig
from vad_inspection.vad.cfa_train import PatchFeatures, as_patches
from vad_inspection.vad.cfa_train import anomaly_map as upsample
from vad_inspection.vad.cfa_train import feature_network as cfa_feature_network
from vad_inspection.vad.checkpoint import TrainState
from vad_inspection.vad.simplenet import GRAPH_OUTPUTS, SimpleNetConfig
from vad_inspection.vad.stfpm_train import TeacherFeatures, threads
from vad_inspection.vad.trained_graph import GRAPH_INPUT
from vad_inspection.vad.vae import TrainingSummary
from vad_inspection.vad.vae_train import held_out

CHECKPOINT = "last.pt"
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
    scorer = Scorer(features, heads, size).eval()
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated but gives a plain static graph every ONNX Runtime
        # runs (as for the backbones); the dynamo exporter needs onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            scorer,
            (torch.zeros(2, 3, *size),),
            buffer,
            input_names=[GRAPH_INPUT],
            output_names=list(GRAPH_OUTPUTS),
            dynamic_axes={name: {0: "batch"} for name in (GRAPH_INPUT, *GRAPH_OUTPUTS)},
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Training loop
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
    return [index[i : i + size] for i in range(0, len(index), size)]


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
    heads.eval()
    generator = noise_generator(config.seed, HELD_OUT_NOISE_STREAM)
    total = 0.0
    with torch.no_grad():
        for part in _batches(index, config.batch_size):
            total += float(_loss(heads, features(part)[0], generator, config)) * len(part)
    return total / max(len(index), 1)


def _train_epoch(
    heads: nn.ModuleDict, optimisers: list[torch.optim.Optimizer], features: TeacherFeatures,
    train_index: np.ndarray, config: SimpleNetConfig, epoch: int,
) -> float:  # fmt: skip
    """One pass over the training images in a seeded order with seeded noise (both seeded per
    epoch, so a resumed run draws the same batches and noise as an uninterrupted one); the mean
    training loss. Adaptor and discriminator step together on the same loss."""
    heads.train()
    rng = np.random.default_rng([config.seed, 2, epoch])
    generator = noise_generator(config.seed, TRAIN_NOISE_STREAM, epoch)
    total, count = 0.0, 0
    for part in _batches(rng.permutation(train_index), config.batch_size):
        loss = _loss(heads, features(part)[0], generator, config)
        for optimiser in optimisers:
            optimiser.zero_grad(set_to_none=True)
        loss.backward()
        for optimiser in optimisers:
            optimiser.step()
        total += float(loss.detach()) * len(part)
        count += len(part)
    return total / max(count, 1)


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


def _resumable_config(config: SimpleNetConfig) -> dict[str, object]:
    """The options a checkpoint must match to be resumed (not epochs, patience, smoothing or
    display)."""
    ignored = {"progress", "checkpoint_dir", "epochs", "patience", "sigma"}
    return {k: v for k, v in config.to_dict().items() if k not in ignored}


def _save_checkpoint(
    path: Path, heads: nn.ModuleDict, optimisers: list[torch.optim.Optimizer], state: TrainState,
    config: SimpleNetConfig, data: np.ndarray,
) -> None:  # fmt: skip
    checkpoint.save(path, _resumable_config(config), data, state, heads=heads.state_dict(),
                    adaptor_optimiser=optimisers[0].state_dict(),
                    discriminator_optimiser=optimisers[1].state_dict())  # fmt: skip


def _load_checkpoint(
    path: Path, heads: nn.ModuleDict, optimisers: list[torch.optim.Optimizer],
    config: SimpleNetConfig, data: np.ndarray,
) -> TrainState | None:  # fmt: skip
    """Restore a checkpoint written for the same options and data; None if there is none. No
    noise state: the noise is derived from the seed and the epoch."""
    found = checkpoint.load(path, _resumable_config(config), data)
    if found is None:
        return None
    state, saved = found
    heads.load_state_dict(saved["heads"])
    optimisers[0].load_state_dict(saved["adaptor_optimiser"])
    optimisers[1].load_state_dict(saved["discriminator_optimiser"])
    return state


def train(data: np.ndarray, config: SimpleNetConfig) -> TrainResult:
    """Train the adaptor and the discriminator on ImageNet-normalised images ``(N, 3, H, W)``;
    export to ONNX.

    Seeded: the same data, options and seed give the same networks (one process, CPU). With
    ``config.checkpoint_dir`` the state is saved after every epoch and a later call with the same
    options and data resumes from it (also after the run finished: it then only re-exports).
    Torch threads: ``VAD_INSPECTION_THREADS`` when set, else two
    (:func:`~vad_inspection.vad.stfpm_train.threads`).
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads())
    try:
        return _train(np.ascontiguousarray(data, np.float32), config)
    finally:
        torch.set_num_threads(previous_threads)


def _train(data: np.ndarray, config: SimpleNetConfig) -> TrainResult:
    start = time.perf_counter()
    train_index, val_index = held_out(len(data), config.val_fraction, config.seed)
    feature_net = feature_network(config)
    features = TeacherFeatures(feature_net, data, config.batch_size)
    heads = head_networks(config, standardise_network(features, train_index, config.batch_size))
    optimisers = _optimisers(heads, config)
    checkpoint = Path(config.checkpoint_dir) / CHECKPOINT if config.checkpoint_dir else None
    state = checkpoint and _load_checkpoint(checkpoint, heads, optimisers, config, data)
    state = state or TrainState(history=[])
    steps_per_epoch = len(_batches(train_index, config.batch_size))
    epochs = progress_bar(
        range(state.epoch, config.epochs), desc="SimpleNet training", unit="epoch",
        initial=state.epoch, total=config.epochs, enabled=config.progress,
    )  # fmt: skip
    for epoch in epochs:
        if len(val_index) and state.bad_epochs >= config.patience:
            break
        train_loss = _train_epoch(heads, optimisers, features, train_index, config, epoch)
        val_loss = (
            evaluate_loss(heads, features, val_index, config) if len(val_index) else train_loss
        )
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"SimpleNet training diverged at epoch {epoch} (loss {train_loss}); lower the "
                "learning rates"
            )
        state.epoch = epoch + 1
        if val_loss < state.best_val:
            state.best_val, state.best_epoch, state.bad_epochs = val_loss, epoch, 0
            state.best_state = {k: v.detach().clone() for k, v in heads.state_dict().items()}
        elif state.epoch * steps_per_epoch >= WARMUP_STEPS:
            state.bad_epochs += 1
        state.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        epochs.set_postfix(train=f"{train_loss:.4g}", val=f"{val_loss:.4g}", best=state.best_epoch)
        if checkpoint:
            _save_checkpoint(checkpoint, heads, optimisers, state, config, data)
    if state.best_state is not None:
        heads.load_state_dict(state.best_state)
    heads.eval()
    summary = TrainingSummary(
        epochs_run=state.epoch,
        best_epoch=state.best_epoch,
        best_val_loss=float(state.best_val),
        seconds=time.perf_counter() - start,
        train_images=len(train_index),
        val_images=len(val_index),
        stopped_early=state.epoch < config.epochs,
    )
    return TrainResult(
        features=feature_net,
        heads=heads,
        onnx=export_onnx(feature_net, heads, config.size),
        val_index=val_index,
        summary=summary,
        history=list(state.history),
    )
