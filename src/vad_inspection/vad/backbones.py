"""Backbone feature extractors: which layers each method taps, and their one-time ONNX export.

The export is the only place torch is used: a robot runs the exported graph with ONNX Runtime.
Weights come from torchvision's own cache (ImageNet, where there is internet or a filled cache),
from a local state-dict file, or from a seeded random initialisation (what tests use here, where
no pretrained weights can be downloaded).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from vad_inspection.errors import SetupError

RANDOM = "random"
IMAGENET = "imagenet"


class BackboneError(SetupError):
    """A backbone cannot be built or exported; the message says what is missing."""


@dataclass(frozen=True)
class BackboneSpec:
    """A torchvision classifier cut at three depths (strides 4, 8, 16 of the input)."""

    name: str
    taps: tuple[str, str, str]
    channels: tuple[int, int, int]

    @property
    def patchcore_taps(self) -> tuple[str, str]:
        """The two mid-level taps PatchCore uses (the paper's "layer2 + layer3")."""
        return self.taps[1], self.taps[2]


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("mobilenet_v2", ("features.3", "features.6", "features.13"), (24, 32, 96)),
        BackboneSpec("resnet18", ("layer1", "layer2", "layer3"), (64, 128, 256)),
        BackboneSpec("wide_resnet50_2", ("layer1", "layer2", "layer3"), (256, 512, 1024)),
    )
}


def get_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(BACKBONES))
        raise BackboneError(f"unknown backbone {name!r}; available: {known}") from None


def weights_tag(weights: str | Path, seed: int) -> str:
    """A short, stable description of the weights, stored in model metadata and cache names."""
    if str(weights) == RANDOM:
        return f"random-seed{seed}"
    if str(weights) == IMAGENET:
        return IMAGENET
    path = Path(weights)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"file-{path.stem}-{digest}"


def cache_dir() -> Path:
    """Where exported backbones are kept so that fitting again needs no torch."""
    if explicit := os.environ.get("VAD_INSPECTION_CACHE"):
        return Path(explicit) / "backbones"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vad_inspection" / "backbones"


def _torch_model(spec: BackboneSpec, weights: str | Path, seed: int):  # -> torch.nn.Module
    try:
        import torch
        import torchvision
    except ImportError as error:
        raise BackboneError(
            f"exporting backbone {spec.name!r} needs torch and torchvision "
            f"(pip install 'vad_inspection[train]'), or an exported ONNX file: {error}"
        ) from error
    torch.manual_seed(seed)
    if str(weights) == IMAGENET:
        enum = torchvision.models.get_model_weights(spec.name).DEFAULT
        try:
            model = torchvision.models.get_model(spec.name, weights=enum)
        except Exception as error:  # offline with an empty cache: urllib / hub errors
            raise BackboneError(
                f"ImageNet weights for {spec.name!r} are not in torchvision's cache "
                f"({torch.hub.get_dir()}/checkpoints) and cannot be downloaded: {error}. "
                "Pass a local weights file instead."
            ) from error
    else:
        model = torchvision.models.get_model(spec.name, weights=None)
        if str(weights) != RANDOM:
            path = Path(weights)
            if not path.is_file():
                raise BackboneError(f"weights file {path} does not exist")
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            missing, _ = model.load_state_dict(state, strict=False)
            needed = [k for k in missing if not k.startswith(("fc.", "classifier."))]
            if needed:
                raise BackboneError(
                    f"weights file {path} lacks {len(needed)} backbone tensors, e.g. {needed[:3]}"
                )
    return model.eval()


def torch_feature_model(name: str, weights: str | Path = RANDOM, seed: int = 0):
    """The torch module returning the three taps as a tuple (also used by reference tests)."""
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor

    spec = get_spec(name)
    extractor = create_feature_extractor(
        _torch_model(spec, weights, seed), return_nodes=list(spec.taps)
    )

    class Taps(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.extractor = extractor

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.extractor(image)
            return tuple(out[t] for t in spec.taps)

    return Taps().eval()


def export_onnx(name: str, weights: str | Path = RANDOM, seed: int = 0) -> bytes:
    """Export the backbone cut at its three taps; batch and spatial size stay dynamic."""
    import torch

    spec = get_spec(name)
    model = torch_feature_model(name, weights, seed)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated but gives a plain, static graph that every ONNX
        # Runtime build runs; the dynamo exporter needs onnxscript and is still moving.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 224, 224),),
            buffer,
            input_names=["image"],
            output_names=list(spec.taps),
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}},
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


def load_onnx(name: str, weights: str | Path = RANDOM, seed: int = 0) -> bytes:
    """The exported backbone from the cache, exporting (with torch) on first use."""
    get_spec(name)
    path = cache_dir() / f"{name}-{weights_tag(weights, seed)}.onnx"
    if path.is_file():
        return path.read_bytes()
    data = export_onnx(name, weights, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return data
