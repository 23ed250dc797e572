"""Training side (torch) of FastFlow: the coupling steps, the loss, the training loop, the export.

Only :meth:`vad_inspection.vad.fastflow.FastFlow.fit` imports this module; inference runs the
exported ONNX graph without torch. The method and the paper's names are in
:mod:`vad_inspection.vad.fastflow`: ``s`` and ``t`` the log-scale and shift of a coupling, ``z``
a level's features after its flow.

The backbone is cut at its three taps (:func:`~vad_inspection.vad.backbones.torch_feature_model`),
frozen and in evaluation mode, and followed by the (parameter-free) layer normalisation; its
normalised features of the training images do not change, so they are computed once and kept when
they fit in memory (:class:`~vad_inspection.vad.stfpm_train.TeacherFeatures`), else recomputed for
every batch. Only the flows train.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vad_inspection.progress import progress_bar
from vad_inspection.vad import checkpoint
from vad_inspection.vad.backbones import get_spec, torch_feature_model
from vad_inspection.vad.checkpoint import TrainState
from vad_inspection.vad.fastflow import GRAPH_OUTPUTS, FastFlowConfig
from vad_inspection.vad.stfpm_train import TeacherFeatures, threads
from vad_inspection.vad.trained_graph import GRAPH_INPUT
from vad_inspection.vad.vae import TrainingSummary
from vad_inspection.vad.vae_train import held_out

CHECKPOINT = "last.pt"
#: Early stopping counts no epoch as bad before the flows have taken this many optimiser steps:
#: the first steps move the NLL by far more than later epochs do, and a held-out NLL measured on
#: a few images in that phase is noise more than a verdict (a guard, as for STFPM, not measured
#: for the flows).
WARMUP_STEPS = 50
#: LayerNorm's epsilon (torch's default).
LAYER_NORM_EPS = 1e-5

Features = Sequence[torch.Tensor]


# --------------------------------------------------------------------------------------------
# The paper's quantities: small pure functions, checked by hand in the tests
# --------------------------------------------------------------------------------------------


def soft_clamp(s: torch.Tensor, clamp: float) -> torch.Tensor:
    """The log-scale bounded smoothly to ``(-clamp, clamp)``: ``clamp * tanh(s / clamp)``."""
    return clamp * torch.tanh(s / clamp)


def coupling_log_det(log_scale: torch.Tensor) -> torch.Tensor:
    """``log|det J|`` of an affine coupling ``y2 = x2 * exp(s) + t`` (``y1 = x1``): the Jacobian
    is triangular with ``exp(s)`` (and ones) on its diagonal, so the log-determinant is the sum
    of ``s`` over channels and positions, one value per image ``(N,)``."""
    return log_scale.flatten(1).sum(1)


def nll(z: torch.Tensor, log_det: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``z`` ``(N, C, h, w)`` under a standard normal, through a flow
    of log-determinant ``log_det`` ``(N,)``: ``0.5 * sum(z^2) - log|det J|`` (the constant
    ``0.5 * D * log(2 pi)`` dropped), divided by the dimensions ``D = C h w``, averaged over the
    images."""
    dims = z[0].numel()
    return ((0.5 * z.pow(2).flatten(1).sum(1) - log_det) / dims).mean()


def fastflow_loss(zs: Features, log_dets: Features) -> torch.Tensor:
    """The training loss: :func:`nll` summed over the levels."""
    if len(zs) != len(log_dets):
        raise ValueError("z and log-determinants must have the same number of levels")
    return sum(nll(z, d) for z, d in zip(zs, log_dets, strict=True))


def layer_norm(features: torch.Tensor, eps: float = LAYER_NORM_EPS) -> torch.Tensor:
    """Each image's feature map ``(N, C, h, w)`` standardised over channels and positions
    (LayerNorm without learnable scale and shift; written out so the export keeps a dynamic
    batch, where ``F.layer_norm`` needs the shape as constants)."""
    mean = features.mean(dim=(1, 2, 3), keepdim=True)
    var = (features - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True)
    return (features - mean) / torch.sqrt(var + eps)


def anomaly_map(zs: Features, size: tuple[int, int]) -> torch.Tensor:
    """Minus the levels' average of ``exp(-0.5 * mean_c(z^2))`` (the per-position likelihood),
    each upsampled bilinearly to ``size`` (half-pixel centres): ``(N, H, W)``."""
    total = None
    for z in zs:
        likelihood = torch.exp(-0.5 * z.pow(2).mean(1, keepdim=True))
        level = F.interpolate(likelihood, size=size, mode="bilinear", align_corners=False)
        total = level if total is None else total + level
    return -(total[:, 0] / len(zs))


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


class CouplingStep(nn.Module):
    """One flow step: an affine coupling of the second channel half on the first, then a fixed
    channel permutation. ``forward`` gives ``(y, log|det J|)``; :meth:`inverse` undoes it."""

    def __init__(
        self, channels: int, kernel: int, hidden: int, clamp: float, permutation: torch.Tensor
    ) -> None:
        super().__init__()
        self.split = channels // 2
        self.clamp = float(clamp)
        out = channels - self.split
        self.subnet = nn.Sequential(
            nn.Conv2d(self.split, hidden, kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.Conv2d(hidden, 2 * out, kernel, padding=kernel // 2),
        )
        nn.init.zeros_(self.subnet[-1].weight)  # each step starts as the identity
        nn.init.zeros_(self.subnet[-1].bias)
        self.register_buffer("permutation", permutation.clone())
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def scale_shift(self, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.subnet(x1).chunk(2, dim=1)
        return soft_clamp(s, self.clamp), t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        s, t = self.scale_shift(x1)
        y = torch.cat([x1, x2 * torch.exp(s) + t], dim=1)
        return y.index_select(1, self.permutation), coupling_log_det(s)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y = y.index_select(1, self.inverse_permutation)
        y1, y2 = y[:, : self.split], y[:, self.split :]
        s, t = self.scale_shift(y1)
        return torch.cat([y1, (y2 - t) * torch.exp(-s)], dim=1)


class Flow2D(nn.Module):
    """A level's flow: ``steps`` coupling steps, kernels alternating 3x3 and 1x1 (the paper's
    ResNet18 setting), each followed by its own seeded random channel permutation."""

    def __init__(
        self, channels: int, steps: int, hidden_ratio: float, clamp: float,
        generator: torch.Generator,
    ) -> None:  # fmt: skip
        super().__init__()
        hidden = max(1, round(channels * hidden_ratio))
        kernels = [3 if k % 2 == 0 else 1 for k in range(steps)]
        self.steps = nn.ModuleList(
            CouplingStep(
                channels, kernel, hidden, clamp, torch.randperm(channels, generator=generator)
            )
            for kernel in kernels
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = x.new_zeros(x.shape[0])
        for step in self.steps:
            x, step_log_det = step(x)
            log_det = log_det + step_log_det
        return x, log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for step in reversed(self.steps):
            z = step.inverse(z)
        return z


class NormalisedFeatures(nn.Module):
    """The frozen backbone's three taps, each layer-normalised over channels and positions
    (:func:`layer_norm`, no learnable scale or shift: see :mod:`~vad_inspection.vad.fastflow`)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone.eval()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(layer_norm(f) for f in self.backbone(image))


def feature_network(config: FastFlowConfig) -> NormalisedFeatures:
    """The frozen backbone with the configured weights (evaluation mode) and the normalisation."""
    backbone = torch_feature_model(config.backbone, config.weights, config.seed)
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    return NormalisedFeatures(backbone).eval()


def flow_network(config: FastFlowConfig) -> nn.ModuleList:
    """One :class:`Flow2D` per level, initialised and permuted with the flows' seed."""
    torch.manual_seed(config.flow_seed)
    generator = torch.Generator().manual_seed(config.flow_seed)
    return nn.ModuleList(
        Flow2D(channels, config.flow_steps, config.hidden_ratio, config.clamp, generator)
        for channels in get_spec(config.backbone).channels
    )


def run_flows(flows: nn.ModuleList, features: Features) -> tuple[list, list]:
    """``(zs, log_dets)``: every level's features through its flow."""
    out = [flow(f) for flow, f in zip(flows, features, strict=True)]
    return [z for z, _ in out], [d for _, d in out]


class Scorer(nn.Module):
    """What inference runs, as one graph: ``image`` ``(N, 3, H, W)`` (ImageNet-normalised) to
    ``map`` ``(N, H, W)`` (:func:`anomaly_map`) and ``score`` ``(N,)``, the map's maximum."""

    def __init__(self, features: nn.Module, flows: nn.ModuleList, size: tuple[int, int]) -> None:
        super().__init__()
        self.features = features.eval()
        self.flows = flows.eval()
        self.size = tuple(size)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zs, _ = run_flows(self.flows, self.features(image))
        amap = anomaly_map(zs, self.size)
        return amap, amap.flatten(1).amax(1)


def export_onnx(features: nn.Module, flows: nn.ModuleList, size: tuple[int, int]) -> bytes:
    """Backbone, flows and scoring as one ONNX graph with a dynamic batch (:class:`Scorer`)."""
    scorer = Scorer(features, flows, size).eval()
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
    """What :func:`train` hands back: the exported graph, the networks (for tests and
    inspection), which rows were held out, and what training did."""

    features: NormalisedFeatures
    flows: nn.ModuleList
    onnx: bytes
    val_index: np.ndarray
    summary: TrainingSummary
    history: list[dict[str, float]]


def _batches(index: np.ndarray, size: int) -> list[np.ndarray]:
    """Mini-batches (the flows have no batch statistics, so a last batch of one is kept)."""
    return [index[i : i + size] for i in range(0, len(index), size)]


def evaluate_loss(
    flows: nn.ModuleList, features: TeacherFeatures, index: np.ndarray, size: int
) -> float:
    """Mean NLL over the rows ``index`` of the training data."""
    flows.eval()
    total = 0.0
    with torch.no_grad():
        for part in _batches(index, size):
            total += float(fastflow_loss(*run_flows(flows, features(part)))) * len(part)
    return total / max(len(index), 1)


def _train_epoch(
    flows: nn.ModuleList, optimiser: torch.optim.Optimizer, features: TeacherFeatures,
    train_index: np.ndarray, config: FastFlowConfig, epoch: int,
) -> float:  # fmt: skip
    """One pass over the training images in a seeded order (seeded per epoch, so a resumed run
    draws the same batches as an uninterrupted one); the mean training NLL."""
    flows.train()
    rng = np.random.default_rng([config.seed, 2, epoch])
    total, count = 0.0, 0
    for part in _batches(rng.permutation(train_index), config.batch_size):
        loss = fastflow_loss(*run_flows(flows, features(part)))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(part)
        count += len(part)
    return total / max(count, 1)


def _resumable_config(config: FastFlowConfig) -> dict[str, object]:
    """The options a checkpoint must match to be resumed (not epochs, patience or display)."""
    ignored = {"progress", "checkpoint_dir", "epochs", "patience"}
    return {k: v for k, v in config.to_dict().items() if k not in ignored}


def _save_checkpoint(
    path: Path, flows: nn.ModuleList, optimiser: torch.optim.Optimizer, state: TrainState,
    config: FastFlowConfig, data: np.ndarray,
) -> None:  # fmt: skip
    checkpoint.save(path, _resumable_config(config), data, state, flows=flows.state_dict(),
                    optimiser=optimiser.state_dict())  # fmt: skip


def _load_checkpoint(
    path: Path, flows: nn.ModuleList, optimiser: torch.optim.Optimizer, config: FastFlowConfig,
    data: np.ndarray,
) -> TrainState | None:  # fmt: skip
    """Restore a checkpoint written for the same options and data; None if there is none."""
    found = checkpoint.load(path, _resumable_config(config), data)
    if found is None:
        return None
    state, saved = found
    flows.load_state_dict(saved["flows"])
    optimiser.load_state_dict(saved["optimiser"])
    return state


def train(data: np.ndarray, config: FastFlowConfig) -> TrainResult:
    """Train the flows on ImageNet-normalised images ``(N, 3, H, W)``; export to ONNX.

    Seeded: the same data, options and seed give the same flows (one process, CPU). With
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


def _train(data: np.ndarray, config: FastFlowConfig) -> TrainResult:
    start = time.perf_counter()
    train_index, val_index = held_out(len(data), config.val_fraction, config.seed)
    feature_net = feature_network(config)
    flows = flow_network(config)
    optimiser = torch.optim.Adam(flows.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    checkpoint = Path(config.checkpoint_dir) / CHECKPOINT if config.checkpoint_dir else None
    state = checkpoint and _load_checkpoint(checkpoint, flows, optimiser, config, data)
    state = state or TrainState(history=[])
    features = TeacherFeatures(feature_net, data, config.batch_size)
    steps_per_epoch = len(_batches(train_index, config.batch_size))
    epochs = progress_bar(
        range(state.epoch, config.epochs), desc="FastFlow training", unit="epoch",
        initial=state.epoch, total=config.epochs, enabled=config.progress,
    )  # fmt: skip
    for epoch in epochs:
        if len(val_index) and state.bad_epochs >= config.patience:
            break
        train_loss = _train_epoch(flows, optimiser, features, train_index, config, epoch)
        val_loss = (
            evaluate_loss(flows, features, val_index, config.batch_size)
            if len(val_index)
            else train_loss
        )
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"FastFlow training diverged at epoch {epoch} (NLL {train_loss}); lower lr"
            )
        state.epoch = epoch + 1
        if val_loss < state.best_val:
            state.best_val, state.best_epoch, state.bad_epochs = val_loss, epoch, 0
            state.best_state = {k: v.detach().clone() for k, v in flows.state_dict().items()}
        elif state.epoch * steps_per_epoch >= WARMUP_STEPS:
            state.bad_epochs += 1
        state.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        epochs.set_postfix(train=f"{train_loss:.4g}", val=f"{val_loss:.4g}", best=state.best_epoch)
        if checkpoint:
            _save_checkpoint(checkpoint, flows, optimiser, state, config, data)
    if state.best_state is not None:
        flows.load_state_dict(state.best_state)
    flows.eval()
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
        flows=flows,
        onnx=export_onnx(feature_net, flows, config.size),
        val_index=val_index,
        summary=summary,
        history=list(state.history),
    )
