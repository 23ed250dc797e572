"""The fixed input and the seeded weights of the anomalib fidelity pins.

``benchmarks/vs_anomalib_trained.py --pin`` (in an environment with anomalib 2.7) builds these
networks, copies them into anomalib's STFPM, CFA and FastFlow and stores anomalib's image scores
and anomaly maps in ``tests/data/anomalib_pins.json``; ``tests/test_anomalib_fidelity.py`` (no
anomalib) builds the same networks again from the same seeds and checks that our torch modules and
our exported ONNX graphs give anomalib's figures. Both import this module, so the recipe exists
once. Only NumPy and torch (with torchvision) are needed.

The recipe, per method, on ``IMAGES`` synthetic scenes of ``SIZE`` px (:mod:`scenes`, seeded;
the middle one has a defect) and a ResNet18 backbone with our seeded random weights
(:func:`~vad_inspection.vad.backbones.torch_feature_model`, seed ``SEED``):

* STFPM: teacher = the backbone; student = the backbone with every convolution weight moved by
  seeded Gaussian noise of ``STUDENT_NOISE`` times that tensor's mean absolute value (a student
  close to its teacher, as training leaves it, so the maps have structure).
* CFA: our descriptor's seeded initialisation (:func:`cfa_train.descriptor_network`); the memory
  bank from ``BANK_IMAGES`` other scenes (ours: :func:`cfa_train.memory_bank`; anomalib: its own
  ``initialize_centroid``).
* FastFlow: our flows' seeded initialisation (:func:`fastflow_train.flow_network`, subnets half
  as wide as ours by default, which is anomalib's width) with the last convolution of every
  subnet, zero at initialisation, set to seeded Gaussian noise of ``FLOW_NOISE`` (zero would make
  every flow the identity).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from scenes import scenes

from vad_inspection.vad import cfa_train, fastflow_train, stfpm_train
from vad_inspection.vad.cfa import CFAConfig
from vad_inspection.vad.fastflow import FastFlowConfig
from vad_inspection.vad.preprocess import InputSpec, to_network_input
from vad_inspection.vad.stfpm import STFPMConfig

PIN_FILE = Path(__file__).resolve().parent / "data" / "anomalib_pins.json"
METHODS = ("stfpm", "cfa", "fastflow")
BACKBONE = "resnet18"
SIZE = 48
IMAGES = 3
BANK_IMAGES = 4
SCENE_SEED = 7
SEED = 0
NOISE_SEED = 11
STUDENT_NOISE = 0.3
FLOW_NOISE = 0.05


def inputs() -> list[np.ndarray]:
    """The scored images: ``IMAGES`` RGB uint8 scenes, the second with a defect."""
    return scenes(SCENE_SEED, SIZE, IMAGES, defect_every=2)[0]


def bank_inputs() -> list[np.ndarray]:
    """CFA's memory-bank images: ``BANK_IMAGES`` defect-free scenes."""
    return scenes(SCENE_SEED + 1, SIZE, BANK_IMAGES)[0]


def network_input(images: list[np.ndarray]) -> np.ndarray:
    """Our ImageNet-normalised batch ``(N, 3, SIZE, SIZE)``."""
    return to_network_input(images, InputSpec.for_channels(3, (SIZE, SIZE)))


def digest(images: list[np.ndarray]) -> str:
    """SHA-256 of the images' bytes: the pins hold the input they were computed on."""
    return hashlib.sha256(np.stack(images).tobytes()).hexdigest()


def configs() -> dict[str, object]:
    size = (SIZE, SIZE)
    return {
        "stfpm": STFPMConfig(backbone=BACKBONE, size=size, seed=SEED),
        "cfa": CFAConfig(backbone=BACKBONE, size=size, seed=SEED, gamma_c=1),  # the paper's bank
        "fastflow": FastFlowConfig(backbone=BACKBONE, size=size, seed=SEED, hidden_ratio=0.5),
    }


def _noise(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def networks(method: str) -> dict[str, object]:
    """The method's networks, regenerated from the seeds (see the module docstring)."""
    config = configs()[method]
    generator = torch.Generator().manual_seed(NOISE_SEED)
    if method == "stfpm":
        teacher = stfpm_train.teacher_network(config)
        student = stfpm_train.teacher_network(config)
        with torch.no_grad():
            for parameter in student.parameters():  # in state-dict order
                if parameter.ndim == 4:  # convolution weights
                    scale = STUDENT_NOISE * parameter.abs().mean()
                    parameter.add_(scale * _noise(parameter.shape, generator))
        return {"config": config, "teacher": teacher, "student": student.eval()}
    if method == "cfa":
        features = cfa_train.feature_network(config)
        descriptor = cfa_train.descriptor_network(config).eval()
        data = network_input(bank_inputs())
        cache = stfpm_train.TeacherFeatures(features, data, config.batch_size)
        memory = cfa_train.memory_bank(descriptor, cache, np.arange(len(data)), config)
        return {"config": config, "features": features, "descriptor": descriptor, "memory": memory}
    if method == "fastflow":
        features = fastflow_train.feature_network(config)
        flows = fastflow_train.flow_network(config)
        with torch.no_grad():
            for flow in flows:
                for step in flow.steps:
                    last = step.subnet[-1]
                    last.weight.copy_(FLOW_NOISE * _noise(last.weight.shape, generator))
                    last.bias.copy_(FLOW_NOISE * _noise(last.bias.shape, generator))
        return {"config": config, "features": features, "flows": flows.eval()}
    raise ValueError(f"unknown method {method!r}")


def fingerprint(nets: dict[str, object]) -> list[float]:
    """Sum and sum of absolute values (float64) of every tensor of the networks: equal when the
    seeded generation gives the same weights, whatever process or environment runs it."""
    total, absolute = 0.0, 0.0
    for key in sorted(nets):
        value = nets[key]
        if isinstance(value, torch.nn.Module):
            tensors = [t for t in value.state_dict().values() if t.is_floating_point()]
        elif isinstance(value, torch.Tensor):
            tensors = [value]
        else:
            continue
        for tensor in tensors:
            t = tensor.detach().double()
            total += float(t.sum())
            absolute += float(t.abs().sum())
    return [total, absolute]


def encode(array: np.ndarray) -> dict[str, object]:
    """A float32 array as JSON: shape and base64 of its little-endian bytes (exact, compact)."""
    data = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(data.shape), "f32": base64.b64encode(data.tobytes()).decode("ascii")}


def decode(item: dict[str, object]) -> np.ndarray:
    raw = base64.b64decode(str(item["f32"]))
    return np.frombuffer(raw, dtype="<f4").reshape(item["shape"]).astype(np.float32)


def load() -> dict[str, object]:
    return json.loads(PIN_FILE.read_text(encoding="utf-8"))
