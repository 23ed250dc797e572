"""Training side (torch) of STFPM: the loss, the student's training loop, the export.

Only :meth:`vad_inspection.vad.stfpm.STFPM.fit` imports this module; inference runs the exported
ONNX graph without torch. The method and the paper's names are in :mod:`vad_inspection.vad.stfpm`:
``F_hat`` the channel-normalised features, ``Omega^l`` the distance map of level ``l``.

Teacher and student are the backbone cut at its three taps
(:func:`~vad_inspection.vad.backbones.torch_feature_model`). The teacher is frozen and always in
evaluation mode (batch normalisation from its running statistics); the student trains in training
mode and is exported in evaluation mode. The teacher's features of the training images do not
change, so they are computed once and kept when they fit in :data:`TEACHER_CACHE_BYTES` (about a
quarter of a training step's cost saved), else recomputed for every batch.
"""

from __future__ import annotations

import io
import os
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
from vad_inspection.vad.backbones import RANDOM, torch_feature_model
from vad_inspection.vad.checkpoint import TrainState
from vad_inspection.vad.stfpm import GRAPH_OUTPUTS, STFPMConfig
from vad_inspection.vad.trained_graph import GRAPH_INPUT
from vad_inspection.vad.vae import TrainingSummary
from vad_inspection.vad.vae_train import held_out

#: Threads for training unless ``VAD_INSPECTION_THREADS`` says otherwise (:func:`threads`): the
#: development machines have two cores, shared.
TORCH_THREADS = 2
CHECKPOINT = "last.pt"
#: Memory the teacher's features of all training images may take to be computed only once.
TEACHER_CACHE_BYTES = 512 * 2**20
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
    scorer = Scorer(teacher, student, size).eval()
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


class TeacherFeatures:
    """The teacher's pyramid for rows of the training data: computed once and kept when small
    enough (:data:`TEACHER_CACHE_BYTES`), otherwise per request."""

    def __init__(self, teacher: nn.Module, data: np.ndarray, batch_size: int) -> None:
        self.teacher = teacher
        self.data = data
        self.cache: list[torch.Tensor] | None = None
        probe = self._run(data[:1])
        per_image = sum(f[0].numel() * f.element_size() for f in probe)
        if per_image * len(data) <= TEACHER_CACHE_BYTES:
            parts = [self._run(data[i : i + batch_size]) for i in range(0, len(data), batch_size)]
            self.cache = [torch.cat(level) for level in zip(*parts, strict=True)]

    def _run(self, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            return tuple(self.teacher(torch.from_numpy(np.ascontiguousarray(rows))))

    def __call__(self, index: np.ndarray) -> tuple[torch.Tensor, ...]:
        if self.cache is None:
            return self._run(self.data[index])
        rows = torch.from_numpy(np.asarray(index, dtype=np.int64))
        return tuple(level[rows] for level in self.cache)


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
    parts = [index[i : i + size] for i in range(0, len(index), size)]
    return [p for p in parts if len(p) > 1 or len(index) == 1]


def evaluate_loss(
    student: nn.Module, teacher: TeacherFeatures, data: np.ndarray, index: np.ndarray, size: int
) -> float:
    """Mean loss over the rows ``index`` of ``data``, student in evaluation mode."""
    student.eval()
    total = 0.0
    with torch.no_grad():
        for part in (index[i : i + size] for i in range(0, len(index), size)):
            x = torch.from_numpy(np.ascontiguousarray(data[part]))
            total += float(stfpm_loss(teacher(part), student(x))) * len(part)
    return total / max(len(index), 1)


def _train_epoch(
    student: nn.Module, optimiser: torch.optim.Optimizer, teacher: TeacherFeatures,
    data: np.ndarray, train_index: np.ndarray, config: STFPMConfig, epoch: int,
) -> float:  # fmt: skip
    """One pass over the training images in a seeded order (seeded per epoch, so a resumed run
    draws the same batches as an uninterrupted one); the mean training loss."""
    student.train()
    rng = np.random.default_rng([config.seed, 2, epoch])
    total, count = 0.0, 0
    for part in _batches(rng.permutation(train_index), config.batch_size):
        x = torch.from_numpy(np.ascontiguousarray(data[part]))
        loss = stfpm_loss(teacher(part), student(x))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(part)
        count += len(part)
    return total / max(count, 1)


def _resumable_config(config: STFPMConfig) -> dict[str, object]:
    """The options a checkpoint must match to be resumed (not epochs, patience or display)."""
    ignored = {"progress", "checkpoint_dir", "epochs", "patience"}
    return {k: v for k, v in config.to_dict().items() if k not in ignored}


def _save_checkpoint(
    path: Path, student: nn.Module, optimiser: torch.optim.Optimizer, state: TrainState,
    config: STFPMConfig, data: np.ndarray,
) -> None:  # fmt: skip
    checkpoint.save(path, _resumable_config(config), data, state, student=student.state_dict(),
                    optimiser=optimiser.state_dict())  # fmt: skip


def _load_checkpoint(
    path: Path, student: nn.Module, optimiser: torch.optim.Optimizer, config: STFPMConfig,
    data: np.ndarray,
) -> TrainState | None:  # fmt: skip
    """Restore a checkpoint written for the same options and data; None if there is none."""
    found = checkpoint.load(path, _resumable_config(config), data)
    if found is None:
        return None
    state, saved = found
    student.load_state_dict(saved["student"])
    optimiser.load_state_dict(saved["optimiser"])
    return state


def threads() -> int:
    """Torch threads for training: ``VAD_INSPECTION_THREADS`` when set (the variable that also
    sizes ONNX Runtime sessions, :func:`~vad_inspection.vad.features.make_session`), else
    :data:`TORCH_THREADS`. On cores busy with other work every parallel region waits for a
    descheduled thread: 3 epochs on 8 images of 32 px took 26 s with 2 threads, 1.0 s with 1."""
    return int(os.environ.get("VAD_INSPECTION_THREADS", "0")) or TORCH_THREADS


def train(data: np.ndarray, config: STFPMConfig) -> TrainResult:
    """Train the student on ImageNet-normalised images ``(N, 3, H, W)``; export to ONNX.

    Seeded: the same data, options and seed give the same student (one process, CPU). With
    ``config.checkpoint_dir`` the state is saved after every epoch and a later call with the same
    options and data resumes from it (also after the run finished: it then only re-exports).
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads())
    try:
        return _train(np.ascontiguousarray(data, np.float32), config)
    finally:
        torch.set_num_threads(previous_threads)


def _train(data: np.ndarray, config: STFPMConfig) -> TrainResult:
    start = time.perf_counter()
    train_index, val_index = held_out(len(data), config.val_fraction, config.seed)
    teacher_net = teacher_network(config)
    student = student_network(config)  # seeds torch with the student's seed before initialising
    optimiser = torch.optim.SGD(
        student.parameters(), lr=config.lr, momentum=config.momentum,
        weight_decay=config.weight_decay,
    )  # fmt: skip
    checkpoint = Path(config.checkpoint_dir) / CHECKPOINT if config.checkpoint_dir else None
    state = checkpoint and _load_checkpoint(checkpoint, student, optimiser, config, data)
    state = state or TrainState(history=[])
    teacher = TeacherFeatures(teacher_net, data, config.batch_size)
    steps_per_epoch = len(_batches(train_index, config.batch_size))
    epochs = progress_bar(
        range(state.epoch, config.epochs), desc="STFPM training", unit="epoch",
        initial=state.epoch, total=config.epochs, enabled=config.progress,
    )  # fmt: skip
    for epoch in epochs:
        if len(val_index) and state.bad_epochs >= config.patience:
            break
        train_loss = _train_epoch(student, optimiser, teacher, data, train_index, config, epoch)
        val_loss = (
            evaluate_loss(student, teacher, data, val_index, config.batch_size)
            if len(val_index)
            else train_loss
        )
        state.epoch = epoch + 1
        if val_loss < state.best_val:
            state.best_val, state.best_epoch, state.bad_epochs = val_loss, epoch, 0
            state.best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
        elif state.epoch * steps_per_epoch >= WARMUP_STEPS:
            state.bad_epochs += 1
        state.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        epochs.set_postfix(train=f"{train_loss:.4g}", val=f"{val_loss:.4g}", best=state.best_epoch)
        if checkpoint:
            _save_checkpoint(checkpoint, student, optimiser, state, config, data)
    if state.best_state is not None:
        student.load_state_dict(state.best_state)
    student.eval()
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
        teacher=teacher_net,
        student=student,
        onnx=export_onnx(teacher_net, student, config.size),
        val_index=val_index,
        summary=summary,
        history=list(state.history),
    )
