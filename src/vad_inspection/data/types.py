"""The domain objects every dataset loader yields.

A loader reads one published layout and returns a :class:`Dataset`: an ordered, immutable list of
:class:`Sample` objects. Pixels are read lazily (``Sample.image()``) because the planetary and
industrial sets are too large to hold in memory on a robot-class machine, and because most
consumers (split builders, manifests) only need ids and labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vad_inspection.errors import SetupError

NORMAL = 0
ANOMALOUS = 1


class DatasetError(SetupError, ValueError):
    """A dataset is missing or does not follow its published layout.

    The message always names the offending path and what was expected there.
    """


ImageFn = Callable[[], np.ndarray]
MaskFn = Callable[[], "np.ndarray | None"]


@dataclass(frozen=True)
class Sample:
    """One item of a dataset: an image (or a tile of one) with its labels.

    ``image()`` returns ``uint8`` (or ``float32`` for multispectral sets) pixels shaped
    ``(H, W, C)``; C is 1 for gray, 3 for RGB (never BGR), more for multispectral.
    ``mask()`` returns a ``bool`` array ``(H, W)`` (True = anomalous pixel), or ``None`` where the
    dataset has no pixel ground truth. A normal sample with pixel ground truth gets an all-False
    mask.
    """

    id: str
    label: int
    category: str
    path: Path
    load_image: ImageFn = field(repr=False, compare=False)
    load_mask: MaskFn | None = field(default=None, repr=False, compare=False)
    split: str | None = None

    def image(self) -> np.ndarray:
        return self.load_image()

    def mask(self) -> np.ndarray | None:
        return None if self.load_mask is None else self.load_mask()

    @property
    def is_anomalous(self) -> bool:
        return self.label == ANOMALOUS


@dataclass(frozen=True)
class Dataset:
    """A named, ordered collection of samples read from one root folder."""

    name: str
    root: Path
    samples: tuple[Sample, ...]
    channels: int
    has_masks: bool

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    @property
    def normal(self) -> tuple[Sample, ...]:
        return tuple(s for s in self.samples if s.label == NORMAL)

    @property
    def anomalous(self) -> tuple[Sample, ...]:
        return tuple(s for s in self.samples if s.label == ANOMALOUS)

    def counts(self) -> dict[str, int]:
        """Samples per category, for logs and manifests."""
        out: dict[str, int] = {}
        for s in self.samples:
            out[s.category] = out.get(s.category, 0) + 1
        return out

    def subset(self, samples: Sequence[Sample]) -> Dataset:
        return Dataset(self.name, self.root, tuple(samples), self.channels, self.has_masks)
