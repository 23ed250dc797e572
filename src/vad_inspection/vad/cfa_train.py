"""Training side (torch) of CFA: the losses, the memory bank, the descriptor's step and the
export.

Only :meth:`vad_inspection.vad.cfa.CFA.fit` imports this module; inference runs the exported ONNX
graph without torch. The method and the paper's names are in :mod:`vad_inspection.vad.cfa`:
``p_t`` a patch feature, ``phi`` the descriptor, ``C`` the memory bank, ``r`` the hypersphere's
radius, ``alpha`` the repulsion margin. The training loop, the checkpoints and the export are every
torch-trained method's (:mod:`vad_inspection.vad.torch_training`).

The backbone is cut at its three taps (:func:`~vad_inspection.vad.backbones.torch_feature_model`),
frozen and in evaluation mode, followed by the (parameter-free) patch aggregation; its patch
features of the training images do not change, so they are computed once and kept when they fit
in memory (:class:`~vad_inspection.vad.torch_training.TeacherFeatures`), else recomputed for
every batch. Only the descriptor trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vad_inspection.vad.backbones import get_spec, torch_feature_model
from vad_inspection.vad.cfa import GRAPH_OUTPUTS, CFAConfig
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

#: Early stopping counts no epoch as bad before the descriptor has taken this many optimiser
#: steps (a guard against a held-out loss on a few images in the first, fast-moving steps; as
#: for FastFlow, not measured for CFA).
WARMUP_STEPS = 50
#: Patch features per chunk when searching the memory bank during training (bounds the
#: ``chunk x M`` distance matrix held at once).
SEARCH_CHUNK = 4096


# --------------------------------------------------------------------------------------------
# The paper's quantities: small pure functions, checked by hand in the tests
# --------------------------------------------------------------------------------------------


def attraction_loss(near: torch.Tensor, radius: float) -> torch.Tensor:
    """``L_att = 1/(T K) sum_t sum_k max(0, d(t, k) - r^2)``: ``near`` ``(T, K)`` the squared
    distances of ``T`` features to their ``K`` nearest centroids."""
    return F.relu(near - radius**2).mean()


def repulsion_loss(negatives: torch.Tensor, radius: float, alpha: float) -> torch.Tensor:
    """``L_rep = 1/(T J) sum_t sum_j max(0, r^2 - d(t, j) - alpha)``: ``negatives`` ``(T, J)``
    the squared distances to the ``J`` hard negatives (the centroids after the ``K`` nearest)."""
    if negatives.numel() == 0:
        return negatives.new_zeros(())
    return F.relu(radius**2 - negatives - alpha).mean()


def squared_distances(features: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """``||f - c||^2`` of features ``(..., D)`` to every centroid of ``memory`` ``(M, D)``:
    ``(..., M)``, expanded as ``|f|^2 - 2 f.c + |c|^2`` (one matrix product) and clamped at 0.

    Both sides are first moved by the centroids' mean (distances do not change): the adapted
    features share a large common offset, and without it the expansion cancels catastrophically
    in float32 (measured at 32 px: mean ``|f|^2`` 0.34 against nearest distances of 1e-5; after
    centring ``|f|^2`` 2e-5)."""
    centre = memory.mean(0)
    features, memory = features - centre, memory - centre
    cross = torch.matmul(features, memory.t())
    return (features.pow(2).sum(-1, keepdim=True) - 2 * cross + memory.pow(2).sum(-1)).clamp_min(0)


def as_patches(features: torch.Tensor) -> torch.Tensor:
    """A feature map ``(N, D, h, w)`` as one row per patch, ``(N * h * w, D)``."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def nearest_distances(patches: torch.Tensor, memory: torch.Tensor, count: int) -> torch.Tensor:
    """Squared distances ``(T, count)`` of each patch to its ``count`` nearest centroids, nearest
    first. The search runs without gradient in chunks; the distances to the chosen centroids are
    then recomputed exactly (with gradient), so memory stays ``T x count``, not ``T x M``."""
    with torch.no_grad():
        index = torch.cat(
            [
                squared_distances(part, memory).topk(count, dim=1, largest=False).indices
                for part in patches.split(SEARCH_CHUNK)
            ]
        )
    return (patches[:, None, :] - memory[index]).pow(2).sum(-1)


def cfa_loss(
    features: torch.Tensor, memory: torch.Tensor, k: int, j: int, radius: float, alpha: float
) -> torch.Tensor:
    """The training loss ``L_att + L_rep`` of descriptor features ``(N, D, h, w)``: each patch's
    ``k`` nearest centroids attract it, the ``j`` after them repel it."""
    distances = nearest_distances(as_patches(features), memory, k + j)
    return attraction_loss(distances[:, :k], radius) + repulsion_loss(
        distances[:, k:], radius, alpha
    )


def patch_scores(features: torch.Tensor, memory: torch.Tensor, k: int) -> torch.Tensor:
    """The paper's patch score ``softmin(d_1..d_K)_1 * d_1`` from the Euclidean distances to the
    ``k`` nearest centroids, ``(N, h, w)`` for descriptor features ``(N, D, h, w)``. Distances,
    not their squares, as the authors' code and anomalib score (training pulls on squared
    distances; at scoring the two differ in the softmin's weights and the map's scale:
    ``benchmarks/vs_anomalib_trained.py`` measured image-score Spearman 0.993 between them)."""
    n, _, h, w = features.shape
    rows = features.flatten(2).transpose(1, 2)  # (N, h*w, D)
    near = squared_distances(rows, memory).topk(k, dim=2, largest=False).values.sqrt()
    score = torch.softmax(-near, dim=2)[..., 0] * near[..., 0]
    return score.reshape(n, h, w)


def anomaly_map(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Patch scores ``(N, h, w)`` upsampled bilinearly to ``size`` (half-pixel centres)."""
    up = F.interpolate(scores[:, None], size=size, mode="bilinear", align_corners=False)
    return up[:, 0]


def kmeans(points: torch.Tensor, clusters: int, iterations: int, seed: int) -> torch.Tensor:
    """``clusters`` centroids of ``points`` ``(M, D)``: a seeded random choice of the points,
    refined by ``iterations`` of Lloyd's k-means (an empty cluster keeps its centroid)."""
    generator = torch.Generator().manual_seed(seed)
    centroids = points[torch.randperm(len(points), generator=generator)[:clusters]].clone()
    for _ in range(iterations):
        assign = squared_distances(points, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=clusters).to(points.dtype)[:, None]
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    return centroids


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


class PatchFeatures(nn.Module):
    """The frozen backbone's three taps, each averaged over 3x3 neighbourhoods, brought to the
    first tap's grid (bilinear) and concatenated: ``(p_t,)``, a one-level tuple (the shape
    :class:`~vad_inspection.vad.torch_training.TeacherFeatures` caches)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone.eval()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        taps = [F.avg_pool2d(f, 3, stride=1, padding=1) for f in self.backbone(image)]
        grid = taps[0].shape[-2:]
        levels = [taps[0]] + [
            F.interpolate(f, size=grid, mode="bilinear", align_corners=False) for f in taps[1:]
        ]
        return (torch.cat(levels, dim=1),)


def feature_network(config: CFAConfig) -> PatchFeatures:
    """The frozen backbone with the configured weights (evaluation mode) and the aggregation."""
    backbone = torch_feature_model(config.backbone, config.weights, config.seed)
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    return PatchFeatures(backbone).eval()


def descriptor_network(config: CFAConfig) -> nn.Conv2d:
    """``phi``: a 1x1 convolution from the concatenated taps to ``D / gamma_d`` channels,
    initialised with the descriptor's seed."""
    channels = sum(get_spec(config.backbone).channels)
    torch.manual_seed(config.descriptor_seed)
    return nn.Conv2d(channels, max(1, channels // config.gamma_d), kernel_size=1)


def memory_bank(
    descriptor: nn.Module, features: TeacherFeatures, index: np.ndarray, config: CFAConfig
) -> torch.Tensor:
    """``C``: the descriptor's features of the images ``index``, averaged over the images at
    each position ``(h * w, D)``, then reduced ``gamma_c``-fold by k-means."""
    total, count = None, 0
    with torch.no_grad():
        for part in _batches(index, config.batch_size):
            out = descriptor(features(part)[0])
            total = out.sum(0) if total is None else total + out.sum(0)
            count += len(part)
    bank = as_patches((total / count)[None])
    if config.gamma_c > 1:
        clusters = max(1, len(bank) // config.gamma_c)
        bank = kmeans(bank, clusters, config.kmeans_iterations, config.descriptor_seed)
    return bank.contiguous()


class Scorer(nn.Module):
    """What inference runs, as one graph: ``image`` ``(N, 3, H, W)`` (ImageNet-normalised) to
    ``map`` ``(N, H, W)``, the patch scores (:func:`patch_scores`) upsampled to the input size.
    The memory bank is a buffer, so an initializer of the exported graph."""

    def __init__(
        self, features: nn.Module, descriptor: nn.Module, memory: torch.Tensor, k: int,
        size: tuple[int, int],
    ) -> None:  # fmt: skip
        super().__init__()
        self.features = features.eval()
        self.descriptor = descriptor.eval()
        self.register_buffer("memory", memory.detach().clone())
        self.k = int(k)
        self.size = tuple(size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        phi = self.descriptor(self.features(image)[0])
        return anomaly_map(patch_scores(phi, self.memory, self.k), self.size)


def export_onnx(
    features: nn.Module, descriptor: nn.Module, memory: torch.Tensor, k: int,
    size: tuple[int, int],
) -> bytes:  # fmt: skip
    """Backbone, descriptor, memory bank and scoring as one ONNX graph with a dynamic batch."""
    return export_graph(Scorer(features, descriptor, memory, k, size), (3, *size), GRAPH_OUTPUTS)


# --------------------------------------------------------------------------------------------
# Training: the method's step (the loop: vad_inspection.vad.torch_training)
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` hands back: the exported graph, the networks and the memory bank (for
    tests and inspection), which rows were held out, and what training did."""

    features: PatchFeatures
    descriptor: nn.Conv2d
    memory: torch.Tensor
    onnx: bytes
    val_index: np.ndarray
    summary: TrainingSummary
    history: list[dict[str, float]]


def _batches(index: np.ndarray, size: int) -> list[np.ndarray]:
    """Mini-batches (the descriptor has no batch statistics, so a last batch of one is kept)."""
    return batches(index, size)


def _loss(descriptor: nn.Module, feats: torch.Tensor, memory: torch.Tensor, c: CFAConfig):
    return cfa_loss(descriptor(feats), memory, c.k, c.j, c.radius, c.alpha)


def evaluate_loss(
    descriptor: nn.Module, memory: torch.Tensor, features: TeacherFeatures, index: np.ndarray,
    config: CFAConfig,
) -> float:  # fmt: skip
    """Mean loss over the rows ``index`` of the training data."""
    return mean_loss(
        descriptor, index, config.batch_size,
        lambda part: _loss(descriptor, features(part)[0], memory, config),
    )  # fmt: skip


def train(data: np.ndarray, config: CFAConfig) -> TrainResult:
    """Build the memory bank and train the descriptor on ImageNet-normalised images
    ``(N, 3, H, W)``; export to ONNX.

    Seeded: the same data, options and seed give the same descriptor and memory bank (one
    process, CPU). With ``config.checkpoint_dir`` the state is saved after every epoch and a later
    call with the same options and data resumes from it (also after the run finished: it then
    only re-exports). Torch threads: :func:`~vad_inspection.vad.torch_training.threads`.
    """
    with torch_threads():
        return _train(np.ascontiguousarray(data, np.float32), config)


def _train(data: np.ndarray, config: CFAConfig) -> TrainResult:
    run = Run(config, data)
    feature_net = feature_network(config)
    descriptor = descriptor_network(config)
    optimiser = torch.optim.AdamW(
        descriptor.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    features = TeacherFeatures(feature_net, data, config.batch_size)
    # the memory bank is built once, from the initial descriptor, and kept in the checkpoint
    state, saved = run.resume({"descriptor": descriptor, "optimiser": optimiser})
    if saved:
        memory = saved["memory"]
    else:
        memory = memory_bank(descriptor, features, run.train_index, config)
    if len(memory) < config.k + config.j:
        raise ValueError(
            f"the memory bank has {len(memory)} centroids, fewer than k + j = "
            f"{config.k + config.j}: use larger images or a smaller gamma_c"
        )
    summary, history = run.fit(
        Training(
            title="CFA",
            network=descriptor,
            parts={"descriptor": descriptor, "memory": memory, "optimiser": optimiser},
            batch_loss=lambda part, _: _loss(descriptor, features(part)[0], memory, config),
            held_out_loss=lambda index: evaluate_loss(descriptor, memory, features, index, config),
            warmup_steps=WARMUP_STEPS,
            batches=_batches,
            advice="lower lr",
        ),
        state,
    )
    return TrainResult(
        features=feature_net,
        descriptor=descriptor,
        memory=memory,
        onnx=export_onnx(feature_net, descriptor, memory, config.k, config.size),
        val_index=run.val_index,
        summary=summary,
        history=history,
    )
