"""Resumable training, one way for every method trained with torch (VAE, STFPM, FastFlow, CFA,
RD4AD, SimpleNet; written and read by :class:`~vad_inspection.vad.torch_training.Run`).

A checkpoint holds the training state (:class:`TrainState`: the epoch reached, the best
held-out loss and its weights, the epochs without improvement, the loss history) and whatever
parts the method names (its networks' and optimiser's state dicts, a memory bank, a random
generator's state), written atomically (a temporary file, then a rename). It is only taken back
for the same options (the method's resumable subset of its config) and the same training images
(a cheap fingerprint of the data): resuming someone else's run silently would be worse than
starting again, so both refusals name the checkpoint.

Torch is imported here: only the training modules import this one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class TrainState:
    """Everything the loop needs to resume exactly where training stopped."""

    epoch: int = 0
    best_epoch: int = -1
    best_val: float = math.inf
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] | None = None


def fingerprint(data: np.ndarray) -> list[float]:
    """Count, sum and absolute sum of the training data: other images change it."""
    return [float(len(data)), float(data.sum(dtype=np.float64)), float(np.abs(data).sum())]


def save(path: Path, options: dict[str, object], data: np.ndarray, state: TrainState,
         **parts: Any) -> None:  # fmt: skip
    """Write the checkpoint: ``options`` (what must match to resume), the data's fingerprint,
    the state and ``parts`` (state dicts, tensors) under their names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"config": options, "fingerprint": fingerprint(data), **parts,
                "state": asdict(state)}, tmp)  # fmt: skip
    tmp.replace(path)


def load(path: Path, options: dict[str, object], data: np.ndarray
         ) -> tuple[TrainState, dict[str, Any]] | None:  # fmt: skip
    """The state and the saved parts of a checkpoint written for the same options and data;
    None if there is none."""
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved["config"] != options:
        raise ValueError(f"checkpoint {path} was written with other options; use another directory")
    if not np.allclose(saved["fingerprint"], fingerprint(data), rtol=1e-6):
        raise ValueError(f"checkpoint {path} was written for other training images")
    return TrainState(**saved["state"]), saved
