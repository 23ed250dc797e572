"""Training side (torch) of STFPM: the loss, the networks, the student's step, the export.

Only :meth:`vad_inspection.vad.stfpm.STFPM.fit` imports this module; inference runs the exported
ONNX graph without torch. The method and the paper's names are in :mod:`vad_inspection.vad.stfpm`:
``F_hat`` the channel-normalised features, ``Omega^l`` the distance map of level ``l``. The
training loop, the checkpoints and the export are every torch-trained method's
(:mod:`vad_inspection.vad.torch_training`).

Teacher and student are the backbone cut at its three taps
(:func:`~vad_inspection.vad.backbones.torch_feature_model`). The teacher is frozen and always in
evaluation mode (batch normalisation from its running statistics); the student trains in training
mode and is exported in evaluation mode. The teacher's features of the training images do not
change, so they are computed once and kept when they fit in memory
(:class:`~vad_inspection.vad.torch_training.TeacherFeatures`: about a quarter of a training step's
cost saved), else recomputed for every batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vad_inspection.vad.backbones import RANDOM, torch_feature_model
from vad_inspection.vad.stfpm import GRAPH_OUTPUTS, STFPMConfig
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
from vad_inspection.vad.torch_training import threads as threads
from vad_inspection.vad.vae import TrainingSummary

#: Early stopping counts no epoch as bad before the student has taken this many optimiser steps.
#: Until then its batch normalisation's running statistics (momentum 0.1: what evaluation mode
#: uses) still remember their initial values, so the held-out loss rises for a few epochs before
#: it falls. Measured (16 textured 32 px images, batches of 8: 2 steps per epoch): the held-out
#: loss went 2.11, 2.29, 2.60, 2.56, 2.44, 2.33, then down to 0.24 at epoch 20; patience 5
#: counted from the first epoch stopped at epoch 6 with the student of epoch 0.
WARMUP_STEPS = 100

Features = Sequence[torch.Tensor]


# --------------------------------------------------------------------------------------------
# The paper's quantities: small pure functions, checked by hand in the tests
# --------------------------------------------------------------------------------------------


def normalised(features: torch.Tensor) -> torch.Tensor:
    """``F_hat``: each position's feature vector divided by its L2 norm (channels, dim 1)."""
    return F.normalize(features, p=2.0, dim=1)


def distance_map(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """``Omega^l``: ``1/2 ||F_hat_t - F_hat_s||_2^2`` at every position, ``(N, 1, h, w)``."""
    return 0.5 * ((normalised(teacher) - normalised(student)) ** 2).sum(1, keepdim=True)


def stfpm_loss(teacher_feats: Features, student_feats: Features) -> torch.Tensor:
    """The paper's loss: per level ``1/(2 w h) sum_ij ||F_hat_t - F_hat_s||^2`` (the distance
    map's mean), summed over the levels (``alpha_l = 1``), averaged over the images."""
    if len(teacher_feats) != len(student_feats):
        raise ValueError("teacher and student must give the same number of levels")
    per_image = sum(
        distance_map(t, s).mean(dim=(1, 2, 3))
        for t, s in zip(teacher_feats, student_feats, strict=True)
    )
    return per_image.mean()


def anomaly_map(
    teacher_feats: Features, student_feats: Features, size: tuple[int, int]
) -> torch.Tensor:
    """``Omega = prod_l Upsample(Omega^l)``: ``(N, H, W)`` at ``size``, bilinear upsampling
    (half-pixel centres: each cell's value sits where its receptive field is centred)."""
    result = None
    for t, s in zip(teacher_feats, student_feats, strict=True):
        level = F.interpolate(distance_map(t, s), size=size, mode="bilinear", align_corners=False)
        result = level if result is None else result * level
    return result[:, 0]


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


def teacher_network(config: STFPMConfig) -> nn.Module:
    """The frozen teacher: the backbone with the configured weights, in evaluation mode."""
    teacher = torch_feature_model(config.backbone, config.weights, config.seed)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher.eval()


def student_network(config: STFPMConfig) -> nn.Module:
    """The student: the same architecture, randomly initialised with the student's seed."""
    return torch_feature_model(config.backbone, RANDOM, config.student_seed)


class Scorer(nn.Module):
    """What inference runs, as one graph: ``image`` ``(N, 3, H, W)`` (ImageNet-normalised) to
    ``map`` ``(N, H, W)`` (:func:`anomaly_map`) and ``score`` ``(N,)``, the map's maximum."""

    def __init__(self, teacher: nn.Module, student: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.teacher = teacher.eval()
        self.student = student.eval()
        self.size = tuple(size)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        omega = anomaly_map(self.teacher(image), self.student(image), self.size)
        return omega, omega.flatten(1).amax(1)


def export_onnx(teacher: nn.Module, student: nn.Module, size: tuple[int, int]) -> bytes:
    """Teacher, student and scoring as one ONNX graph with a dynamic batch (:class:`Scorer`)."""
    return export_graph(Scorer(teacher, student, size), (3, *size), GRAPH_OUTPUTS)


# --------------------------------------------------------------------------------------------
# Training: the method's step (the loop: vad_inspection.vad.torch_training)
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` hands back: the exported graph, the networks (for tests and
    inspection), which rows were held out, and what training did."""

    teacher: nn.Module
    student: nn.Module
    onnx: bytes
    val_index: np.ndarray
    summary: TrainingSummary
    history: list[dict[str, float]]


def _batches(index: np.ndarray, size: int) -> list[np.ndarray]:
    """Mini-batches; a last batch of one image (which batch norm cannot train on) is dropped."""
    return batches(index, size, drop_single=True)


def _loss(
    student: nn.Module, teacher: TeacherFeatures, data: np.ndarray, part: np.ndarray
) -> torch.Tensor:
    """:func:`stfpm_loss` of the rows ``part`` of ``data``."""
    x = torch.from_numpy(np.ascontiguousarray(data[part]))
    return stfpm_loss(teacher(part), student(x))


def evaluate_loss(
    student: nn.Module, teacher: TeacherFeatures, data: np.ndarray, index: np.ndarray, size: int
) -> float:
    """Mean loss over the rows ``index`` of ``data``, student in evaluation mode."""
    return mean_loss(student, index, size, lambda part: _loss(student, teacher, data, part))


def train(data: np.ndarray, config: STFPMConfig) -> TrainResult:
    """Train the student on ImageNet-normalised images ``(N, 3, H, W)``; export to ONNX.

    Seeded: the same data, options and seed give the same student (one process, CPU). With
    ``config.checkpoint_dir`` the state is saved after every epoch and a later call with the same
    options and data resumes from it (also after the run finished: it then only re-exports).
    Torch threads: :func:`~vad_inspection.vad.torch_training.threads`.
    """
    with torch_threads():
        return _train(np.ascontiguousarray(data, np.float32), config)


def _train(data: np.ndarray, config: STFPMConfig) -> TrainResult:
    run = Run(config, data)
    teacher_net = teacher_network(config)
    student = student_network(config)  # seeds torch with the student's seed before initialising
    optimiser = torch.optim.SGD(
        student.parameters(), lr=config.lr, momentum=config.momentum,
        weight_decay=config.weight_decay,
    )  # fmt: skip
    teacher = TeacherFeatures(teacher_net, data, config.batch_size)
    summary, history = run.fit(
        Training(
            title="STFPM",
            network=student,
            parts={"student": student, "optimiser": optimiser},
            batch_loss=lambda part, _: _loss(student, teacher, data, part),
            held_out_loss=lambda index: evaluate_loss(
                student, teacher, data, index, config.batch_size
            ),
            warmup_steps=WARMUP_STEPS,
            batches=_batches,
            sum_over_batch=True,  # as the authors' code and anomalib: lr 0.4 is for the sum
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
