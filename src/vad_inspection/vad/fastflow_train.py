"""Training side (torch) of FastFlow: the coupling steps, the loss, the flows' step, the export.

Only :meth:`vad_inspection.vad.fastflow.FastFlow.fit` imports this module; inference runs the
exported ONNX graph without torch. The method and the paper's names are in
:mod:`vad_inspection.vad.fastflow`: ``s`` and ``t`` the log-scale and shift of a coupling, ``z``
a level's features after its flow. The training loop, the checkpoints and the export are every
torch-trained method's (:mod:`vad_inspection.vad.torch_training`).

The backbone is cut at its three taps (:func:`~vad_inspection.vad.backbones.torch_feature_model`),
frozen and in evaluation mode, and followed by the (parameter-free) layer normalisation; its
normalised features of the training images do not change, so they are computed once and kept when
they fit in memory (:class:`~vad_inspection.vad.torch_training.TeacherFeatures`), else recomputed
for every batch. Only the flows train.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vad_inspection.vad.backbones import get_spec, torch_feature_model
from vad_inspection.vad.fastflow import GRAPH_OUTPUTS, FastFlowConfig
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
    return export_graph(Scorer(features, flows, size), (3, *size), GRAPH_OUTPUTS)


# --------------------------------------------------------------------------------------------
# Training: the method's step (the loop: vad_inspection.vad.torch_training)
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
    return batches(index, size)


def _loss(flows: nn.ModuleList, features: TeacherFeatures, part: np.ndarray) -> torch.Tensor:
    """:func:`fastflow_loss` of the training rows ``part``."""
    return fastflow_loss(*run_flows(flows, features(part)))


def evaluate_loss(
    flows: nn.ModuleList, features: TeacherFeatures, index: np.ndarray, size: int
) -> float:
    """Mean NLL over the rows ``index`` of the training data."""
    return mean_loss(flows, index, size, lambda part: _loss(flows, features, part))


def train(data: np.ndarray, config: FastFlowConfig) -> TrainResult:
    """Train the flows on ImageNet-normalised images ``(N, 3, H, W)``; export to ONNX.

    Seeded: the same data, options and seed give the same flows (one process, CPU). With
    ``config.checkpoint_dir`` the state is saved after every epoch and a later call with the same
    options and data resumes from it (also after the run finished: it then only re-exports).
    Torch threads: :func:`~vad_inspection.vad.torch_training.threads`.
    """
    with torch_threads():
        return _train(np.ascontiguousarray(data, np.float32), config)


def _train(data: np.ndarray, config: FastFlowConfig) -> TrainResult:
    run = Run(config, data)
    feature_net = feature_network(config)
    flows = flow_network(config)
    optimiser = torch.optim.Adam(flows.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    features = TeacherFeatures(feature_net, data, config.batch_size)
    summary, history = run.fit(
        Training(
            title="FastFlow",
            network=flows,
            parts={"flows": flows, "optimiser": optimiser},
            batch_loss=lambda part, _: _loss(flows, features, part),
            held_out_loss=lambda index: evaluate_loss(flows, features, index, config.batch_size),
            warmup_steps=WARMUP_STEPS,
            batches=_batches,
            advice="lower lr",
            loss_name="NLL",
        )
    )
    return TrainResult(
        features=feature_net,
        flows=flows,
        onnx=export_onnx(feature_net, flows, config.size),
        val_index=run.val_index,
        summary=summary,
        history=history,
    )
