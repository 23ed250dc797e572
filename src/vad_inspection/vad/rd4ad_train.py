"""Training side (torch) of RD4AD: the cosine-distance maps and the loss, the one-class bottleneck
embedding and the student decoder, the student's step and the export.

Only :meth:`vad_inspection.vad.rd4ad.RD4AD.fit` imports this module; inference runs the exported
ONNX graph without torch. The method and the paper's names are in :mod:`vad_inspection.vad.rd4ad`:
``E`` the teacher encoder, ``OCBE`` (``MFF`` then ``OCE``) the one-class bottleneck embedding,
``D`` the student decoder, ``M^k`` the cosine-distance map of level ``k``. The training loop, the
checkpoints and the export are every torch-trained method's
(:mod:`vad_inspection.vad.torch_training`).

The teacher is the backbone cut at its three taps
(:func:`~vad_inspection.vad.backbones.torch_feature_model`), frozen and always in evaluation mode;
``OCBE`` and ``D`` (together :class:`Student`) train in training mode and are exported in
evaluation mode. The student's only input is the teacher's features, which do not change during
training: they are computed once and kept when they fit in memory
(:class:`~vad_inspection.vad.torch_training.TeacherFeatures`), so a training step runs no backbone
at all, else they are recomputed for every batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vad_inspection.vad.backbones import get_spec, torch_feature_model
from vad_inspection.vad.rd4ad import GRAPH_OUTPUTS, RD4ADConfig
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

#: Early stopping counts no epoch as bad before the student has taken this many optimiser steps,
#: a guard against a held-out loss measured on a few images while the batch normalisation's
#: running statistics still remember their initial values (as FastFlow's and CFA's). Unlike
#: STFPM's student, RD4AD's showed no early rise to wait out: measured (16 textured 32 px images,
#: batches of 8: 2 steps per epoch), the held-out loss went 1.38, 1.29, 0.66, 0.32, 0.24 and
#: flattened near 0.10 from epoch 10.
WARMUP_STEPS = 50

Features = Sequence[torch.Tensor]


# --------------------------------------------------------------------------------------------
# The paper's quantities: small pure functions, checked by hand in the tests
# --------------------------------------------------------------------------------------------


def cosine_distance_map(teacher: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
    """``M^k = 1 - cos(f_E^k, f_D^k)`` at every position (cosine along the channels, dim 1),
    ``(N, 1, h, w)``. Both vectors are L2-normalised first (a zero vector stays zero, so its
    distance is 1), which exports to plain ONNX operators."""
    cosine = (F.normalize(teacher, dim=1) * F.normalize(decoded, dim=1)).sum(1, keepdim=True)
    return 1.0 - cosine


def rd4ad_loss(teacher_feats: Features, decoded_feats: Features) -> torch.Tensor:
    """The paper's ``L_KD = sum_k 1/(H_k W_k) sum_{h, w} M^k(h, w)``: per level the mean of the
    distance map over its positions, summed over the levels, averaged over the images.

    (The official code and anomalib flatten each level into one vector per image and take a
    single cosine distance per level and image: :func:`flattened_loss`; see the module docstring
    of :mod:`vad_inspection.vad.rd4ad`.)"""
    if len(teacher_feats) != len(decoded_feats):
        raise ValueError("teacher and decoder must give the same number of levels")
    per_image = sum(
        cosine_distance_map(t, d).mean(dim=(1, 2, 3))
        for t, d in zip(teacher_feats, decoded_feats, strict=True)
    )
    return per_image.mean()


def flattened_loss(teacher_feats: Features, decoded_feats: Features) -> torch.Tensor:
    """The official code's (and anomalib's) loss, ``loss="flattened"``: each level of each image
    flattened into one vector (channels and positions), ``1 - cos`` of the teacher's and the
    decoder's, averaged over the images and summed over the levels. One cosine per level: a
    position weighs by the length of its features, and the decoder may err in direction where
    the features are short."""
    if len(teacher_feats) != len(decoded_feats):
        raise ValueError("teacher and decoder must give the same number of levels")
    total = None
    for t, d in zip(teacher_feats, decoded_feats, strict=True):
        cosine = (F.normalize(t.flatten(1), dim=1) * F.normalize(d.flatten(1), dim=1)).sum(1)
        level = (1.0 - cosine).mean()
        total = level if total is None else total + level
    return total


#: The training losses by ``RD4ADConfig.loss``.
LOSS_FUNCTIONS = {"position": rd4ad_loss, "flattened": flattened_loss}


def anomaly_map(
    teacher_feats: Features, decoded_feats: Features, size: tuple[int, int]
) -> torch.Tensor:
    """``sum_k Upsample(M^k)``: ``(N, H, W)`` at ``size``, before the Gaussian smoothing (done
    after the graph, in NumPy). Bilinear upsampling with the corners aligned (the first and last
    cells of a level land on the first and last pixels), as the authors' code and anomalib: the
    paper does not say, and half-pixel centres (STFPM's) shift a stride-16 level's map by up to
    half a cell against theirs."""
    result = None
    for t, d in zip(teacher_feats, decoded_feats, strict=True):
        level = F.interpolate(
            cosine_distance_map(t, d), size=size, mode="bilinear", align_corners=True
        )
        result = level if result is None else result + level
    return result[:, 0]


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


def conv_bn_relu(inputs: int, outputs: int, stride: int) -> nn.Sequential:
    """3x3 convolution (padding 1: a stride-2 one halves a grid rounding up, as the backbones'
    own strided convolutions do), batch normalisation, ReLU."""
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(),
    )


class DownBlock(nn.Module):
    """ResNet's basic residual block: two 3x3 convolutions (the first with ``stride``) beside a
    shortcut (a strided 1x1 convolution where the shape changes), summed, then ReLU."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            conv_bn_relu(inputs, outputs, stride),
            nn.Conv2d(outputs, outputs, 3, padding=1, bias=False),
            nn.BatchNorm2d(outputs),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.main(x) + self.shortcut(x))


class UpBlock(nn.Module):
    """The decoder's residual block, :class:`DownBlock` reversed: a transposed 2x2 convolution
    (stride 2: the grid doubles) then a 3x3 one, beside a transposed 2x2 shortcut, summed, then
    a ReLU if ``relu``.

    Doubling gives ``2 * ceil(g / 2)`` rows from a grid the encoder halved from ``g``, one too
    many when ``g`` was odd: the result is cropped to the teacher's grid. Without ``relu`` a
    level can point anywhere (see the module docstring of :mod:`vad_inspection.vad.rd4ad`:
    MobileNetV2's taps are negative in places)."""

    def __init__(self, inputs: int, outputs: int, relu: bool = False) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(inputs, outputs, 2, stride=2, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(),
            nn.Conv2d(outputs, outputs, 3, padding=1, bias=False),
            nn.BatchNorm2d(outputs),
        )
        self.shortcut = nn.Sequential(
            nn.ConvTranspose2d(inputs, outputs, 2, stride=2, bias=False), nn.BatchNorm2d(outputs)
        )
        self.relu = relu

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        # always sliced (a no-op for even grids): a Python test of the shape would be frozen
        # into the exported graph at the export size
        out = (self.main(x) + self.shortcut(x))[:, :, : grid[0], : grid[1]]
        return F.relu(out) if self.relu else out


class SameBlock(nn.Module):
    """A decoder level's further residual blocks (``decoder_blocks`` above 1): ResNet's basic
    block at one grid and width, two 3x3 convolutions beside the identity, summed, then a ReLU
    if ``relu``."""

    def __init__(self, channels: int, relu: bool) -> None:
        super().__init__()
        self.main = nn.Sequential(
            conv_bn_relu(channels, channels, 1),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.main(x) + x
        return F.relu(out) if self.relu else out


class OCBE(nn.Module):
    """The one-class bottleneck embedding: ``MFF`` then ``OCE``.

    ``MFF``: level 1 goes through two strided :func:`conv_bn_relu` (to level 2's channels, then
    level 3's), level 2 through one, level 3 as it is; the three, now on level 3's grid with its
    channels, are concatenated and, with ``fusion`` (the paper), fused by a 1x1 convolution
    (batch norm, ReLU) to level 3's channels; without, the concatenation is the fused feature
    (the authors' code and anomalib define that convolution but never call it). ``OCE``:
    ``blocks`` :class:`DownBlock`, the first with stride 2, to twice level 3's channels."""

    def __init__(self, channels: Sequence[int], blocks: int, fusion: bool = True) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.align = nn.ModuleList(
            [
                nn.Sequential(conv_bn_relu(c1, c2, 2), conv_bn_relu(c2, c3, 2)),
                conv_bn_relu(c2, c3, 2),
                nn.Identity(),
            ]
        )
        self.fuse: nn.Module = nn.Identity()
        fused = 3 * c3
        if fusion:
            self.fuse = nn.Sequential(
                nn.Conv2d(3 * c3, c3, 1, bias=False), nn.BatchNorm2d(c3), nn.ReLU()
            )
            fused = c3
        self.oce = nn.Sequential(
            DownBlock(fused, 2 * c3, stride=2),
            *(DownBlock(2 * c3, 2 * c3, stride=1) for _ in range(blocks - 1)),
        )

    def mff(self, feats: Features) -> torch.Tensor:
        """The fused features on the deepest level's grid."""
        aligned = [align(f) for align, f in zip(self.align, feats, strict=True)]
        return self.fuse(torch.cat(aligned, dim=1))

    def forward(self, feats: Features) -> torch.Tensor:
        return self.oce(self.mff(feats))


class Decoder(nn.Module):
    """``D``: from the embedding (twice level 3's channels) up to level 3, 2 and 1, each with
    the teacher's channels: per level one :class:`UpBlock` (in ``blocks``) then ``per_level -
    1`` :class:`SameBlock` (in ``refine``: empty by default, the one-block decoder's state keys
    stay as they were); every block but a level's last ends with a ReLU, a level's last only
    with ``relu``. Returns the levels in the teacher's order (shallowest first)."""

    def __init__(self, channels: Sequence[int], per_level: int = 1, relu: bool = False) -> None:
        super().__init__()
        c1, c2, c3 = channels
        widths = [(2 * c3, c3), (c3, c2), (c2, c1)]
        self.blocks = nn.ModuleList(
            [UpBlock(i, o, relu=relu if per_level == 1 else True) for i, o in widths]
        )
        self.refine = nn.ModuleList(
            [
                nn.Sequential(
                    *(SameBlock(o, relu=relu or k < per_level - 2) for k in range(per_level - 1))
                )
                for _, o in widths
            ]
        )

    def forward(
        self, embedding: torch.Tensor, grids: Sequence[tuple[int, int]]
    ) -> tuple[torch.Tensor, ...]:
        levels, x = [], embedding
        for block, refine, grid in zip(self.blocks, self.refine, reversed(grids), strict=True):
            x = refine(block(x, grid))
            levels.append(x)
        return tuple(reversed(levels))


class Student(nn.Module):
    """What trains: ``OCBE`` and ``D``. From the teacher's three levels to the decoder's three,
    on the same grids (taken from the teacher's features, so any input size fits)."""

    def __init__(
        self, channels: Sequence[int], oce_blocks: int, mff_fusion: bool = True,
        decoder_blocks: int = 1, decoder_relu: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.ocbe = OCBE(channels, oce_blocks, mff_fusion)
        self.decoder = Decoder(channels, decoder_blocks, decoder_relu)

    def forward(self, teacher_feats: Features) -> tuple[torch.Tensor, ...]:
        grids = [tuple(f.shape[-2:]) for f in teacher_feats]
        return self.decoder(self.ocbe(teacher_feats), grids)


def teacher_network(config: RD4ADConfig) -> nn.Module:
    """The frozen teacher ``E``: the backbone with the configured weights, in evaluation mode."""
    teacher = torch_feature_model(config.backbone, config.weights, config.seed)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher.eval()


def student_network(config: RD4ADConfig) -> Student:
    """``OCBE`` and ``D`` built to the backbone's tap channels, initialised with the student's
    seed."""
    torch.manual_seed(config.student_seed)
    return Student(
        get_spec(config.backbone).channels, config.oce_blocks, config.mff_fusion,
        config.decoder_blocks, config.decoder_relu,
    )  # fmt: skip


class Scorer(nn.Module):
    """What inference runs, as one graph: ``image`` ``(N, 3, H, W)`` (ImageNet-normalised) to
    ``map`` ``(N, H, W)`` (:func:`anomaly_map`, before smoothing)."""

    def __init__(self, teacher: nn.Module, student: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.teacher = teacher.eval()
        self.student = student.eval()
        self.size = tuple(size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        feats = self.teacher(image)
        return anomaly_map(feats, self.student(feats), self.size)


def export_onnx(teacher: nn.Module, student: nn.Module, size: tuple[int, int]) -> bytes:
    """Teacher, ``OCBE``, decoder and the map as one ONNX graph with a dynamic batch."""
    return export_graph(Scorer(teacher, student, size), (3, *size), GRAPH_OUTPUTS)


# --------------------------------------------------------------------------------------------
# Training: the method's step (the loop: vad_inspection.vad.torch_training)
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` hands back: the exported graph, the networks (for tests and
    inspection), which rows were held out, and what training did."""

    teacher: nn.Module
    student: Student
    onnx: bytes
    val_index: np.ndarray
    summary: TrainingSummary
    history: list[dict[str, float]]


def _batches(index: np.ndarray, size: int) -> list[np.ndarray]:
    """Mini-batches; a last batch of one image (which batch norm cannot train on) is dropped."""
    return batches(index, size, drop_single=True)


def _loss(
    student: nn.Module, teacher: TeacherFeatures, part: np.ndarray, loss: str = "position"
) -> torch.Tensor:
    """The configured loss (:data:`LOSS_FUNCTIONS`: :func:`rd4ad_loss` by default) of the
    training rows ``part``: the teacher's features and the student's reconstruction of them."""
    feats = teacher(part)
    return LOSS_FUNCTIONS[loss](feats, student(feats))


def evaluate_loss(
    student: nn.Module, teacher: TeacherFeatures, index: np.ndarray, size: int,
    loss: str = "position",
) -> float:  # fmt: skip
    """Mean loss over the rows ``index`` of the training data, student in evaluation mode."""
    return mean_loss(student, index, size, lambda part: _loss(student, teacher, part, loss))


def train(data: np.ndarray, config: RD4ADConfig) -> TrainResult:
    """Train ``OCBE`` and the decoder on ImageNet-normalised images ``(N, 3, H, W)``; export to
    ONNX.

    Seeded: the same data, options and seed give the same student (one process, CPU). With
    ``config.checkpoint_dir`` the state is saved after every epoch and a later call with the same
    options (``sigma`` aside: it only smooths maps after the graph) and data resumes from it (also
    after the run finished: it then only re-exports). Torch threads:
    :func:`~vad_inspection.vad.torch_training.threads`.
    """
    with torch_threads():
        return _train(np.ascontiguousarray(data, np.float32), config)


def _train(data: np.ndarray, config: RD4ADConfig) -> TrainResult:
    run = Run(config, data)
    teacher_net = teacher_network(config)
    student = student_network(config)
    optimiser = torch.optim.Adam(
        student.parameters(), lr=config.lr, betas=(config.beta1, config.beta2)
    )
    teacher = TeacherFeatures(teacher_net, data, config.batch_size)
    summary, history = run.fit(
        Training(
            title="RD4AD",
            network=student,
            parts={"student": student, "optimiser": optimiser},
            batch_loss=lambda part, _: _loss(student, teacher, part, config.loss),
            held_out_loss=lambda index: evaluate_loss(
                student, teacher, index, config.batch_size, config.loss
            ),
            warmup_steps=WARMUP_STEPS,
            batches=_batches,
            advice="lower lr",
        )
    )
    return TrainResult(
        teacher=teacher_net,
        student=student,
        onnx=export_onnx(teacher_net, student, config.size),
        val_index=run.val_index,
        summary=summary,
        history=history,
    )
