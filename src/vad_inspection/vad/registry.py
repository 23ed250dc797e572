"""Model names the CLI and the evaluation harness accept, mapped to their constructors."""

from __future__ import annotations

from collections.abc import Callable

from vad_inspection.vad.base import AnomalyModel
from vad_inspection.vad.baselines import DarkestPixel, LocalContrast

MODELS: dict[str, Callable[[], AnomalyModel]] = {
    "darkest_pixel": DarkestPixel,
    "local_contrast": LocalContrast,
}
BASELINES: tuple[str, ...] = ("darkest_pixel", "local_contrast")


def create_model(name: str) -> AnomalyModel:
    """A fresh, unfitted model by name, or a KeyError listing the names that exist."""
    try:
        return MODELS[name]()
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}") from None
