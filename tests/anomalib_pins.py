"""The fixed input and the seeded weights of the anomalib fidelity pins.

``benchmarks/vs_anomalib_trained.py --pin`` (in an environment with anomalib 2.7) builds these
networks, copies them into anomalib's STFPM, CFA, FastFlow, Reverse Distillation and
SuperSimpleNet and stores anomalib's image scores and anomaly maps in
``tests/data/anomalib_pins.json``; ``tests/test_anomalib_fidelity.py`` (no
anomalib) builds the same networks again from the same seeds and checks that our torch modules and
our exported ONNX graphs give anomalib's figures. Both import this module, so the recipe exists
once. Only NumPy and torch (with torchvision) are needed.

The recipe, per method, on ``IMAGES`` synthetic scenes of ``SIZE`` px (RD4AD: ``RD4AD_SIZE``;
:mod:`scenes`, seeded; the middle one has a defect) and a ResNet18 backbone with our seeded random
weights (:func:`~vad_inspection.vad.backbones.torch_feature_model`, seed ``SEED``):

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
* RD4AD: teacher = the backbone; ``OCBE`` and decoder in the official code's layout (anomalib's:
  :data:`RD4AD_LAYOUT`), seeded as our training initialises them
  (:func:`rd4ad_train.student_network`), then ``RD4AD_STEPS`` steps of our Adam on our loss over
  the ``BANK_IMAGES`` scenes (one batch; a student that has begun to rebuild normal features,
  so the defect scene's map stands out, which a random student's does not), their batch norms
  then given the statistics of those scenes' features (:func:`settle_batch_norms`). 64 px, as
  anomalib's decoder does not crop: every level's grid must be even (48 px gives a 3 x 3
  deepest level).
* SimpleNet: CFA's patch features; the standardisation measured on the ``BANK_IMAGES`` scenes;
  adaptor and discriminator seeded as our training initialises them
  (:func:`simplenet_train.head_networks`), the discriminator's batch norm given the statistics
  of the bank's adapted features.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from scenes import scenes

from vad_inspection.vad import cfa_train, fastflow_train, rd4ad_train, simplenet_train, stfpm_train
from vad_inspection.vad.cfa import CFAConfig
from vad_inspection.vad.fastflow import FastFlowConfig
from vad_inspection.vad.preprocess import InputSpec, to_network_input
from vad_inspection.vad.rd4ad import RD4ADConfig
from vad_inspection.vad.simplenet import SimpleNetConfig
from vad_inspection.vad.stfpm import STFPMConfig

PIN_FILE = Path(__file__).resolve().parent / "data" / "anomalib_pins.json"
METHODS = ("stfpm", "cfa", "fastflow", "rd4ad", "simplenet")
BACKBONE = "resnet18"
SIZE = 48
RD4AD_SIZE = 64
#: The official code's RD4AD student for ResNet18, which anomalib's is (see
#: :mod:`vad_inspection.vad.rd4ad`).
RD4AD_STEPS = 5
RD4AD_LAYOUT = {"mff_fusion": False, "oce_blocks": 2, "decoder_blocks": 2, "decoder_relu": True}
IMAGES = 3
BANK_IMAGES = 4
SCENE_SEED = 7
SEED = 0
NOISE_SEED = 11
STUDENT_NOISE = 0.3
FLOW_NOISE = 0.05


def size_of(method: str) -> int:
    """The method's input size in px."""
    return RD4AD_SIZE if method == "rd4ad" else SIZE


def inputs(size: int = SIZE) -> list[np.ndarray]:
    """The scored images: ``IMAGES`` RGB uint8 scenes, the second with a defect."""
    return scenes(SCENE_SEED, size, IMAGES, defect_every=2)[0]


def bank_inputs(size: int = SIZE) -> list[np.ndarray]:
    """``BANK_IMAGES`` defect-free scenes: CFA's memory bank, SimpleNet's standardisation, RD4AD's
    few training steps and the statistics of RD4AD's and SimpleNet's batch norms come from
    them."""
    return scenes(SCENE_SEED + 1, size, BANK_IMAGES)[0]


def network_input(images: list[np.ndarray]) -> np.ndarray:
    """Our ImageNet-normalised batch ``(N, 3, size, size)`` (the images' size)."""
    size = images[0].shape[:2]
    return to_network_input(images, InputSpec.for_channels(3, size))


def digest(images: list[np.ndarray]) -> str:
    """SHA-256 of the images' bytes: the pins hold the input they were computed on."""
    return hashlib.sha256(np.stack(images).tobytes()).hexdigest()


def configs() -> dict[str, object]:
    size = (SIZE, SIZE)
    return {
        "stfpm": STFPMConfig(backbone=BACKBONE, size=size, seed=SEED),
        "cfa": CFAConfig(backbone=BACKBONE, size=size, seed=SEED, gamma_c=1),  # the paper's bank
        "fastflow": FastFlowConfig(backbone=BACKBONE, size=size, seed=SEED, hidden_ratio=0.5),
        "rd4ad": RD4ADConfig(
            backbone=BACKBONE, size=(RD4AD_SIZE, RD4AD_SIZE), seed=SEED, **RD4AD_LAYOUT
        ),
        "simplenet": SimpleNetConfig(backbone=BACKBONE, size=size, seed=SEED),
    }


def _noise(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def settle_batch_norms(module: torch.nn.Module, *args: object) -> torch.nn.Module:
    """Give every batch norm of ``module`` the statistics of its inputs on ``module(*args)``
    (one forward pass in training mode, running statistics reset and averaged exactly, no
    gradient), then return ``module`` in evaluation mode."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: after one batch, that batch's statistics
    module.train()
    with torch.no_grad():
        module(*args)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return module.eval()


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
    bank = torch.from_numpy(network_input(bank_inputs(size_of(method))))
    if method == "rd4ad":
        teacher = rd4ad_train.teacher_network(config)
        student = rd4ad_train.student_network(config)
        with torch.no_grad():
            feats = teacher(bank)
        optimiser = torch.optim.Adam(
            student.parameters(), lr=config.lr, betas=(config.beta1, config.beta2)
        )
        student.train()
        for _ in range(RD4AD_STEPS):
            loss = rd4ad_train.rd4ad_loss(feats, student(feats))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return {"config": config, "teacher": teacher, "student": settle_batch_norms(student, feats)}
    if method == "simplenet":
        features = simplenet_train.feature_network(config)
        cache = stfpm_train.TeacherFeatures(features, bank.numpy(), config.batch_size)
        index = np.arange(len(bank))
        standardise = simplenet_train.standardise_network(cache, index, config.batch_size)
        heads = simplenet_train.head_networks(config, standardise)
        with torch.no_grad():
            adapted = heads["adaptor"](standardise(features(bank)[0]))
        settle_batch_norms(heads["discriminator"], adapted)
        return {"config": config, "features": features, "heads": heads.eval()}
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
