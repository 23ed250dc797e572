"""Training with torch, one way for every method trained with it (STFPM, FastFlow, CFA, RD4AD,
SimpleNet and the VAE): the threads, the held-out split, the mini-batches, the frozen features
computed once, the epoch loop with early stopping and checkpoints, and the ONNX export.

A method's training module says only what is its own (:class:`Training`): the network that trains
and the optimisers that step it, one batch's loss, how the held-out loss is measured, what a
checkpoint holds under which names, and its warm-up; :class:`Run` does the rest, the same way for
all of them:

* the held-out split (:func:`held_out`, seeded by the config's ``seed``);
* every epoch a seeded order of the training images (``[seed, 2, epoch]``: a resumed run draws the
  same batches as an uninterrupted one), its batches' losses back-propagated and the optimisers
  stepped, in their order; the epoch's mean training loss;
* the held-out loss after every epoch (the training loss when nothing is held out); the network's
  state at the best one kept and restored at the end; early stopping after ``patience`` epochs
  without improvement, counted only once ``warmup_steps`` optimiser steps have been taken;
* the history, a progress bar, a checkpoint after every epoch
  (:mod:`~vad_inspection.vad.checkpoint`) and the :class:`~vad_inspection.vad.vae.TrainingSummary`.

Only the training modules import this one: it imports torch.
"""

from __future__ import annotations

import io
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from vad_inspection.progress import progress_bar
from vad_inspection.vad import checkpoint
from vad_inspection.vad.checkpoint import TrainState
from vad_inspection.vad.trained_graph import GRAPH_INPUT
from vad_inspection.vad.vae import TrainingSummary

#: Threads for training unless ``VAD_INSPECTION_THREADS`` says otherwise (:func:`threads`): the
#: development machines have two cores, shared.
TORCH_THREADS = 2
#: The checkpoint's file name in a config's ``checkpoint_dir``.
CHECKPOINT = "last.pt"
#: Memory the frozen features of all training images may take to be computed only once.
TEACHER_CACHE_BYTES = 512 * 2**20
#: Options a checkpoint need not match to be resumed: how long to train and when to stop, where
#: checkpoints go, the display, and ``sigma`` (methods that smooth their map after the graph: it
#: changes nothing the training does).
NOT_RESUMED = frozenset({"progress", "checkpoint_dir", "epochs", "patience", "sigma"})
#: The ONNX opset of every exported graph.
OPSET = 17


def threads() -> int:
    """Torch threads for training: ``VAD_INSPECTION_THREADS`` when set (the variable that also
    sizes ONNX Runtime sessions, :func:`~vad_inspection.vad.features.make_session`), else
    :data:`TORCH_THREADS`. On cores busy with other work every parallel region waits for a
    descheduled thread: 3 epochs of STFPM on 8 images of 32 px took 26 s with 2 threads, 1.0 s
    with 1."""
    return int(os.environ.get("VAD_INSPECTION_THREADS", "0")) or TORCH_THREADS


@contextmanager
def torch_threads(count: int | None = None) -> Iterator[None]:
    """Torch's thread count set to ``count`` (None: :func:`threads`) inside, restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads() if count is None else count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def held_out(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``count`` training images into (train, validation) index arrays.

    The validation part stops training early (and, for the VAE, calibrates the thresholds); at
    least 2 images when ``fraction > 0`` and there are enough, none otherwise.
    """
    n_val = round(count * fraction) if fraction > 0 else 0
    if fraction > 0 and count >= 6:
        n_val = max(2, n_val)
    n_val = min(n_val, count - 2) if count > 2 else 0
    order = np.random.default_rng([seed, 1]).permutation(count)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def batches(index: np.ndarray, size: int, drop_single: bool = False) -> list[np.ndarray]:
    """``index`` in consecutive mini-batches of ``size``; with ``drop_single`` a last batch of one
    image is dropped (batch normalisation cannot train on it), unless it is all there is."""
    parts = [index[i : i + size] for i in range(0, len(index), size)]
    if not drop_single:
        return parts
    return [p for p in parts if len(p) > 1 or len(index) == 1]


def resumable_options(config: Any) -> dict[str, object]:
    """The options (of ``config.to_dict()``) a checkpoint must match to be resumed: all but
    :data:`NOT_RESUMED`."""
    return {k: v for k, v in config.to_dict().items() if k not in NOT_RESUMED}


def export_graph(
    scorer: nn.Module, input_shape: Sequence[int], outputs: Sequence[str],
    input_name: str = GRAPH_INPUT,
) -> bytes:  # fmt: skip
    """``scorer`` (in evaluation mode) as one ONNX graph: input ``input_name`` of shape
    ``(N, *input_shape)``, the named ``outputs``, a dynamic batch on all of them."""
    scorer.eval()
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated but gives a plain static graph every ONNX Runtime
        # runs (as for the backbones); the dynamo exporter needs onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            scorer,
            (torch.zeros(2, *input_shape),),
            buffer,
            input_names=[input_name],
            output_names=list(outputs),
            dynamic_axes={name: {0: "batch"} for name in (input_name, *outputs)},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def mean_loss(
    network: nn.Module, index: np.ndarray, size: int, loss: Callable[[np.ndarray], torch.Tensor]
) -> float:
    """The mean of ``loss`` (one batch's mean) over the rows ``index``, in batches of ``size``,
    ``network`` in evaluation mode, without gradients."""
    network.eval()
    total = 0.0
    with torch.no_grad():
        for part in batches(index, size):
            total += float(loss(part)) * len(part)
    return total / max(len(index), 1)


class TeacherFeatures:
    """A frozen network's features (a tuple of levels) for rows of the training data: computed
    once and kept when small enough (:data:`TEACHER_CACHE_BYTES`), otherwise per request."""

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


class Epoch(NamedTuple):
    """The epoch a batch belongs to: its number and the generator that drew its order (the VAE
    draws its augmentation from it too)."""

    index: int
    rng: np.random.Generator


@dataclass
class Training:
    """What one method's training is, beyond what :class:`Run` does the same way for all.

    ``title`` names it in the progress bar and in messages. ``network`` trains (training mode
    during an epoch, evaluation mode after); its state at the best held-out loss is kept.
    ``parts``: what a checkpoint holds, by name: modules and optimisers (their state dicts),
    torch generators (their states), tensors (as they are); the optimisers among them step on
    every batch, in their order. ``batch_loss(rows, epoch)``: the loss of a batch of training
    rows, with gradients. ``held_out_loss(index)``: the mean loss over held-out rows, a number or
    named terms with their weighted ``"total"`` (the others go in the history as ``val_<name>``).
    No epoch counts towards early stopping before ``warmup_steps`` optimiser steps. ``batches``
    splits an epoch's order into mini-batches. With ``advice``, a training loss that is not
    finite stops training with an error that names ``loss_name`` and gives the advice. With
    ``sum_over_batch`` the gradient is that of the batch's *sum* (``batch_loss`` times the
    batch's size; the history still records means), for a method whose reference code sums
    and whose learning rate was chosen for that (STFPM).
    """

    title: str
    network: nn.Module
    parts: dict[str, Any]
    batch_loss: Callable[[np.ndarray, Epoch], torch.Tensor]
    held_out_loss: Callable[[np.ndarray], float | Mapping[str, float]]
    warmup_steps: int = 0
    batches: Callable[[np.ndarray, int], list[np.ndarray]] = batches
    advice: str | None = None
    loss_name: str = "loss"
    sum_over_batch: bool = False

    @property
    def optimisers(self) -> list[torch.optim.Optimizer]:
        return [p for p in self.parts.values() if isinstance(p, torch.optim.Optimizer)]


class Run:
    """One training run: the clock, the held-out split, the checkpoint, the epoch loop.

    ``config`` gives ``seed``, ``val_fraction``, ``batch_size``, ``epochs``, ``patience``,
    ``progress`` and ``checkpoint_dir``; ``data`` the training images (a checkpoint is only taken
    back for the same ones: one written for other options or images is refused at once).
    ``split``: the (training, held-out) rows when the method draws them itself (else
    :func:`held_out`); ``options``: what a checkpoint must match (else :func:`resumable_options`).
    """

    def __init__(
        self, config: Any, data: np.ndarray, split: tuple[np.ndarray, np.ndarray] | None = None,
        options: dict[str, object] | None = None,
    ) -> None:  # fmt: skip
        self.start = time.perf_counter()
        self.config = config
        self.data = data
        self.train_index, self.val_index = (
            held_out(len(data), config.val_fraction, config.seed) if split is None else split
        )
        self.options = resumable_options(config) if options is None else options
        self.path = Path(config.checkpoint_dir) / CHECKPOINT if config.checkpoint_dir else None
        # read now: a checkpoint of other options or images is refused before any work is done
        self.found = self.path and checkpoint.load(self.path, self.options, self.data)

    def resume(self, parts: dict[str, Any]) -> tuple[TrainState, dict[str, Any]]:
        """The state of the checkpoint (written for the same options and data), with ``parts``
        (modules, optimisers, generators) restored from it, and all it holds; a fresh state and
        nothing if there is none."""
        if not self.found:
            return TrainState(history=[]), {}
        state, saved = self.found
        for name, part in parts.items():
            if isinstance(part, torch.Generator):
                part.set_state(saved[name])
            elif hasattr(part, "load_state_dict"):
                part.load_state_dict(saved[name])
        return state, saved

    def save(self, state: TrainState, parts: dict[str, Any]) -> None:
        """Write the checkpoint: the state and ``parts`` (see :class:`Training`)."""
        saved = {name: _saved(part) for name, part in parts.items()}
        checkpoint.save(self.path, self.options, self.data, state, **saved)

    def fit(
        self, training: Training, state: TrainState | None = None
    ) -> tuple[TrainingSummary, list[dict[str, float]]]:
        """Train from ``state`` (None: from the checkpoint, if any, else from the start) until
        ``epochs`` or early stopping; leave the network at its best held-out loss, in evaluation
        mode. The summary and the loss history."""
        config, network = self.config, training.network
        if state is None:
            state, _ = self.resume(training.parts)
        steps_per_epoch = len(training.batches(self.train_index, config.batch_size))
        epochs = progress_bar(
            range(state.epoch, config.epochs), desc=f"{training.title} training", unit="epoch",
            initial=state.epoch, total=config.epochs, enabled=config.progress,
        )  # fmt: skip
        for epoch in epochs:
            if len(self.val_index) and state.bad_epochs >= config.patience:
                break
            train_loss = self._epoch(training, epoch)
            if training.advice is not None and not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"{training.title} training diverged at epoch {epoch} "
                    f"({training.loss_name} {train_loss}); {training.advice}"
                )
            val_loss, terms = train_loss, {}
            if len(self.val_index):
                measured = training.held_out_loss(self.val_index)
                if isinstance(measured, Mapping):
                    terms = {f"val_{k}": v for k, v in measured.items() if k != "total"}
                    measured = measured["total"]
                val_loss = measured
            state.epoch = epoch + 1
            if val_loss < state.best_val:
                state.best_val, state.best_epoch, state.bad_epochs = val_loss, epoch, 0
                state.best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            elif state.epoch * steps_per_epoch >= training.warmup_steps:
                state.bad_epochs += 1
            state.history.append(
                {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss} | terms
            )
            best = state.best_epoch
            epochs.set_postfix(train=f"{train_loss:.4g}", val=f"{val_loss:.4g}", best=best)
            if self.path:
                self.save(state, training.parts)
        if state.best_state is not None:
            network.load_state_dict(state.best_state)
        network.eval()
        summary = TrainingSummary(
            epochs_run=state.epoch,
            best_epoch=state.best_epoch,
            best_val_loss=float(state.best_val),
            seconds=time.perf_counter() - self.start,
            train_images=len(self.train_index),
            val_images=len(self.val_index),
            stopped_early=state.epoch < config.epochs,
        )
        return summary, list(state.history)

    def _epoch(self, training: Training, epoch: int) -> float:
        """One pass over the training images in the epoch's seeded order; the mean training
        loss."""
        training.network.train()
        optimisers = training.optimisers
        rng = np.random.default_rng([self.config.seed, 2, epoch])
        total, count = 0.0, 0
        for part in training.batches(rng.permutation(self.train_index), self.config.batch_size):
            loss = training.batch_loss(part, Epoch(epoch, rng))
            for optimiser in optimisers:
                optimiser.zero_grad(set_to_none=True)
            (loss * len(part) if training.sum_over_batch else loss).backward()
            for optimiser in optimisers:
                optimiser.step()
            total += float(loss.detach()) * len(part)
            count += len(part)
        return total / max(count, 1)


def _saved(part: Any) -> Any:
    """What a checkpoint holds for a part: a state dict, a generator's state, or the part."""
    if isinstance(part, torch.Generator):
        return part.get_state()
    if hasattr(part, "state_dict"):
        return part.state_dict()
    return part
