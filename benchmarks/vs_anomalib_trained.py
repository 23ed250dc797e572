#!/usr/bin/env python
"""STFPM, CFA, FastFlow, RD4AD and SimpleNet, ours against anomalib 2.7, in one process:
fidelity, AUROC, fit time.

Per method (STFPM on ResNet18 and MobileNetV2; the others on ResNet18: anomalib's CFA, FastFlow
and RD4AD take no MobileNetV2, and WideResNet50, which they take, is too slow for a run of
minutes on two cores), on synthetic scenes (``tests/scenes.py``: a striped, noisy texture; half
the test images carry a blob of flat material). anomalib 2.7 has no SimpleNet: ours is compared
with its SuperSimpleNet (Rolih et al., 2024), which extends SimpleNet and keeps its adaptor and
discriminator (see below).

(a) fidelity with identical weights: our model is trained (:meth:`fit`); its backbone and trained
    parts are copied into a fresh anomalib model (STFPM: the student; CFA: the descriptor and the
    memory bank; FastFlow: the flows, mapped onto FrEIA's ``AllInOneBlock``; RD4AD: the
    bottleneck and the decoder; SimpleNet: the adaptor, with our standardisation folded in, and
    the discriminator, as SuperSimpleNet's segmentation head; see below); both
    score the same images (the synthetic test scenes, and magnetic-tile test images resized to the
    same size and replicated to RGB, when ``--data`` holds them); Spearman of image scores and
    Pearson of anomaly maps (all pixels), targets 0.99 and 0.99, and the largest differences;
(b) training from the same initialisation: anomalib's model gets our backbone and our seeded
    initialisation of the trained parts, then is trained by its own loss and its own optimiser
    (its Lightning module's ``loss`` and ``configure_optimizers()``, called directly: no Trainer)
    on the same images, in the same batches in the same order, for the same epochs; ours by our
    ``fit``; image (and pixel) AUROC of each on the test scenes, target |difference| <= 0.02,
    and on as many subtle scenes (each defect blended into its texture at ``--alpha``, 10 %),
    as the plain scenes' AUROC saturates at 1 on both sides;
(c) fit seconds of both, measured in the same run, and their ratio ours / anomalib. Ours is the
    whole ``fit`` (preprocessing, the teacher cache, training, the ONNX export); anomalib's is its
    training loop (CFA: with its memory-bank initialisation), its PreProcessor transform applied
    per batch as its data loader would (reading and decoding files not counted). One torch
    thread on both sides (``VAD_INSPECTION_THREADS=1`` for ours); an untimed warm-up first, then
    ``--repeats`` fits per side, alternating, the fastest of each counted (other jobs share the
    cores).

How the two sides are kept identical, and where they cannot be:

* Backbone: our seeded random torchvision weights (no pretrained weights can be downloaded here)
  are copied into anomalib's backbone -- timm's for STFPM and FastFlow (ResNet18 by name order,
  MobileNetV2 by position, as ``vs_anomalib.py`` does), torchvision's for CFA; the taps are
  checked to be equal before anything is measured. anomalib's constructors would download
  ImageNet weights: STFPM's ``TimmFeatureExtractor`` is built with ``pre_trained=False`` and
  CFA's ``get_feature_extractor`` builds the torchvision model with ``weights=None`` (monkey-
  patched below); the weights are replaced by ours anyway.
* Input: anomalib's own PreProcessor transform of the float images is checked to give our
  network input.
* STFPM: same architecture, same map (product of the upsampled per-level distances) and score,
  and the same step: SGD, lr 0.4, momentum 0.9, on the loss summed over the images of a batch
  (as the authors' code). Training differs only by the weight decay, 1e-3 in anomalib where ours
  is the paper's 1e-4, and by the epoch kept (below).
* CFA: anomalib's descriptor is a CoordConv (two coordinate channels appended before the 1x1
  convolution); ours leaves them out. Our descriptor is copied into the first channels and the
  coordinate weights are set to zero, which makes the two equal for (a); in (b) anomalib trains
  its coordinate weights from zero. The patch score is the same on both sides:
  ``softmin(d)_1 * d_1`` of the Euclidean (square-rooted) distances, as the authors' code.
  anomalib's distances are ``|f|^2 + |c|^2 - 2 f.c`` in float32 without our centring, and its
  optimiser is AdamW with ``amsgrad=True`` (ours without) and a loss 1000 times ours.
* FastFlow: the flows can be made identical. FrEIA's ``AllInOneBlock`` (anomalib's copy, with
  ``permute_soft=False``) and our ``CouplingStep`` both split the channels in halves (even
  channel counts here), run ``conv -> ReLU -> conv`` (kernels 3, 1, 3, ...) on the first half,
  scale and shift the second, concatenate and permute. The differences are in parameterisation:
  anomalib multiplies the subnet output by 0.1 and clamps with ``clamp * tanh(0.1 a)`` where ours
  clamps with ``clamp * tanh(a / clamp)``; it adds a learned global affine (scale through a
  softplus, initialised to 1, and offset 0) before its permutation, and a LayerNorm with a
  learned per-element affine (initialised to 1 and 0) before the flow; its subnet is
  ``hidden_ratio`` times the *half* channel count wide where ours is ``hidden_ratio`` times the
  full count. So ours runs with ``hidden_ratio=0.5`` against anomalib's 1.0, our last subnet
  convolution is copied with its log-scale rows times ``10 / clamp`` and its shift rows times 10,
  the permutation goes into ``w_perm`` (and its transpose into ``w_perm_inv``), and the global
  affine and the LayerNorm affine stay at identity: the two flows are then the same function. In
  (b) anomalib trains those extra affines too, its loss is not divided by the dimensions (Adam is
  almost invariant to that, but the weight decay is not) and its subnet's last layer starts from
  our zeros (scaled zeros). Our ``FastFlowConfig`` default ``hidden_ratio=1.0`` is twice
  anomalib's width.
* RD4AD: ours runs in the official code's layout, which anomalib's is, for ResNet18 (our options
  ``mff_fusion=False, oce_blocks=2, decoder_blocks=2, decoder_relu=True``), with the official
  code's loss (``loss="flattened"``). Our default layout has the paper's 1x1 fusion convolution
  after the concatenation, which the official code and anomalib define but never call, one block
  per decoder level and no ReLU at the end of a level, for MobileNetV2's signed taps. The networks
  are then the same function (module for module; the state dicts differ in names and order only);
  the map is the same (per level ``1 -`` the cosine along the channels, upsampled bilinearly with
  the corners aligned, summed, smoothed by a Gaussian of sigma 4, 33 px) and the score its
  maximum; both train on one cosine per flattened level and image. Our default loss is the paper's
  (``1 - cos`` per position, averaged): ours is fitted again with it, and with our default layout,
  on the same data, for the AUROC (the notes). anomalib's Adam has ``beta2=0.99``, ours the
  paper's 0.999. anomalib runs the encoder at every step; ours caches its features. anomalib's
  decoder does not crop: every level's grid must be even (a multiple of 32 px), where ours crops
  odd grids.
* SimpleNet: anomalib 2.7's nearest model is SuperSimpleNet, whose segmentation path is
  SimpleNet's: a 1x1 convolution adaptor and a discriminator (1x1 convolution to 1024, batch norm,
  LeakyReLU 0.2, 1x1 convolution to one value without bias) on 3x3-averaged backbone features,
  trained by a truncated L1 loss against Gaussian-noised features. Copied: our standardisation
  (``(o - m) / s``, fixed before training) folded into its adaptor (``W / s``, ``b - W m / s``),
  our discriminator into its segmentation head with the last layer negated (it outputs the anomaly
  value, ours ``D`` with the map ``-D``). Where it is not SimpleNet: its features are the taps
  upsampled to *twice* the first tap's grid, concatenated, then 3x3-averaged (ours, as the paper:
  each tap 3x3-averaged on its own grid, then brought to the first tap's grid); its map passes
  through a sigmoid; its image score is a classification head (a 5x5 convolution over the features
  and the map, pooled, a linear layer) SimpleNet does not have; its smoothing kernel is 25 px (``2
  ceil(3 sigma) + 1``), ours 33. So (a) has two rows: anomalib's model with its feature extractor
  replaced by ours (everything after it anomalib's code; its sigmoid undone, and the maximum of
  its map as the image score: the target rows), and the model end to end with its own features (a
  diagnostic without target). In (b) it trains as SuperSimpleNet does: the batch doubled, noise
  only inside Perlin-noise masks on about half of its images, its truncated L1 plus focal losses,
  the classification head trained alongside, AdamW for both parts (ours: Adam for the
  discriminator) and its learning-rate steps at 80 % and 90 % of the epochs; its image AUROC in
  the table is that of its map's maximum (SimpleNet's score; the notes give its classification
  head's). Its noise deviation is set to ours, ``noise_std`` (0.1): with our standardisation
  folded into its adaptor its adapted features start in our units, and its own 0.015 is an
  absolute figure for ImageNet WideResNet50 features. It runs the backbone at every step, on a
  grid four times ours; ours caches the patch features.
* Training: ours runs with ``val_fraction=0`` (all images trained on, all epochs run) and keeps
  the epoch of the lowest training loss; anomalib keeps the last epoch.

The weights are seeded random (the backbone's is what every method here runs on where no
pretrained weights can be downloaded): the AUROCs say whether the two sides learn alike on a task
random features can solve, not how good either method is on real defects.

``--pin`` writes ``tests/data/anomalib_pins.json`` instead (or ``--out``): anomalib's scores and
maps for the fixed tiny input and seeded weights of ``tests/anomalib_pins.py``, which
``tests/test_anomalib_fidelity.py`` checks our torch modules and ONNX graphs against (without
anomalib); for CFA also anomalib's map with the squared-distance patch score our CFA used
before, which the test checks ours no longer matches; for SimpleNet SuperSimpleNet's path on our
features smoothed at our kernel width, and at its own. With ``--methods`` only those methods'
pins are written anew, the others' kept.

A run with ``--methods`` replaces those methods' rows in the results file and keeps the others'
(each row names the run that measured it); ``--fresh`` starts the file anew; ``--report`` only
rewrites the Markdown report from the JSON beside it (after a change of this docstring's
differences, say).

Install (one environment holding both sides)::

    python -m venv /tmp/venv_anomalib
    /tmp/venv_anomalib/bin/pip install 'anomalib==2.7.*' FrEIA
    /tmp/venv_anomalib/bin/pip install -e '.[core,train]'   # from the repository root

Run from the repository root::

    /tmp/venv_anomalib/bin/python benchmarks/vs_anomalib_trained.py --quick   # 64 px, minutes
    /tmp/venv_anomalib/bin/python benchmarks/vs_anomalib_trained.py           # 128 px
    /tmp/venv_anomalib/bin/python benchmarks/vs_anomalib_trained.py --pin     # the test's pins
    # what the results file holds for RD4AD and SimpleNet (SimpleNet at 64 px: anomalib's
    # SuperSimpleNet runs a 5x5 convolution on a 64 x 64 grid per image at 128 px)
    /tmp/venv_anomalib/bin/python benchmarks/vs_anomalib_trained.py --methods rd4ad
    /tmp/venv_anomalib/bin/python benchmarks/vs_anomalib_trained.py --methods simplenet \\
        --size 64 --train 32

Writes ``benchmarks/results/vs_anomalib_trained.md`` (``-quick`` with ``--quick``) and the raw
figures in a JSON file beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ["VAD_INSPECTION_THREADS"] = os.environ.get("VAD_INSPECTION_THREADS") or "1"

import numpy as np
import torch
import torchvision
from scipy.stats import pearsonr, spearmanr
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))

import anomalib_pins  # noqa: E402
from scenes import scene, scenes  # noqa: E402
from vs_anomalib import TIMM, batches, log  # noqa: E402  (imports anomalib, or says to install)

from vad_inspection.eval.metrics import auroc, pixel_auroc  # noqa: E402
from vad_inspection.vad import (  # noqa: E402
    cfa_train,
    fastflow_train,
    rd4ad_train,
    simplenet_train,
    stfpm_train,
)
from vad_inspection.vad.backbones import get_spec  # noqa: E402
from vad_inspection.vad.cfa import CFA, CFAConfig  # noqa: E402
from vad_inspection.vad.fastflow import FastFlow, FastFlowConfig  # noqa: E402
from vad_inspection.vad.ops import gaussian_kernel_size  # noqa: E402
from vad_inspection.vad.preprocess import InputSpec, resize_image, to_network_input  # noqa: E402
from vad_inspection.vad.rd4ad import RD4AD, RD4ADConfig  # noqa: E402
from vad_inspection.vad.simplenet import SimpleNet, SimpleNetConfig  # noqa: E402
from vad_inspection.vad.stfpm import STFPM, STFPMConfig  # noqa: E402
from vad_inspection.vad.torch_training import TeacherFeatures  # noqa: E402
from vad_inspection.vad.vae_train import held_out  # noqa: E402

with contextlib.redirect_stderr(open(os.devnull, "w")):
    import anomalib
    import anomalib.models.image.cfa.torch_model as anomalib_cfa_module
    import anomalib.models.image.stfpm.torch_model as anomalib_stfpm_module
    import anomalib.models.image.supersimplenet.torch_model as anomalib_ssn_module
    from anomalib.models.components import GaussianBlur2d, TimmFeatureExtractor
    from anomalib.models.image import Cfa, Fastflow, ReverseDistillation, Stfpm, Supersimplenet

ANOMALIB_BATCH = 32  # anomalib's default eval batch size


class _NoDownloadExtractor(TimmFeatureExtractor):
    """STFPM's teacher and SuperSimpleNet's backbone ask timm for ImageNet weights (a download);
    ours replace them anyway."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "pre_trained": False})


def _no_download_feature_extractor(backbone: str, return_nodes: list[str]) -> nn.Module:
    """CFA's ``get_feature_extractor`` without the ImageNet download (ours replace the weights)."""
    model = torchvision.models.get_model(backbone, weights=None)
    return create_feature_extractor(model=model, return_nodes=return_nodes).eval()


anomalib_stfpm_module.TimmFeatureExtractor = _NoDownloadExtractor
anomalib_ssn_module.TimmFeatureExtractor = _NoDownloadExtractor
anomalib_cfa_module.get_feature_extractor = _no_download_feature_extractor


# ---------------------------------------------------------------------------------------------
# Same weights on both sides
# ---------------------------------------------------------------------------------------------


def copy_backbone(target: nn.Module, source: nn.Module, backbone: str, size: int) -> None:
    """Copy our backbone cut at its taps (``torch_feature_model``: teacher, student or frozen
    backbone) into anomalib's, tensor by tensor in order, and check that the taps agree.

    timm's and torchvision's tensors come in the same order (names differ for MobileNetV2); timm
    may keep blocks past the deepest tap, which stay as they are (no tap depends on them).
    """
    state = target.state_dict()
    names = list(state)
    for name, tensor in zip(names, source.state_dict().values(), strict=False):
        if state[name].shape != tensor.shape:
            raise RuntimeError(
                f"weight mapping broke at {name}: {tuple(state[name].shape)} vs "
                f"{tuple(tensor.shape)}"
            )
        state[name] = tensor.detach().clone()
    target.load_state_dict(state)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    modes = (target.training, source.training)
    target.eval()
    source.eval()
    with torch.no_grad():
        theirs = target(x)
        mine = source(x)
    target.train(modes[0])
    source.train(modes[1])
    theirs = list(theirs.values()) if isinstance(theirs, dict) else list(theirs)
    for tap, a, b in zip(get_spec(backbone).taps, mine, theirs, strict=False):
        scale = float(a.abs().max())
        err = float((a - b).abs().max()) if a.shape == b.shape else float("inf")
        if err > 1e-4 * scale:
            raise RuntimeError(f"{backbone} {tap}: taps differ by {err} ({scale=})")


def anomalib_input(images: Sequence[np.ndarray], transform: Callable) -> torch.Tensor:
    """What anomalib's pipeline gives its model: RGB float in [0, 1], then its PreProcessor; a
    contiguous (N, C, H, W) batch, as its data loader's (the permuted view of our (N, H, W, C)
    images would run the networks channels-last, and RD4AD's loss ``view``s its features)."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return transform(x.expand(-1, 3, -1, -1)).contiguous()


def check_inputs(transform: Callable, images: Sequence[np.ndarray], size: int) -> None:
    """anomalib's preprocessing of our images must give our network input."""
    theirs = anomalib_input(images, transform).numpy()
    ours = to_network_input(images, InputSpec.for_channels(3, (size, size)))
    err = float(np.abs(theirs - ours).max())
    if err > 1e-5:
        raise RuntimeError(f"anomalib's preprocessing differs from ours by {err}")


# ---------------------------------------------------------------------------------------------
# The three methods: how anomalib's model is built, given our weights, trained and scored
# ---------------------------------------------------------------------------------------------


class Bench:
    """What differs between the methods. ``build`` gives anomalib's Lightning module (used only
    for its ``model``, ``loss`` and ``configure_optimizers``) with our backbone and our
    initialisation of the trained parts; ``load_trained`` copies our trained parts into it."""

    key: str
    title: str
    ours: type
    train_module: types.ModuleType
    lightning: type
    backbones: tuple[str, ...] = ("resnet18",)

    def config(self, backbone: str, size: int, epochs: int, seed: int):
        raise NotImplementedError

    def build(self, config, initial: dict) -> nn.Module:
        raise NotImplementedError

    def initial(self, config, images: Sequence[np.ndarray]) -> dict:
        """Our initialisation of the trained parts (seeded as our training seeds it); ``images``
        are the training images (SimpleNet's standardisation is measured on them)."""
        raise NotImplementedError

    def load_trained(self, module: nn.Module, parts: dict, config) -> None:
        raise NotImplementedError

    def parts(self, result) -> dict:
        """Our trained parts from our training result."""
        raise NotImplementedError

    def loss(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def before_training(self, module: nn.Module, loader: Iterator, config) -> None:
        """Anything anomalib's Lightning module does at ``on_train_start``."""

    def optimiser(self, module: nn.Module, config) -> tuple[torch.optim.Optimizer, object]:
        """anomalib's ``configure_optimizers()``: the optimiser and its per-epoch learning-rate
        scheduler (None: none)."""
        return module.configure_optimizers(), None

    def backward(self, module: nn.Module, loss: torch.Tensor) -> None:
        """The backward pass as anomalib's Lightning module runs it."""
        loss.backward()

    def outputs(self, out, fidelity: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Image scores and anomaly maps from anomalib's ``InferenceBatch``: as anomalib gives
        them (``fidelity`` False: its own AUROC) or in our quantities (True: for the comparison
        with our outputs)."""
        return out.pred_score, out.anomaly_map

    def notes(self, module: nn.Module, transform, data: Data, size: int) -> list[str]:
        """Anything more to say about anomalib's independently trained ``module``."""
        return []

    def variants(self, config) -> list[tuple[str, object]]:
        """Other configs of ours to fit on the same data, for their AUROC only (notes)."""
        return []

    def fidelity_models(
        self, config, parts: dict, initial: dict
    ) -> list[tuple[str, nn.Module, bool]]:
        """anomalib models holding our trained ``parts``: ``(label, module, target)``; rows
        without ``target`` are diagnostics (no 0.99 target)."""
        module = self.build(config, initial)
        self.load_trained(module, parts, config)
        return [("", module, True)]

    def transform(self, size: int) -> Callable:
        return self.lightning.configure_pre_processor(image_size=(size, size)).transform


class StfpmBench(Bench):
    key, title = "stfpm", "STFPM"
    ours, train_module, lightning = STFPM, stfpm_train, Stfpm
    backbones = ("resnet18", "mobilenet_v2")

    def config(self, backbone: str, size: int, epochs: int, seed: int) -> STFPMConfig:
        return STFPMConfig(
            backbone=backbone, size=(size, size), seed=seed, epochs=epochs, val_fraction=0.0
        )

    def initial(self, config: STFPMConfig, images: Sequence[np.ndarray]) -> dict:
        return {"student": stfpm_train.student_network(config)}

    def parts(self, result) -> dict:
        return {"student": result.student}

    def build(self, config: STFPMConfig, initial: dict) -> nn.Module:
        timm_name, layers = TIMM[config.backbone]
        taps = [layers[t] for t in get_spec(config.backbone).taps]
        module = Stfpm(backbone=timm_name, layers=taps)
        size = config.size[0]
        teacher = stfpm_train.teacher_network(config)
        copy_backbone(module.model.teacher_model.feature_extractor, teacher, config.backbone, size)
        self.load_trained(module, initial, config)
        return module

    def load_trained(self, module: nn.Module, parts: dict, config: STFPMConfig) -> None:
        target = module.model.student_model.feature_extractor
        copy_backbone(target, parts["student"], config.backbone, config.size[0])

    def loss(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        teacher, student = module.model(x)
        return module.loss(teacher, student)


class CfaBench(Bench):
    key, title = "cfa", "CFA"
    ours, train_module, lightning = CFA, cfa_train, Cfa

    def config(self, backbone: str, size: int, epochs: int, seed: int) -> CFAConfig:
        return CFAConfig(  # gamma_c 1: the paper's bank and anomalib's default (ours is 4)
            backbone=backbone, size=(size, size), seed=seed, epochs=epochs, val_fraction=0.0,
            gamma_c=1,
        )  # fmt: skip

    def initial(self, config: CFAConfig, images: Sequence[np.ndarray]) -> dict:
        return {"descriptor": cfa_train.descriptor_network(config)}

    def parts(self, result) -> dict:
        return {"descriptor": result.descriptor, "memory": result.memory}

    def build(self, config: CFAConfig, initial: dict) -> nn.Module:
        # gamma_c = gamma_d = 1, K = J = 3, r = 1e-5: anomalib's defaults are ours
        module = Cfa(
            backbone=config.backbone, gamma_c=config.gamma_c, gamma_d=config.gamma_d,
            num_nearest_neighbors=config.k, num_hard_negative_features=config.j,
            radius=config.radius,
        )  # fmt: skip
        backbone = cfa_train.feature_network(config).backbone
        copy_backbone(module.model.feature_extractor, backbone, config.backbone, config.size[0])
        self.load_trained(module, initial, config)
        return module

    def load_trained(self, module: nn.Module, parts: dict, config: CFAConfig) -> None:
        """Our 1x1 convolution into anomalib's CoordConv: the feature channels come first, the
        two coordinate channels last (their weights zero); the memory bank transposed (anomalib
        keeps it as ``(D, M)``)."""
        conv = module.model.descriptor.layer.conv2d
        ours = parts["descriptor"]
        with torch.no_grad():
            weight = torch.zeros_like(conv.weight)
            weight[:, : ours.weight.shape[1]] = ours.weight
            conv.weight.copy_(weight)
            conv.bias.copy_(ours.bias)
        if "memory" in parts:
            module.model.memory_bank = parts["memory"].detach().t().contiguous()

    def before_training(self, module: nn.Module, loader: Iterator, config: CFAConfig) -> None:
        module.model.initialize_centroid(data_loader=loader)

    def backward(self, module: nn.Module, loss: torch.Tensor) -> None:
        module.backward(loss)  # its own override: retain_graph=True (its radius keeps a graph)

    def loss(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module.loss(module.model(x))


def squared_score_map(model: nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    """anomalib's CFA map with the patch score our CFA used before: ``softmin(d)_1 * d_1`` of the
    *squared* distances (anomalib, and ours now, take their square roots first). Everything else
    is anomalib's. Only for the pins (``--pin``): the test checks ours no longer matches it."""
    with torch.no_grad():
        features = list(model.feature_extractor(x).values())
        target = model.descriptor(features)
        distance = model.compute_distance(target).topk(k, largest=False).values
        score = torch.softmax(-distance, dim=-1)[..., 0] * distance[..., 0]
        h, w = target.shape[-2:]
        score = score.reshape(-1, 1, h, w)
        return model.anomaly_map_generator.compute_anomaly_map(score, image_size=x.shape[-2:])


class FastflowBench(Bench):
    key, title = "fastflow", "FastFlow"
    ours, train_module, lightning = FastFlow, fastflow_train, Fastflow
    ANOMALIB_HIDDEN_RATIO = 1.0  # anomalib's default: times the half channel count

    def config(self, backbone: str, size: int, epochs: int, seed: int) -> FastFlowConfig:
        # hidden_ratio 0.5 of the full channel count = anomalib's 1.0 of the half
        return FastFlowConfig(
            backbone=backbone, size=(size, size), seed=seed, epochs=epochs, val_fraction=0.0,
            hidden_ratio=self.ANOMALIB_HIDDEN_RATIO / 2,
        )  # fmt: skip

    def initial(self, config: FastFlowConfig, images: Sequence[np.ndarray]) -> dict:
        return {"flows": fastflow_train.flow_network(config)}

    def parts(self, result) -> dict:
        return {"flows": result.flows}

    def build(self, config: FastFlowConfig, initial: dict) -> nn.Module:
        if config.clamp != 2.0:
            raise ValueError("anomalib's FastFlow clamps at 2.0 (not configurable)")
        module = Fastflow(
            backbone=config.backbone, pre_trained=False, flow_steps=config.flow_steps,
            conv3x3_only=False, hidden_ratio=self.ANOMALIB_HIDDEN_RATIO,
            pre_processor=Fastflow.configure_pre_processor(image_size=config.size),
        )  # fmt: skip
        backbone = fastflow_train.feature_network(config).backbone
        copy_backbone(module.model.feature_extractor, backbone, config.backbone, config.size[0])
        self.load_trained(module, initial, config)
        return module

    def load_trained(self, module: nn.Module, parts: dict, config: FastFlowConfig) -> None:
        """Our flows into anomalib's AllInOneBlocks (see the module docstring): first subnet
        convolution as it is; the last one with its log-scale rows times ``10 / clamp`` and its
        shift rows times 10 (anomalib scales the subnet output by 0.1 and clamps with
        ``clamp * tanh(.)``, ours with ``clamp * tanh(. / clamp)``); the permutation into
        ``w_perm`` / ``w_perm_inv``; the global affines and the LayerNorm affines at identity."""
        model = module.model
        with torch.no_grad():
            for norm in model.norms:
                norm.weight.fill_(1.0)
                norm.bias.zero_()
            for flow, blocks in zip(parts["flows"], model.fast_flow_blocks, strict=True):
                for step, block in zip(flow.steps, blocks.module_list, strict=True):
                    if block.splits != [step.split, block.in_channels - step.split]:
                        raise RuntimeError("odd channel count: the halves would differ")
                    first, last = step.subnet[0], step.subnet[-1]
                    block.subnet[0].weight.copy_(first.weight)
                    block.subnet[0].bias.copy_(first.bias)
                    half = last.weight.shape[0] // 2
                    factor = torch.ones(last.weight.shape[0])
                    factor[:half] = 10.0 / step.clamp
                    factor[half:] = 10.0
                    block.subnet[2].weight.copy_(last.weight * factor[:, None, None, None])
                    block.subnet[2].bias.copy_(last.bias * factor)
                    channels = block.in_channels
                    perm = torch.zeros(channels, channels)
                    perm[torch.arange(channels), step.permutation] = 1.0
                    block.w_perm.copy_(perm.view(channels, channels, 1, 1))
                    block.w_perm_inv.copy_(perm.t().contiguous().view(channels, channels, 1, 1))
                    fresh = 2.0 * torch.log(torch.exp(torch.tensor(5.0)) - 1)  # scale 1.0
                    block.global_scale.fill_(float(fresh))
                    block.global_offset.zero_()

    def loss(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        hidden, jacobians = module.model(x)
        return module.loss(hidden, jacobians)


def _copy_modules(pairs: Sequence[tuple[nn.Module, nn.Module]]) -> None:
    """Each (ours, anomalib's) pair of convolutions or batch norms: ours's state (weights,
    running statistics) into anomalib's, which must have the same names and shapes."""
    for mine, theirs in pairs:
        theirs.load_state_dict(mine.state_dict())


class Rd4adBench(Bench):
    key, title = "rd4ad", "RD4AD"
    ours, train_module, lightning = RD4AD, rd4ad_train, ReverseDistillation
    #: The official code's student for ResNet18 (anomalib's copy of it): no 1x1 fusion in MFF,
    #: two basic blocks in OCE and per decoder level, a ReLU after every block; and its loss.
    OFFICIAL: ClassVar[dict[str, object]] = {
        "mff_fusion": False,
        "oce_blocks": 2,
        "decoder_blocks": 2,
        "decoder_relu": True,
        "loss": "flattened",
    }
    #: Our defaults of the same options (the paper's MFF and loss; see vad/rd4ad.py).
    DEFAULT: ClassVar[dict[str, object]] = {
        "mff_fusion": True,
        "oce_blocks": 1,
        "decoder_blocks": 1,
        "decoder_relu": False,
        "loss": "position",
    }

    def config(self, backbone: str, size: int, epochs: int, seed: int) -> RD4ADConfig:
        if backbone != "resnet18":
            raise ValueError("anomalib's RD4AD decoders are ResNets; the layout here is ResNet18's")
        return RD4ADConfig(
            backbone=backbone, size=(size, size), seed=seed, epochs=epochs, val_fraction=0.0,
            **self.OFFICIAL,
        )  # fmt: skip

    def variants(self, config: RD4ADConfig) -> list[tuple[str, RD4ADConfig]]:
        """Our other choices, on the same data: the paper's loss in the official layout, and
        our default layout with either loss."""
        default = replace(config, **self.DEFAULT)
        return [
            ("official layout, the paper's loss (per position)", replace(config, loss="position")),
            ("our default layout and loss (the paper's)", default),
            ("our default layout, the official code's loss", replace(default, loss="flattened")),
        ]

    def initial(self, config: RD4ADConfig, images: Sequence[np.ndarray]) -> dict:
        return {"student": rd4ad_train.student_network(config)}

    def parts(self, result) -> dict:
        return {"student": result.student}

    def build(self, config: RD4ADConfig, initial: dict) -> nn.Module:
        timm_name, layers = TIMM[config.backbone]
        module = ReverseDistillation(
            backbone=timm_name, layers=[layers[t] for t in get_spec(config.backbone).taps],
            pre_trained=False,
            pre_processor=ReverseDistillation.configure_pre_processor(image_size=config.size),
        )  # fmt: skip
        teacher = rd4ad_train.teacher_network(config)
        copy_backbone(module.model.encoder, teacher, config.backbone, config.size[0])
        self.load_trained(module, initial, config)
        return module

    def load_trained(self, module: nn.Module, parts: dict, config: RD4ADConfig) -> None:
        """Our OCBE and decoder into anomalib's ``bottleneck`` and ``decoder``, module by module
        (the layouts are the same, the names and the order of the state dicts are not): MFF's
        strided convolutions into ``conv1`` to ``conv3`` (its unused ``conv4`` stays as it is),
        OCE's blocks into ``bn_layer``, each decoder level's up-block and further block into
        ``layer1`` to ``layer3``."""
        student = parts["student"]
        ocbe, bottleneck, decoder = student.ocbe, module.model.bottleneck, module.model.decoder
        if not isinstance(ocbe.fuse, nn.Identity) or len(ocbe.oce) != len(bottleneck.bn_layer):
            raise RuntimeError("our OCBE is not the official layout (see Rd4adBench.OFFICIAL)")
        pairs = [
            (ocbe.align[0][0][0], bottleneck.conv1), (ocbe.align[0][0][1], bottleneck.bn1),
            (ocbe.align[0][1][0], bottleneck.conv2), (ocbe.align[0][1][1], bottleneck.bn2),
            (ocbe.align[1][0], bottleneck.conv3), (ocbe.align[1][1], bottleneck.bn3),
        ]  # fmt: skip
        for mine, theirs in zip(ocbe.oce, bottleneck.bn_layer, strict=True):
            pairs += [(mine.main[0][0], theirs.conv1), (mine.main[0][1], theirs.bn1),
                      (mine.main[1], theirs.conv2), (mine.main[2], theirs.bn2)]  # fmt: skip
            if theirs.downsample is not None:
                pairs += [(mine.shortcut[0], theirs.downsample[0]),
                          (mine.shortcut[1], theirs.downsample[1])]  # fmt: skip
        levels = (decoder.layer1, decoder.layer2, decoder.layer3)
        blocks, refine = student.decoder.blocks, student.decoder.refine
        for up, more, layer in zip(blocks, refine, levels, strict=True):
            first = layer[0]
            pairs += [(up.main[0], first.conv1), (up.main[1], first.bn1),
                      (up.main[3], first.conv2), (up.main[4], first.bn2),
                      (up.shortcut[0], first.upsample[0]),
                      (up.shortcut[1], first.upsample[1])]  # fmt: skip
            for mine, theirs in zip(more, list(layer)[1:], strict=True):
                pairs += [(mine.main[0][0], theirs.conv1), (mine.main[0][1], theirs.bn1),
                          (mine.main[1], theirs.conv2), (mine.main[2], theirs.bn2)]  # fmt: skip
        _copy_modules(pairs)

    def loss(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        encoder, decoder = module.model(x)
        return module.loss(encoder, decoder)


def _logit(p: torch.Tensor) -> torch.Tensor:
    """The inverse of the sigmoid anomalib's SuperSimpleNet ends with, in float64."""
    p = p.double()
    return (torch.log(p) - torch.log1p(-p)).float()


class SimplenetBench(Bench):
    """SimpleNet against anomalib's SuperSimpleNet (anomalib 2.7 has no SimpleNet; see the
    module docstring): its segmentation path is SimpleNet's adaptor and discriminator."""

    key, title = "simplenet", "SimpleNet"
    ours, train_module, lightning = SimpleNet, simplenet_train, Supersimplenet

    def config(self, backbone: str, size: int, epochs: int, seed: int) -> SimpleNetConfig:
        return SimpleNetConfig(
            backbone=backbone, size=(size, size), seed=seed, epochs=epochs, val_fraction=0.0
        )

    def initial(self, config: SimpleNetConfig, images: Sequence[np.ndarray]) -> dict:
        """Our adaptor and discriminator as our training initialises them, with the
        standardisation our training measures on ``images`` (all of them: ``val_fraction=0``)."""
        data = to_network_input(images, InputSpec.for_channels(3, config.size))
        features = TeacherFeatures(simplenet_train.feature_network(config), data, config.batch_size)
        index = np.arange(len(data))
        standardise = simplenet_train.standardise_network(features, index, config.batch_size)
        return {"heads": simplenet_train.head_networks(config, standardise)}

    def parts(self, result) -> dict:
        return {"heads": result.heads}

    def build(self, config: SimpleNetConfig, initial: dict) -> nn.Module:
        timm_name, layers = TIMM[config.backbone]
        module = Supersimplenet(
            backbone=timm_name, layers=[layers[t] for t in get_spec(config.backbone).taps],
            pre_processor=Supersimplenet.configure_pre_processor(image_size=config.size),
        )  # fmt: skip
        backbone = simplenet_train.feature_network(config).backbone
        extractor = module.model.feature_extractor.feature_extractor
        copy_backbone(extractor, backbone, config.backbone, config.size[0])
        # its noise (0.015, absolute, set for ImageNet WideResNet50 features) in the units ours
        # uses: our standardisation is folded into its adaptor, so its adapted features start
        # in our standardised units
        module.model.anomaly_generator.noise_std = config.noise_std
        self.load_trained(module, initial, config)
        return module

    def load_trained(self, module: nn.Module, parts: dict, config: SimpleNetConfig) -> None:
        """Our standardisation folded into anomalib's adaptor (``W' = W / s``, ``b' = b - W' m``,
        in float64), our discriminator into its segmentation head with the last layer negated
        (ours scores ``-D``, its head gives the anomaly value itself). Its classification head
        keeps its own weights."""
        heads = parts["heads"]
        standardise, adaptor, disc = heads["standardise"], heads["adaptor"], heads["discriminator"]
        weight = adaptor.weight.detach().double()[:, :, 0, 0] / standardise.scale.double()
        bias = adaptor.bias.detach().double() - weight @ standardise.mean.double().reshape(-1)
        projection = module.model.adaptor.projection
        seg = module.model.segdec.seg_head
        with torch.no_grad():
            projection.weight.copy_(weight[:, :, None, None].float())
            projection.bias.copy_(bias.float())
            seg[3].weight.copy_(-disc[3].weight)
        _copy_modules([(disc[0], seg[0]), (disc[1], seg[1])])

    def before_training(self, module: nn.Module, loader: Iterator, config) -> None:
        torch.manual_seed(config.seed)  # its Perlin masks and noise draw from torch's stream

    def optimiser(self, module: nn.Module, config) -> tuple[torch.optim.Optimizer, object]:
        """Its AdamW and its MultiStepLR (x0.4 at 80 % and 90 % of the epochs), which reads the
        epochs from the Trainer: a stand-in holding only ``max_epochs``."""
        module.trainer = types.SimpleNamespace(max_epochs=config.epochs)
        try:
            (optimiser,), (scheduler,) = module.configure_optimizers()
        finally:
            module.trainer = None
        return optimiser, scheduler

    def loss(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Its training step on normal images: no masks, labels zero."""
        amap, score, masks, labels = module.model(images=x, labels=torch.zeros(len(x)))
        return module.loss(pred_map=amap, pred_score=score, target_mask=masks, target_label=labels)

    def outputs(self, out, fidelity: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The image score is its map's maximum, SimpleNet's (its own, a classification head
        SimpleNet does not have, is in the notes); the map as anomalib gives it (a sigmoid:
        monotonic, so the AUROCs are those of the map before it), or, for the comparison with
        ours, the map before its sigmoid (``logit``)."""
        amap = _logit(out.anomaly_map) if fidelity else out.anomaly_map
        return amap.amax(dim=(-2, -1)), amap

    def notes(self, module: nn.Module, transform, data: Data, size: int) -> list[str]:
        """The image AUROC of its own image score, its classification head's."""
        model = module.model.eval()
        aurocs = []
        for images, labels in ((data.test, data.labels), (data.subtle, data.subtle_labels)):
            with torch.inference_mode():
                scores = np.concatenate([
                    model(anomalib_input(part, transform)).pred_score.reshape(-1).numpy()
                    for part in batches(images, ANOMALIB_BATCH)
                ])  # fmt: skip
            aurocs.append(auroc(labels, scores))
        return [
            "anomalib's image AUROC with SuperSimpleNet's own image score, its classification "
            f"head (the table: its map's maximum, SimpleNet's score): {aurocs[0]:.3f}, subtle "
            f"{aurocs[1]:.3f}"
        ]

    def fidelity_models(
        self, config, parts: dict, initial: dict
    ) -> list[tuple[str, nn.Module, bool]]:
        """Two: anomalib's SuperSimpleNet on our patch features (its feature extractor replaced
        by ours: everything after it is anomalib's code with our weights; the 0.99 targets), and
        end to end with its own features (upsampled to twice the first tap's grid, then 3x3
        averaged; a diagnostic: the aggregation is SuperSimpleNet's, not SimpleNet's)."""
        same = self.build(config, initial)
        self.load_trained(same, parts, config)
        own = self.build(config, initial)
        self.load_trained(own, parts, config)
        same.model.feature_extractor = _OurFeatures(simplenet_train.feature_network(config))
        return [("our features", same, True), ("its own features", own, False)]


class _OurFeatures(nn.Module):
    """Our patch features (``PatchFeatures``: taps 3x3-averaged, brought to the first tap's grid,
    concatenated) as anomalib's SuperSimpleNet takes them: one tensor."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.features(images)[0]


BENCHES: dict[str, Bench] = {
    b.key: b for b in (StfpmBench(), CfaBench(), FastflowBench(), Rd4adBench(), SimplenetBench())
}


# ---------------------------------------------------------------------------------------------
# Running both sides
# ---------------------------------------------------------------------------------------------


@dataclass
class Data:
    train: list[np.ndarray]
    test: list[np.ndarray]
    labels: np.ndarray
    masks: np.ndarray
    subtle: list[np.ndarray]  # the same kind of scenes, defects blended in at `alpha`
    subtle_labels: np.ndarray
    subtle_masks: np.ndarray
    alpha: float
    tiles: list[np.ndarray] = field(default_factory=list)  # magnetic tile, RGB, fidelity only
    tile_summary: str = ""


def subtle_scenes(seed: int, size: int, n: int, alpha: float) -> tuple[list, np.ndarray, list]:
    """``tests/scenes.py`` scenes whose defect is blended into the texture at ``alpha``: each
    image is drawn twice from the same seed, without and with its defect (the texture is drawn
    first, so it is the same), and mixed. Every second image has a defect. Harder than the
    plain scenes, whose image AUROC saturates at 1."""
    images, labels, masks = [], [], []
    for i in range(n):
        defect = (i + 1) % 2 == 0
        plain, _ = scene(np.random.default_rng([seed, i]), size, False)
        image, mask = scene(np.random.default_rng([seed, i]), size, defect)
        mixed = plain.astype(np.float32) + alpha * (image.astype(np.float32) - plain)
        images.append(np.clip(np.rint(mixed), 0, 255).astype(np.uint8))
        labels.append(int(defect))
        masks.append(mask)
    return images, np.array(labels), np.stack(masks)


def synthetic(size: int, n_train: int, n_test: int, seed: int, alpha: float) -> Data:
    train = scenes(seed, size, n_train)[0]
    test, labels, masks = scenes(seed + 1, size, n_test, defect_every=2)
    subtle, subtle_labels, subtle_masks = subtle_scenes(seed + 2, size, n_test, alpha)
    return Data(train, test, labels, masks, subtle, subtle_labels, subtle_masks, alpha)


def magnetic_tiles(root: str, size: int, n_normal: int, seed: int) -> tuple[list, str]:
    """Magnetic-tile test images (as many anomalous as normal) at ``size``, gray replicated to
    RGB; empty where the dataset is absent."""
    if not Path(root).is_dir():
        return [], f"magnetic tile not found at {root}"
    from vad_inspection.data import open_dataset
    from vad_inspection.eval.settings import build_split

    split = build_split(
        open_dataset(f"magnetic_tile:{root}"), 1, seed=seed, max_train=2, max_test_normal=n_normal
    )
    images = [resize_image(s.image(), (size, size)) for s in split.test]
    images = [np.repeat(i, 3, axis=2) if i.shape[2] == 1 else i for i in images]
    return images, f"magnetic tile, {len(images)} test images of setting 1 (seed {seed})"


@contextlib.contextmanager
def captured(module: types.ModuleType) -> Iterator[dict]:
    """Our ``fit`` keeps only the ONNX graph; this keeps the torch networks its ``train`` made."""
    box: dict = {}
    original = module.train

    def train(data, config):
        box["result"] = original(data, config)
        return box["result"]

    module.train = train
    try:
        yield box
    finally:
        module.train = original


def anomalib_fit(bench: Bench, module: nn.Module, config, images: Sequence, transform) -> float:
    """anomalib's training, as its Lightning module runs it, in our batches and order."""
    order = bench.train_module._batches  # ours: the batches our training draws
    train_index = held_out(len(images), config.val_fraction, config.seed)[0]
    start = time.perf_counter()
    loader = (
        types.SimpleNamespace(image=anomalib_input([images[i] for i in part], transform))
        for part in order(train_index, config.batch_size)
    )
    bench.before_training(module, loader, config)
    optimiser, scheduler = bench.optimiser(module, config)
    module.model.train()
    for epoch in range(config.epochs):
        rng = np.random.default_rng([config.seed, 2, epoch])
        for part in order(rng.permutation(train_index), config.batch_size):
            loss = bench.loss(module, anomalib_input([images[i] for i in part], transform))
            optimiser.zero_grad()
            bench.backward(module, loss)
            optimiser.step()
        if scheduler is not None:
            scheduler.step()  # Lightning's default interval: once per epoch
    module.model.eval()
    return time.perf_counter() - start


def ours_predict(model, images: Sequence) -> tuple[np.ndarray, np.ndarray]:
    prediction = model.predict(images)
    return prediction.scores, prediction.maps


def anomalib_predict(
    module: nn.Module, transform, images: Sequence, size: int, bench: Bench | None = None,
    fidelity: bool = False,
) -> tuple:  # fmt: skip
    """anomalib's image scores and maps (see :meth:`Bench.outputs` for ``fidelity``)."""
    model = module.model.eval()
    scores, maps = [], []
    with torch.inference_mode():
        for part in batches(images, ANOMALIB_BATCH):
            out = model(anomalib_input(part, transform))
            score, amap = (bench or Bench()).outputs(out, fidelity)
            scores.append(score.reshape(-1).numpy())
            maps.append(amap.reshape(-1, size, size).numpy())
    return np.concatenate(scores), np.concatenate(maps)


@dataclass
class Side:
    fit_s: float = float("nan")
    train_s: float = float("nan")
    image_auroc: float = float("nan")
    pixel_auroc: float = float("nan")
    subtle_image_auroc: float = float("nan")
    subtle_pixel_auroc: float = float("nan")

    def score(self, data: Data, test: tuple, subtle: tuple) -> None:
        for prefix, labels, masks, (scores, maps) in (
            ("", data.labels, data.masks, test),
            ("subtle_", data.subtle_labels, data.subtle_masks, subtle),
        ):
            setattr(self, f"{prefix}image_auroc", auroc(labels, scores))
            finite = np.isfinite(maps).all()
            setattr(self, f"{prefix}pixel_auroc", pixel_auroc(masks, maps) if finite else np.nan)


@dataclass
class Fidelity:
    name: str
    data: str
    n: int
    spearman: float
    pearson: float
    score_diff: float  # max |a - b| / max |b|
    map_diff: float
    target: bool = True  # False: a diagnostic row, no target

    @property
    def met(self) -> bool | None:
        return (self.spearman >= 0.99 and self.pearson >= 0.99) if self.target else None


def compare(name: str, data: str, ours: tuple, theirs: tuple, target: bool = True) -> Fidelity:
    (a_s, a_m), (b_s, b_m) = ours, theirs
    a_m, b_m = a_m.astype(np.float64).ravel(), b_m.astype(np.float64).ravel()
    finite = np.isfinite(a_m) & np.isfinite(b_m)
    return Fidelity(
        name=name,
        data=data,
        n=len(a_s),
        spearman=float(spearmanr(a_s, b_s).statistic),
        pearson=float(pearsonr(a_m[finite], b_m[finite])[0]),
        score_diff=float(np.abs(a_s - b_s).max() / np.abs(b_s).max()),
        map_diff=float(np.abs(a_m - b_m)[finite].max() / np.abs(b_m[finite]).max()),
        target=target,
    )


@dataclass
class Row:
    method: str
    backbone: str
    settings: dict
    ours: Side
    theirs: Side
    fidelity: list[Fidelity]
    notes: list[str] = field(default_factory=list)
    run: int = 0  # which run (of the results file's ``runs``) measured it

    def to_dict(self) -> dict:
        return {
            "method": self.method, "backbone": self.backbone, "run": self.run,
            "settings": self.settings, "ours": self.ours.__dict__,
            "anomalib": self.theirs.__dict__,
            "fit_ratio_ours_over_anomalib": self.ours.fit_s / self.theirs.fit_s,
            "fidelity": [{**f.__dict__, "met": f.met} for f in self.fidelity],
            "notes": self.notes,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, raw: dict) -> Row:
        fidelity = [Fidelity(**{k: v for k, v in f.items() if k != "met"}) for f in raw["fidelity"]]
        return cls(
            raw["method"], raw["backbone"], raw["settings"], Side(**raw["ours"]),
            Side(**raw["anomalib"]), fidelity, raw.get("notes", []), raw.get("run", 0),
        )  # fmt: skip


def run(bench: Bench, backbone: str, data: Data, epochs: int, args) -> Row:
    size = args.size
    config = bench.config(backbone, size, epochs, args.seed)
    log(f"{bench.title} {backbone}: {len(data.train)} images of {size} px, {epochs} epochs, "
        f"batch {config.batch_size}")  # fmt: skip
    transform = bench.transform(size)
    check_inputs(transform, data.test[:4], size)
    ours, theirs = Side(), Side()
    # untimed warm-up of both sides (one epoch on a few images): one-time costs of the first
    # calls (allocator, kernel selection) do not land on whichever side runs first
    warm = bench.config(backbone, size, 1, args.seed)
    bench.ours(warm).fit(data.train[:8])
    warm_initial = bench.initial(warm, data.train[:8])
    anomalib_fit(bench, bench.build(warm, warm_initial), warm, data.train[:8], transform)

    # (b, c) ours: our fit, timed, the torch networks it trained kept for (a); anomalib: our
    # backbone and our initialisation, its own loss and optimiser. With repeats the sides
    # alternate and the fastest run of each counts (training is deterministic: same models).
    times: dict[str, list[float]] = {"ours": [], "ours_train": [], "anomalib": []}
    for _ in range(args.repeats):
        model = bench.ours(config)
        with captured(bench.train_module) as box:
            start = time.perf_counter()
            model.fit(data.train)
            times["ours"].append(time.perf_counter() - start)
        times["ours_train"].append(model.summary.seconds)
        theirs_model = bench.build(config, bench.initial(config, data.train))
        times["anomalib"].append(anomalib_fit(bench, theirs_model, config, data.train, transform))
    ours.fit_s, ours.train_s = min(times["ours"]), min(times["ours_train"])
    theirs.fit_s = theirs.train_s = min(times["anomalib"])
    ours.score(data, ours_predict(model, data.test), ours_predict(model, data.subtle))
    theirs_test = anomalib_predict(theirs_model, transform, data.test, size, bench)
    theirs_subtle = anomalib_predict(theirs_model, transform, data.subtle, size, bench)
    theirs.score(data, theirs_test, theirs_subtle)
    log(f"  fit ours {ours.fit_s:.1f} s, anomalib {theirs.fit_s:.1f} s; image AUROC ours "
        f"{ours.image_auroc:.3f} / {ours.subtle_image_auroc:.3f} (subtle), anomalib "
        f"{theirs.image_auroc:.3f} / {theirs.subtle_image_auroc:.3f}")  # fmt: skip
    extra_notes = bench.notes(theirs_model, transform, data, size)
    del theirs_model
    variants = {}
    for label, variant in bench.variants(config):
        other = bench.ours(variant)
        start = time.perf_counter()
        other.fit(data.train)
        side = Side(fit_s=time.perf_counter() - start, train_s=other.summary.seconds)
        side.score(data, ours_predict(other, data.test), ours_predict(other, data.subtle))
        variants[label] = side.__dict__
        extra_notes.append(
            f"ours, {label}: image AUROC {side.image_auroc:.3f} (subtle "
            f"{side.subtle_image_auroc:.3f}), pixel AUROC {side.pixel_auroc:.3f}, fit "
            f"{side.fit_s:.1f} s"
        )
        log(f"  {extra_notes[-1]}")

    # (a) our trained parts copied into a fresh anomalib model: same weights, same inputs
    initial = bench.initial(config, data.train)
    sets = [("synthetic test", data.test)]
    if data.tiles:
        sets.append(("magnetic tile", data.tiles))
    fidelity = []
    for suffix, same, target in bench.fidelity_models(config, bench.parts(box["result"]), initial):
        for label, images in sets:
            mine = ours_predict(model, images)
            theirs_out = anomalib_predict(same, transform, images, size, bench, fidelity=True)
            name = f"{bench.title} {backbone}" + (f", {suffix}" if suffix else "")
            fidelity.append(compare(name, label, mine, theirs_out, target=target))
            f = fidelity[-1]
            log(f"  fidelity{', ' + suffix if suffix else ''} on {label}: Spearman "
                f"{f.spearman:.4f}, Pearson {f.pearson:.5f}")  # fmt: skip
    settings = {
        "size": size,
        "train_images": len(data.train),
        "test_images": len(data.test),
        "epochs": epochs,
        "batch_size": config.batch_size,
        "ours_epochs_run": model.summary.epochs_run,
        "ours_best_epoch": model.summary.best_epoch,
        "fit_seconds_per_run": times,
        "ours_variants": variants,
    }
    runs = ", ".join(f"{t:.1f}" for t in times["ours"])
    notes = [
        f"fit runs, s: ours {runs}; anomalib {', '.join(f'{t:.1f}' for t in times['anomalib'])}"
    ]
    nan = sum(int((~np.isfinite(m)).sum()) for m in (theirs_test[1], theirs_subtle[1]))
    if nan:
        notes.append(f"anomalib's test maps hold {nan} non-finite values")
    notes += extra_notes
    return Row(bench.title, backbone, settings, ours, theirs, fidelity, notes)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


OPTIMISERS = {
    "STFPM": ("SGD lr 0.4, momentum 0.9, wd 1e-4; loss summed over the batch",
              "SGD lr 0.4, momentum 0.9, wd 1e-3; loss summed over the batch"),
    "CFA": ("AdamW lr 1e-3, wd 5e-4",
            "AdamW lr 1e-3, wd 5e-4, amsgrad; loss x1000; CoordConv descriptor"),
    "FastFlow": ("Adam lr 1e-3, wd 1e-5; NLL per dimension",
                 "Adam lr 1e-3, wd 1e-5; NLL summed; learned LayerNorm and global affines"),
    "RD4AD": ("Adam lr 5e-3, betas (0.5, 0.999); `loss=flattened` (one cosine distance per "
              "flattened level, the official code's)",
              "Adam lr 5e-3, betas (0.5, 0.99); one cosine distance per flattened level"),
    "SimpleNet": ("AdamW lr 1e-4 (adaptor), Adam lr 2e-4, wd 1e-5 (discriminator); Gaussian "
                  "noise everywhere; truncated L1",
                  "SuperSimpleNet: AdamW lr 1e-4 / 2e-4, wd 1e-2 / 1e-5, x0.4 at 80 % and 90 % "
                  "of the epochs; noise in Perlin masks; truncated L1 + focal losses, "
                  "classification head trained alongside; scored by its map's maximum"),
}  # fmt: skip


def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def describe_run(index: int, meta: dict) -> list[str]:
    """One run of the results file, from its stored metadata: command, duration, load, data."""
    a, machine = meta["args"], meta["machine"]
    size, seed = int(a["size"]), int(a["seed"])
    tiles = meta.get("tile_summary") or (
        f"magnetic tile, {2 * int(a['tiles'])} test images of setting 1 (seed {seed})"
        if int(a["tiles"]) else "no magnetic-tile images"
    )  # fmt: skip
    mode = "quick" if a["quick"] == "True" else "full"
    date = f" on {meta['date']}" if meta.get("date") else ""
    return [
        f"- Run {index + 1} ({', '.join(meta['titles'])}): `{meta['command']}` "
        f"({mode} mode){date}, "
        f"took {meta['minutes']:.1f} min; load average {machine['load_start']:.1f} at start, "
        f"{machine['load_end']:.1f} at end; anomalib {meta['versions']['anomalib']}, torch "
        f"{meta['versions']['torch']}. Data: synthetic scenes of {size} px, {a['train']} "
        f"training images (seed {seed}), {a['test']} test images (seed {seed + 1}) and as many "
        f"subtle ones (seed {seed + 2}, defects at {float(a['alpha']):.0%} contrast); fidelity "
        f"also on {tiles}; the fastest of {a['repeats']} fit(s) per side."
    ]  # fmt: skip


def report(rows: list[Row], runs: list[dict]) -> str:
    titles = list(dict.fromkeys(row.method for row in rows))
    names = ", ".join(titles[:-1]) + f" and {titles[-1]}" if len(titles) > 1 else titles[0]
    lines = [
        f"# {names}: vad_inspection vs anomalib {anomalib.__version__}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs; one "
        "torch thread on both sides. Each method's rows come from the run named below (a run "
        "with `--methods` replaces the rows of those methods only). Data: synthetic scenes "
        "(`tests/scenes.py`): defect-free training images, test images (every second one with "
        "a defect), and as many subtle test scenes (the same kind, each defect blended into its "
        "texture at a low contrast, as the plain scenes' image AUROC saturates at 1).",
        "",
        *[line for i, meta in enumerate(runs) for line in describe_run(i, meta)],
        "",
        "**Caveat:** all weights are seeded random (backbone: our torchvision initialisation, "
        "copied into anomalib's), as no pretrained weights can be downloaded here. AUROC on "
        "these scenes says whether the two implementations learn alike on a task random "
        "features can solve, not how good either is on real defects; the images are small and "
        "the epochs few to keep each run within ~20 minutes on two shared cores.",
        "",
        "## (b) and (c): trained independently from the same initialisation",
        "",
        "Same images in the same batches and order, same epochs; each side its own loss and "
        "optimiser. Fit: ours is the whole `fit` (preprocessing, teacher cache, training, ONNX "
        "export; training alone in brackets), anomalib's its training loop (CFA with its "
        "memory-bank initialisation) with its PreProcessor applied per batch; the fastest of "
        "the run's fits per side, the sides alternating, after an untimed warm-up.",
        "",
        "| method | backbone | px, epochs x batch | side | optimiser and loss | fit s "
        "| image AUROC | pixel AUROC | subtle: image AUROC | subtle: pixel AUROC |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        s = row.settings
        for name, side, opt in (
            ("ours", row.ours, OPTIMISERS[row.method][0]),
            ("anomalib", row.theirs, OPTIMISERS[row.method][1]),
        ):
            fit = f"{side.fit_s:.1f}"
            if name == "ours":
                fit += f" ({side.train_s:.1f})"
            lines.append(
                f"| {row.method} | {row.backbone} | {s['size']}, {s['epochs']} x "
                f"{s['batch_size']} | {name} | "
                f"{opt} | {fit} | {fmt(side.image_auroc)} | {fmt(side.pixel_auroc)} | "
                f"{fmt(side.subtle_image_auroc)} | {fmt(side.subtle_pixel_auroc)} |"
            )
    lines += [
        "",
        "Differences are ours - anomalib; the target is |d image AUROC| <= 0.02 on the plain "
        "scenes. Fit ratio: ours / anomalib (below 1: ours is faster); training only: ours "
        "without preprocessing and export.",
        "",
        "| method | backbone | fit ratio | training-only ratio | d image AUROC | within 0.02 "
        "| d pixel AUROC | subtle: d image AUROC | subtle: d pixel AUROC |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        o, t = row.ours, row.theirs
        d = o.image_auroc - t.image_auroc
        lines.append(
            f"| {row.method} | {row.backbone} | {o.fit_s / t.fit_s:.2f} | "
            f"{o.train_s / t.train_s:.2f} | {d:+.3f} | {'yes' if abs(d) <= 0.02 else 'NO'} | "
            f"{o.pixel_auroc - t.pixel_auroc:+.3f} | "
            f"{o.subtle_image_auroc - t.subtle_image_auroc:+.3f} | "
            f"{o.subtle_pixel_auroc - t.subtle_pixel_auroc:+.3f} |"
        )
    lines += [
        "",
        "## (a) Fidelity: our trained weights copied into anomalib, same inputs",
        "",
        "Max diff: largest |ours - anomalib| relative to anomalib's largest value (scores; maps "
        "over all pixels). Target: Spearman >= 0.99 and Pearson >= 0.99.",
        "",
        "| comparison | data | images | image-score Spearman | map Pearson | max score diff "
        "| max map diff | met |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        for f in row.fidelity:
            met = "-" if f.met is None else "yes" if f.met else "NO"
            lines.append(
                f"| {f.name} | {f.data} | {f.n} | {f.spearman:.4f} | {f.pearson:.5f} | "
                f"{f.score_diff:.1e} | {f.map_diff:.1e} | {met} |"
            )
    lines += ["", "## What differs between the two sides", ""]
    lines += [f"- {d}" for d in DIFFERENCES]
    notes = [f"{r.method} {r.backbone}: {n}" for r in rows for n in r.notes]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


DIFFERENCES = [
    "All: ours trains on all images (`val_fraction=0`) for all epochs and keeps the epoch of "
    "the lowest training loss; anomalib keeps the last epoch.",
    "STFPM: identical networks, map and score, and the same step (SGD lr 0.4, momentum 0.9, on "
    "the loss summed over the images of a batch); anomalib's weight decay is 1e-3 (ours 1e-4, "
    "the paper's).",
    "CFA: anomalib's descriptor is a CoordConv (two coordinate channels; zero weights when ours "
    "is copied in, trained from zero in (b)). Same patch score: `softmin(d)_1 * d_1` of Euclidean "
    "distances (as the authors' code). anomalib computes distances without centring (float32 "
    "cancellation) and uses AdamW with amsgrad and a loss x1000.",
    "CFA training cost: ours finds each patch's K + J nearest centroids over the full distance "
    "matrix without gradient, then recomputes those distances exactly, with gradient, from the "
    "(T, K + J, D) differences; anomalib differentiates the full distance matrix (one matrix "
    "product) once. Ours does more work per step at these bank sizes.",
    "FastFlow: the flows are mapped exactly (subnet width: ours `hidden_ratio=0.5` = anomalib's "
    "1.0 -- our default 1.0 is twice its width; last subnet layer rescaled for anomalib's 0.1 "
    "output factor and `tanh(0.1 a)` clamp; permutation into `w_perm`; global affine and "
    "LayerNorm affine at identity). In (b) anomalib also trains its LayerNorm affine (per "
    "element) and the global affine of every block, and its NLL is not divided by the "
    "dimensions. anomalib runs the frozen backbone at every step; ours caches its features.",
    "STFPM: ours caches the teacher's features; anomalib runs the teacher at every step.",
    "RD4AD: ours in the official code's layout (`mff_fusion=False, oce_blocks=2, "
    "decoder_blocks=2, decoder_relu=True`; our default adds the paper's 1x1 fusion convolution, "
    "which the official code and anomalib define but never call, and has one block per decoder "
    "level without a final ReLU), mapped module for module: same networks, map (per level 1 - "
    "cosine, upsampled with the corners aligned, summed, Gaussian sigma 4) and score. Both "
    "train on one cosine per flattened level and image (ours: `loss=flattened`, the official "
    "code's; our default is the paper's, per position: the notes give its AUROC, and our "
    "default layout's); anomalib's Adam has beta2 0.99 (ours 0.999). anomalib runs the encoder "
    "at every step; ours caches its features.",
    "SimpleNet: anomalib 2.7 has no SimpleNet; its SuperSimpleNet keeps SimpleNet's adaptor and "
    "discriminator (its segmentation head), which take ours (our standardisation folded into "
    "the adaptor, the discriminator's last layer negated). Not SimpleNet's: its features "
    "(taps upsampled to twice the first tap's grid, then 3x3-averaged; ours: each tap averaged "
    "on its grid, then upsampled to the first tap's), the sigmoid on its map (undone for (a)), "
    "its image score from a classification head (scored here by its map's maximum, "
    "SimpleNet's score; the head's AUROC is in the notes), its 25 px "
    "smoothing kernel (ours 33); hence (a) on our features (target) and on its own (diagnostic). "
    "In (b) it trains as SuperSimpleNet: Perlin-masked noise on about half of a doubled batch, "
    "truncated L1 + focal losses, AdamW for both parts, learning rate x0.4 at 80 % and 90 % of "
    "the epochs; its noise deviation set to ours (0.1 in our standardised units, which its "
    "adaptor starts in). It runs the backbone at every step, on a grid 4 times ours; ours caches "
    "the features.",
]


# ---------------------------------------------------------------------------------------------
# Pins for tests/test_anomalib_fidelity.py
# ---------------------------------------------------------------------------------------------


def write_pins(path: Path, methods: Sequence[str]) -> None:
    """anomalib's figures on the fixed input of ``tests/anomalib_pins.py`` for ``methods``; the
    pin file's entries of the other methods stay as they are (if it was written for the same
    anomalib, torch and input)."""
    size = anomalib_pins.SIZE
    pins: dict = {
        "about": "anomalib's image scores and anomaly maps for the fixed input and seeded weights "
        "of tests/anomalib_pins.py; written by benchmarks/vs_anomalib_trained.py --pin",
        "anomalib": anomalib.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "size": size,
        "input_sha256": anomalib_pins.digest(anomalib_pins.inputs(size)),
        "methods": {},
    }
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        same = all(old.get(k) == pins[k] for k in ("anomalib", "torch", "size", "input_sha256"))
        kept = {k: v for k, v in old["methods"].items() if k not in methods}
        if kept and not same:
            raise SystemExit(f"{path} was pinned with other versions or input: --pin all methods")
        pins["methods"].update(kept)
    for key in methods:
        size = anomalib_pins.size_of(key)
        images = anomalib_pins.inputs(size)
        bench = BENCHES[key]
        nets = anomalib_pins.networks(key)
        config = nets["config"]
        transform = bench.transform(size)
        check_inputs(transform, images, size)
        fidelity = False  # anomalib's outputs as they are (see Bench.outputs)
        if key == "stfpm":
            module = bench.build(config, {"student": nets["student"]})
        elif key == "cfa":
            module = bench.build(config, {"descriptor": nets["descriptor"]})
            loader = [
                types.SimpleNamespace(image=anomalib_input(anomalib_pins.bank_inputs(), transform))
            ]
            module.model.initialize_centroid(data_loader=loader)  # anomalib's own memory bank
            bank = module.model.memory_bank.t()
            ours_bank = nets["memory"]
            bank_diff = float((bank - ours_bank).abs().max() / ours_bank.abs().max())
            log(f"  CFA memory bank, anomalib's vs ours: max diff {bank_diff:.1e}")
        elif key == "fastflow":
            module = bench.build(config, {"flows": nets["flows"]})
        elif key == "rd4ad":
            module = bench.build(config, {"student": nets["student"]})
        else:  # SuperSimpleNet on our features, at our smoothing kernel's width (see the test)
            module = bench.build(config, {"heads": nets["heads"]})
            module.model.feature_extractor = _OurFeatures(nets["features"])
            own_kernel = anomalib_predict(module, transform, images, size, bench, fidelity=True)
            width = gaussian_kernel_size(config.sigma)
            module.model.anomaly_map_generator.smoothing = GaussianBlur2d(
                kernel_size=width, sigma=config.sigma
            )
            fidelity = True
        scores, maps = anomalib_predict(module, transform, images, size, bench, fidelity)
        entry = {
            "fingerprint": anomalib_pins.fingerprint(nets),
            "scores": anomalib_pins.encode(scores),
            "maps": anomalib_pins.encode(maps),
        }
        if size != anomalib_pins.SIZE:
            entry.update(size=size, input_sha256=anomalib_pins.digest(images))
        if key == "simplenet":
            entry["about"] = (
                "SuperSimpleNet's segmentation path on our patch features, its sigmoid undone; "
                f"smoothed by its GaussianBlur2d at our kernel width ({width} px)"
            )
            entry["own_kernel"] = {
                "about": "the same with SuperSimpleNet's own kernel width (2 ceil(3 sigma) + 1)",
                "scores": anomalib_pins.encode(own_kernel[0]),
                "maps": anomalib_pins.encode(own_kernel[1]),
            }
        if key == "cfa":
            entry["memory_bank_diff"] = bank_diff
            x = anomalib_input(images, transform)
            squared = squared_score_map(module.model.eval(), x, config.k)[:, 0].numpy()
            entry["squared_score"] = {
                "about": "anomalib's map with our squared-distance patch score (see the benchmark)",
                "scores": anomalib_pins.encode(squared.max(axis=(1, 2))),
                "maps": anomalib_pins.encode(squared),
            }
        pins["methods"][key] = entry
        log(f"  {bench.title}: scores {np.array2string(scores, precision=6)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pins, indent=1) + "\n", encoding="utf-8")
    log(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 px, fewer images and epochs")
    parser.add_argument("--pin", action="store_true", help="write tests/data/anomalib_pins.json")
    parser.add_argument(
        "--methods", default=",".join(BENCHES), help=f"comma-separated, of {','.join(BENCHES)}"
    )
    parser.add_argument(
        "--report", action="store_true",
        help="only rewrite the Markdown report from the results JSON (no measuring)",
    )  # fmt: skip
    parser.add_argument(
        "--fresh", action="store_true",
        help="write the results file anew (default: the rows of the methods run replace theirs, "
        "the other methods' rows stay)",
    )  # fmt: skip
    parser.add_argument("--size", type=int, help="image size, px (default 128, quick 64)")
    parser.add_argument("--train", type=int, help="training images (default 64, quick 32)")
    parser.add_argument("--test", type=int, help="test images, half with defects (60, quick 20)")
    parser.add_argument(
        "--epochs",
        help="method=epochs,... (default stfpm=20,cfa=10,fastflow=20,rd4ad=10,simplenet=10; "
        "quick: half)",
    )
    tiles = ROOT.parents[1] / "shared" / "data" / "magnetic_tile"
    parser.add_argument("--data", default=str(tiles), help="magnetic tile (fidelity only)")
    parser.add_argument("--tiles", type=int, help="normal magnetic-tile test images (16, quick 8)")
    parser.add_argument(
        "--alpha", type=float, default=0.1, help="defect contrast of the subtle test scenes"
    )
    parser.add_argument(
        "--repeats", type=int, help="fits per side, alternating, the fastest counts (2, quick 1)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="the report (with --pin: the pin file)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.pin:
        write_pins(args.out or anomalib_pins.PIN_FILE, args.methods.split(","))
        return 0
    args.size = args.size or (64 if args.quick else 128)
    args.train = args.train or (32 if args.quick else 64)
    args.test = args.test or (20 if args.quick else 60)
    args.repeats = args.repeats or (1 if args.quick else 2)
    args.tiles = args.tiles if args.tiles is not None else (8 if args.quick else 16)
    epochs = {"stfpm": 20, "cfa": 10, "fastflow": 20, "rd4ad": 10, "simplenet": 10}
    if args.quick:
        epochs = {key: value // 2 for key, value in epochs.items()}
    for item in filter(None, (args.epochs or "").split(",")):
        name, value = item.split("=")
        epochs[name] = int(value)
    out = args.out or ROOT / "results" / f"vs_anomalib_trained{'-quick' if args.quick else ''}.md"
    if args.report:
        raw = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
        out.write_text(report([Row.from_dict(r) for r in raw["rows"]], raw["runs"]), "utf-8")
        log(f"wrote {out}")
        return 0
    started = time.time()
    args.load_start = os.getloadavg()[0]
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])

    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(BENCHES))
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(BENCHES)}")
    data = synthetic(args.size, args.train, args.test, args.seed, args.alpha)
    if args.tiles:
        data.tiles, data.tile_summary = magnetic_tiles(args.data, args.size, args.tiles, args.seed)
    rows = []
    for key in methods:
        bench = BENCHES[key]
        for backbone in bench.backbones:
            rows.append(run(bench, backbone, data, epochs[key], args))
    meta = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "titles": [BENCHES[key].title for key in methods],
        "minutes": (time.time() - started) / 60,
        "machine": {"arch": platform.machine(), "cores": os.cpu_count(),
                    "load_start": args.load_start, "load_end": os.getloadavg()[0]},
        "versions": {"anomalib": anomalib.__version__, "torch": torch.__version__},
        "args": {k: str(v) for k, v in vars(args).items()},
        "tile_summary": data.tile_summary,
    }  # fmt: skip
    runs, rows = merged(out.with_suffix(".json"), meta, rows, fresh=args.fresh)
    text = report(rows, runs)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    raw = {"runs": runs, "rows": [row.to_dict() for row in rows]}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=float) + "\n")
    log(f"wrote {out}")
    return 0


def merged(path: Path, meta: dict, rows: list[Row], fresh: bool) -> tuple[list[dict], list[Row]]:
    """This run's rows with the rows the results file ``path`` holds for other methods (unless
    ``fresh``), in the order of :data:`BENCHES`, and the runs that measured them. A file of the
    earlier layout (one run: its metadata at the top level) is read as one run."""
    previous_runs: list[dict] = []
    previous: list[Row] = []
    if path.is_file() and not fresh:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if "runs" in raw:
            previous_runs = raw["runs"]
        else:
            titles = [BENCHES[key].title for key in raw["args"]["methods"].split(",")]
            previous_runs = [{**{k: v for k, v in raw.items() if k != "rows"}, "titles": titles}]
        previous = [Row.from_dict(r) for r in raw["rows"]]
    measured = {row.method for row in rows}
    kept = [row for row in previous if row.method not in measured]
    runs: list[dict] = []
    renumber: dict[int, int] = {}
    for row in kept:
        if row.run not in renumber:
            renumber[row.run] = len(runs)
            runs.append(previous_runs[row.run])
        row.run = renumber[row.run]
    for row in rows:
        row.run = len(runs)
    runs.append(meta)
    for index, run_meta in enumerate(runs):
        methods = {row.method for row in [*kept, *rows] if row.run == index}
        run_meta["titles"] = [t for t in run_meta["titles"] if t in methods]
    order = [bench.title for bench in BENCHES.values()]
    return runs, sorted([*kept, *rows], key=lambda row: order.index(row.method))


if __name__ == "__main__":
    sys.exit(main())
