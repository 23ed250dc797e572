#!/usr/bin/env python
"""PatchCore and PaDiM, ours against anomalib 2.7, in one process: speed, memory, AUROC, fidelity.

What it measures, on one magnetic-tile split (setting 1 of ``vad_inspection.eval.settings``) with
the same backbone and the same seeded random weights on both sides:

* fit time, per-image latency (preprocess + model + anomaly map; median and p90 of single-image
  calls, the two sides interleaved image by image), peak RSS growth during fit and inference,
  image AUROC and pixel AUROC, for PatchCore and PaDiM, ours and anomalib's, with ratios;
* fidelity: Spearman of image scores and Pearson of anomaly maps (all pixels) between the two
  sides -- PatchCore with the full memory bank (no coreset), PatchCore with its coreset, PaDiM
  with the same random channel subset;
* the issue's targets: PatchCore (ResNet18 layer2+3, 10 % coreset) fit on 200 images >= 30x faster
  than anomalib's and under 60 s; MobileNetV2 PatchCore and PaDiM inference <= 25 ms per image.
  Targets are reported, never asserted. AUROC with random weights says nothing about quality
  (expect 0.4-0.6); it is there to show the two sides agree.

How the comparison is kept fair:

* Same weights: anomalib's models are built with ``pre_trained=False`` and their timm backbone gets
  the state dict of our seeded torchvision backbone (resnet18: same names; mobilenetv2_100 vs
  torchvision mobilenet_v2: same tensor order, mapped by position); the taps of both are checked
  to be equal on a random input before anything is measured.
* Same inputs: every image is resized to 256x256 once (``preprocess.resize_image``); ours gets
  those uint8 images, anomalib gets them as float tensors in [0, 1] (gray replicated to RGB, as
  anomalib's image reader does) through its own ``PreProcessor`` transform (Resize is a no-op at
  256, then ImageNet normalisation); the resulting tensor is checked to equal our
  ``to_network_input``.
* anomalib's ``torch_model`` modules (PatchcoreModel, PadimModel) are called directly, bypassing
  Lightning: train mode + its ``subsample_embedding`` / ``fit`` to fit (as its Lightning module
  does), eval mode under ``torch.inference_mode`` to predict. Scores and maps are the torch
  model's raw outputs (before anomalib's PostProcessor normalisation, which is monotone).
* anomalib's KCenterGreedy takes about an hour on 200 images here. It runs for at most
  ``--anomalib-timeout`` seconds; past that its fit time is extrapolated linearly (every greedy
  iteration costs the same: a pass over all projected patches) and the table says so. Its
  selection is then completed with our exact greedy run on anomalib's own projected features from
  anomalib's own start point, and the indices anomalib had already chosen are compared with ours.

Install (one environment holding both sides)::

    python -m venv /tmp/venv_anomalib
    /tmp/venv_anomalib/bin/pip install 'anomalib==2.7.*'
    /tmp/venv_anomalib/bin/pip install -e '.[core,train]'   # from the repository root

Run from the repository root::

    /tmp/venv_anomalib/bin/python benchmarks/vs_anomalib.py --quick   # 40 training images, minutes
    /tmp/venv_anomalib/bin/python benchmarks/vs_anomalib.py           # 200 training images

Writes ``benchmarks/results/vs_anomalib.md`` (``vs_anomalib-quick.md`` with ``--quick``) and a
JSON file with the raw figures beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from scipy.stats import pearsonr, spearmanr  # noqa: E402

from vad_inspection.data import open_dataset  # noqa: E402
from vad_inspection.eval.metrics import auroc, pixel_auroc  # noqa: E402
from vad_inspection.eval.resources import PeakMemory  # noqa: E402
from vad_inspection.eval.settings import build_split  # noqa: E402
from vad_inspection.vad.backbones import get_spec, load_onnx, torch_feature_model  # noqa: E402
from vad_inspection.vad.coreset import greedy_coreset  # noqa: E402
from vad_inspection.vad.knn import NearestNeighbour  # noqa: E402
from vad_inspection.vad.patchcore import PatchCore, PatchCoreConfig  # noqa: E402
from vad_inspection.vad.preprocess import (  # noqa: E402
    InputSpec,
    resize_image,
    resize_mask,
    to_network_input,
)

try:  # anomalib prints warnings about optional packages on import
    with contextlib.redirect_stderr(open(os.devnull, "w")):
        import anomalib
        import anomalib.models.image.patchcore.torch_model as anomalib_patchcore_module
        from anomalib.models.components import KCenterGreedy
        from anomalib.models.image import Padim, Patchcore
        from anomalib.models.image.padim.torch_model import PadimModel
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel
except ImportError as error:  # pragma: no cover - environment problem, say what to install
    sys.exit(f"anomalib is not importable ({error}); see the module docstring for the install")

SIZE = (256, 256)
ROOT = Path(__file__).resolve().parent
ANOMALIB_BATCH = 32  # anomalib's default train/eval batch size
#: our backbone name -> (timm name, {our tap: timm layer})
TIMM = {
    "resnet18": ("resnet18", {"layer1": "layer1", "layer2": "layer2", "layer3": "layer3"}),
    "mobilenet_v2": (
        "mobilenetv2_100",
        {"features.3": "blocks.1", "features.6": "blocks.2", "features.13": "blocks.4"},
    ),
}
#: d of PaDiM: anomalib's ResNet18 default, which our PaDiM also uses for MobileNetV2
PADIM_FEATURES = {"resnet18": 100, "mobilenet_v2": 100}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def release_memory() -> None:
    """Collect and hand freed heap back to the OS, so RSS growth of the next block is its own."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclass
class Data:
    train: list[np.ndarray]  # (256, 256, 1) uint8
    test: list[np.ndarray]
    labels: np.ndarray  # (N,) 0/1
    masks: np.ndarray  # (N, 256, 256) bool
    summary: str


def load_data(root: str, n_train: int, n_test_normal: int, seed: int) -> Data:
    dataset = open_dataset(f"magnetic_tile:{root}")
    split = build_split(dataset, 1, seed=seed, max_train=n_train, max_test_normal=n_test_normal)
    train = [resize_image(s.image(), SIZE) for s in split.train]
    test = [resize_image(s.image(), SIZE) for s in split.test]
    masks = np.stack([resize_mask(s.mask(), SIZE) for s in split.test])
    labels = np.array([s.label for s in split.test])
    return Data(train, test, labels, masks, split.summary())


def anomalib_input(images: Sequence[np.ndarray], transform: Callable) -> torch.Tensor:
    """What anomalib's pipeline gives its model: RGB float in [0, 1], then its PreProcessor."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return transform(x.expand(-1, 3, -1, -1))


def batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------------------------------------
# Same weights on both sides
# ---------------------------------------------------------------------------------------------


def share_weights(timm_extractor, backbone: str, seed: int) -> None:
    """Copy our seeded torchvision backbone into anomalib's timm feature extractor and check it.

    timm's tensors come in the same order as torchvision's (names differ for MobileNetV2), so they
    are mapped by position; timm keeps blocks past the deepest tap, which stay as they are (they do
    not influence the taps). Equality of the taps on a random input proves the mapping.
    """
    ours = torch_feature_model(backbone, "random", seed)
    source = list(ours.state_dict().values())
    target = timm_extractor.feature_extractor
    names = list(target.state_dict())
    state = target.state_dict()
    for name, tensor in zip(names, source, strict=False):
        if state[name].shape != tensor.shape:
            raise RuntimeError(
                f"weight mapping broke at {name}: "
                f"{tuple(state[name].shape)} vs {tuple(tensor.shape)}"
            )
        state[name] = tensor.clone()
    target.load_state_dict(state)
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = timm_extractor(x)
        mine = dict(zip(get_spec(backbone).taps, ours(x), strict=True))
    for tap, layer in TIMM[backbone][1].items():
        if layer in theirs:
            scale = float(mine[tap].abs().max())
            err = float((theirs[layer] - mine[tap]).abs().max())
            if err > 1e-4 * scale:
                raise RuntimeError(f"{backbone} {tap}/{layer}: taps differ by {err} ({scale=})")


# ---------------------------------------------------------------------------------------------
# anomalib's coreset, with a time cap
# ---------------------------------------------------------------------------------------------


class CoresetTimeout(Exception):
    pass


class CappedKCenterGreedy(KCenterGreedy):
    """anomalib's KCenterGreedy, unchanged, that records its start point and picks and stops at a
    deadline (checked after each greedy iteration)."""

    deadline: float | None = None
    last: CappedKCenterGreedy | None = None

    def __init__(self, embedding: torch.Tensor, sampling_ratio: float) -> None:
        super().__init__(embedding, sampling_ratio)
        self.start_index: int | None = None
        self.picked: list[int] = []
        self.loop_started: float | None = None
        self.stopped: float | None = None
        type(self).last = self

    def update_distances(self, cluster_center) -> None:
        if self.loop_started is None:  # projection done: the greedy loop starts here
            self.loop_started = time.perf_counter()
            self.start_index = int(cluster_center)
        super().update_distances(cluster_center)

    def get_new_idx(self) -> torch.Tensor:
        idx = super().get_new_idx()
        self.picked.append(int(idx))
        if self.deadline is not None and time.perf_counter() > self.deadline:
            self.stopped = time.perf_counter()
            raise CoresetTimeout
        return idx


anomalib_patchcore_module.KCenterGreedy = CappedKCenterGreedy  # what subsample_embedding builds


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass
class Side:
    fit_s: float = float("nan")
    fit_note: str = ""
    fit_rss_mb: float = float("nan")
    infer_rss_mb: float = float("nan")
    latency_ms: float = float("nan")
    latency_p90_ms: float = float("nan")
    image_auroc: float = float("nan")
    pixel_auroc: float = float("nan")
    scores: np.ndarray | None = field(default=None, repr=False)
    maps: np.ndarray | None = field(default=None, repr=False)

    def figures(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("scores", "maps")}


@dataclass
class Row:
    method: str
    backbone: str
    setup: str
    ours: Side
    theirs: Side
    available: bool = True
    note: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Fidelity:
    name: str
    n: int
    spearman: float
    pearson: float | None
    spearman_target: float | None  # None: a reference figure, no target
    pearson_target: float | None
    note: str = ""
    score_diff: float = float("nan")  # max |a - b| / max |b| of the image scores

    @property
    def met(self) -> bool | None:
        if self.spearman_target is None:
            return None
        ok = self.spearman >= self.spearman_target
        if self.pearson_target is not None:
            ok = ok and self.pearson is not None and self.pearson >= self.pearson_target
        return ok


def compare(
    name: str, a: Side, b: Side, s_target: float | None, p_target: float | None, note: str = ""
) -> Fidelity:
    rho = float(spearmanr(a.scores, b.scores).statistic)
    r = None
    if p_target is not None:
        r = float(pearsonr(a.maps.ravel().astype(np.float64), b.maps.ravel().astype(np.float64))[0])
    diff = float(np.abs(a.scores - b.scores).max() / np.abs(b.scores).max())
    return Fidelity(name, len(a.scores), rho, r, s_target, p_target, note, diff)


def quality(side: Side, data: Data) -> None:
    side.image_auroc = auroc(data.labels, side.scores)
    side.pixel_auroc = pixel_auroc(data.masks, side.maps)


def interleaved_latency(calls: dict[str, Callable], images: Sequence, warmup: int = 3) -> dict:
    """Median and p90 of single-image calls, the sides alternating image by image (and which one
    goes first alternating too), so that load from other jobs hits both alike."""
    names = list(calls)
    for i in range(warmup):
        for name in names:
            calls[name](images[i % len(images)])
    times: dict[str, list[float]] = {name: [] for name in names}
    for i, image in enumerate(images):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            calls[name](image)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {n: (float(np.median(t)), float(np.percentile(t, 90))) for n, t in times.items()}


def inference_rss(call: Callable, images: Sequence) -> float:
    release_memory()
    with PeakMemory(trace=False) as memory:
        for image in images:
            call(image)
    return memory.delta_rss_mb


def measure_inference(
    ours_side: Side,
    theirs_side: Side,
    model: object,
    theirs: torch.nn.Module,
    transform: Callable,
    data: Data,
    latency_images: int,
) -> None:
    """Single-image latency (the sides interleaved) and inference RSS of both, into the sides."""
    calls = {
        "ours": lambda image: model.predict([image]),
        "anomalib": lambda image: anomalib_predict(theirs, transform, [image]),
    }
    n = min(len(data.test), latency_images)
    latency = interleaved_latency(calls, data.test[:n])
    ours_side.latency_ms, ours_side.latency_p90_ms = latency["ours"]
    theirs_side.latency_ms, theirs_side.latency_p90_ms = latency["anomalib"]
    ours_side.infer_rss_mb = inference_rss(calls["ours"], data.test[:5])
    theirs_side.infer_rss_mb = inference_rss(calls["anomalib"], data.test[:5])
    log(f"  latency ours {ours_side.latency_ms:.1f} ms, anomalib {theirs_side.latency_ms:.1f} ms")


def timed(fn: Callable) -> tuple[object, float, float]:
    """(result, seconds, peak RSS growth MB) of ``fn()``."""
    release_memory()
    with PeakMemory(trace=False) as memory:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return result, seconds, memory.delta_rss_mb


# ---------------------------------------------------------------------------------------------
# PatchCore
# ---------------------------------------------------------------------------------------------


def anomalib_patchcore(backbone: str, seed: int) -> PatchcoreModel:
    timm_name, taps = TIMM[backbone]
    layers = [taps[t] for t in get_spec(backbone).patchcore_taps]
    model = PatchcoreModel(layers=layers, backbone=timm_name, pre_trained=False, num_neighbors=9)
    share_weights(model.feature_extractor, backbone, seed)
    return model


def anomalib_predict(model: torch.nn.Module, transform: Callable, images: Sequence) -> tuple:
    model.eval()
    scores, maps = [], []
    with torch.inference_mode():
        for part in batches(images, ANOMALIB_BATCH):
            out = model(anomalib_input(part, transform))
            scores.append(out.pred_score.reshape(-1).numpy())
            maps.append(out.anomaly_map[:, 0].numpy())
    return np.concatenate(scores), np.concatenate(maps)


def anomalib_patchcore_fit(
    model: PatchcoreModel, transform: Callable, images: Sequence, ratio: float, timeout: float,
    seed: int,
) -> dict:  # fmt: skip
    """anomalib's own fit (embedding in train mode, then subsample_embedding), capped in time."""
    torch.manual_seed(seed)  # KCenterGreedy's start point and sparse projection
    np.random.seed(seed)  # sklearn's sample_without_replacement inside the projection
    model.train()
    info: dict = {}
    release_memory()
    with PeakMemory(trace=False) as memory:
        start = time.perf_counter()
        CappedKCenterGreedy.deadline = start + timeout
        with torch.no_grad():
            for part in batches(images, ANOMALIB_BATCH):
                model(anomalib_input(part, transform))
            embedded = time.perf_counter()
            try:
                model.subsample_embedding(ratio)
                info["complete"] = True
            except CoresetTimeout:
                info["complete"] = False
        end = time.perf_counter()
    CappedKCenterGreedy.deadline = None
    sampler = CappedKCenterGreedy.last
    info["embed_s"] = embedded - start
    info["coreset_size"] = sampler.coreset_size
    info["projection_dim"] = int(sampler.features.shape[1])
    info["fit_rss_mb"] = memory.delta_rss_mb
    info["full_bank"] = sampler.embedding
    if info["complete"]:
        info["fit_s"] = end - start
        info["iterations_done"] = sampler.coreset_size - 1
        return info
    done = len(sampler.picked)
    per_iteration = (sampler.stopped - sampler.loop_started) / done
    remaining = sampler.coreset_size - 1 - done
    info["fit_s"] = (sampler.stopped - start) + per_iteration * remaining
    info["iterations_done"] = done
    info["per_iteration_s"] = per_iteration
    # Finish anomalib's selection with our exact greedy on anomalib's projected features and
    # start point; compare with the picks anomalib made before the deadline.
    features = sampler.features.numpy()
    selection = greedy_coreset(features, sampler.coreset_size, start=sampler.start_index)
    agree = np.asarray(selection[1 : 1 + done]) == np.asarray(sampler.picked)
    info["prefix_agree"] = int(np.argmin(agree)) if not agree.all() else done
    info["prefix_overlap"] = len(set(selection[1 : 1 + done].tolist()) & set(sampler.picked)) / done
    model.memory_bank = sampler.embedding[torch.from_numpy(np.asarray(selection))]
    return info


def ours_patchcore(backbone: str, onnx: bytes, ratio: float, seed: int) -> PatchCore:
    config = PatchCoreConfig(
        backbone=backbone, size=SIZE, coreset_ratio=ratio, seed=seed, map_alignment="reference"
    )  # anomalib's nearest upsampling, for map fidelity
    return PatchCore(config, onnx)


def limit_knn_chunk(model: PatchCore, max_bytes: float = 1e9) -> None:
    """Our kNN holds a (chunk x bank) distance matrix; with the full 200-image bank (205k rows) the
    default 4096-query chunk needs 3+ GB per matrix, so the fidelity-only full-bank model searches
    in smaller chunks (same results)."""
    rows = len(model.memory_bank)
    chunk = int(max(256, min(4096, max_bytes // (4 * rows))))
    if chunk < 4096:
        model._search = NearestNeighbour(model.memory_bank, chunk=chunk)


def run_patchcore(
    backbone: str, ratio: float, data: Data, args, fidelity: list[Fidelity], repeats: int
) -> Row:
    log(f"PatchCore {backbone}: coreset {ratio:.0%}, {len(data.train)} training images")
    onnx = load_onnx(backbone, "random", args.seed)
    ours_side, theirs_side = Side(), Side()

    # -- ours: fit (median of `repeats`), score the test set
    times, rss = [], []
    for _ in range(repeats):
        model = ours_patchcore(backbone, onnx, ratio, args.seed)
        _, seconds, grown = timed(lambda m=model: m.fit(data.train))
        times.append(seconds)
        rss.append(grown)
    ours_side.fit_s = float(np.median(times))
    ours_side.fit_rss_mb = float(max(rss))
    ours_side.fit_note = f"median of {repeats}" if repeats > 1 else ""
    log(f"  ours fit {ours_side.fit_s:.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)})")
    prediction = model.predict(data.test)
    ours_side.scores, ours_side.maps = prediction.scores, prediction.maps

    # -- anomalib: fit once (capped), score the test set
    theirs = anomalib_patchcore(backbone, args.seed)
    transform = Patchcore.configure_pre_processor(image_size=SIZE).transform
    check_inputs(transform, data.test[:4])
    info = anomalib_patchcore_fit(
        theirs, transform, data.train, ratio, args.anomalib_timeout, args.seed
    )
    theirs_side.fit_s, theirs_side.fit_rss_mb = info["fit_s"], info["fit_rss_mb"]
    if not info["complete"]:
        theirs_side.fit_note = (
            f"extrapolated: {info['iterations_done']} of {info['coreset_size'] - 1} greedy "
            f"iterations in the {args.anomalib_timeout:.0f} s cap, "
            f"{info['per_iteration_s'] * 1e3:.0f} ms each"
        )
    log(
        f"  anomalib fit {theirs_side.fit_s:.1f} s ({'complete' if info['complete'] else 'extrap.'}"
        f"; embedding {info['embed_s']:.1f} s, projection to {info['projection_dim']} dims)"
    )
    theirs_side.scores, theirs_side.maps = anomalib_predict(theirs, transform, data.test)
    for side in (ours_side, theirs_side):
        quality(side, data)

    # -- latency and inference memory, interleaved
    measure_inference(ours_side, theirs_side, model, theirs, transform, data, args.latency_images)

    note = ""
    if not info["complete"]:
        note = (
            f"anomalib coreset completed by our exact greedy on anomalib's projected features "
            f"from its start point; its first {info['iterations_done']} picks vs ours: identical "
            f"for the first {info['prefix_agree']}, {info['prefix_overlap']:.1%} of them shared"
        )
        if info["prefix_agree"] < info["iterations_done"]:
            note += " (near-ties of float32 distances break differently, then the paths part)"
    fidelity.append(
        compare(
            f"PatchCore {backbone}, coreset {ratio:.0%} (own projections and start points)",
            ours_side,
            theirs_side,
            0.95,
            None,
            note,
        )
    )
    # The coreset's own randomness, for scale: ours against ours with another projection and
    # start point (PatchCoreConfig.seed; the backbone weights stay the same).
    other = ours_patchcore(backbone, onnx, ratio, args.seed + 1)
    other.fit(data.train)
    c = Side()
    prediction = other.predict(data.test)
    c.scores, c.maps = prediction.scores, prediction.maps
    fidelity.append(
        compare(
            f"PatchCore {backbone}, coreset {ratio:.0%}: ours seed {args.seed} vs ours seed "
            f"{args.seed + 1} (reference: the coreset's own randomness)",
            ours_side,
            c,
            None,
            None,
        )
    )
    del other

    # -- fidelity with the full memory bank (no coreset on either side)
    full_ours = ours_patchcore(backbone, onnx, 1.0, args.seed)
    full_ours.fit(data.train)
    limit_knn_chunk(full_ours)
    a = Side()
    prediction = full_ours.predict(data.test)
    a.scores, a.maps = prediction.scores, prediction.maps
    theirs.memory_bank = info.pop("full_bank")
    CappedKCenterGreedy.last = None  # frees its projected features
    b = Side()
    b.scores, b.maps = anomalib_predict(theirs, transform, data.test)
    rows_ours, rows_theirs = len(full_ours.memory_bank), len(theirs.memory_bank)
    bank_note = f"memory bank {rows_ours} patches on both sides"
    if rows_ours != rows_theirs:
        bank_note = f"banks differ: ours {rows_ours} patches, anomalib {rows_theirs}"
    fidelity.append(compare(f"PatchCore {backbone}, full memory bank", a, b, 0.99, 0.98, bank_note))
    del full_ours, theirs, model
    release_memory()
    extra = {k: v for k, v in info.items() if not isinstance(v, torch.Tensor)}
    return Row("PatchCore", backbone, f"coreset {ratio:.0%}", ours_side, theirs_side, extra=extra)


def check_inputs(transform: Callable, images: Sequence) -> None:
    """anomalib's preprocessing of our 256x256 images must give our network input exactly."""
    theirs = anomalib_input(images, transform).numpy()
    ours = to_network_input(images, InputSpec.for_channels(1, SIZE))
    err = float(np.abs(theirs - ours).max())
    if err > 1e-5:
        raise RuntimeError(f"anomalib's preprocessing differs from ours by {err}")


# ---------------------------------------------------------------------------------------------
# PaDiM
# ---------------------------------------------------------------------------------------------


def ours_padim_available() -> str:
    try:
        import vad_inspection.vad.padim  # noqa: F401
    except ImportError as error:
        return f"vad_inspection.vad.padim not importable ({error})"
    return ""


def ours_padim(backbone: str, onnx: bytes, channels: np.ndarray, seed: int):
    from vad_inspection.vad.padim import PaDiM, PaDiMConfig

    config = PaDiMConfig(
        backbone=backbone, size=SIZE, seed=seed, channel_index=tuple(int(c) for c in channels)
    )
    return PaDiM(config, onnx)


def anomalib_padim(backbone: str, seed: int) -> PadimModel:
    timm_name, taps = TIMM[backbone]
    torch.manual_seed(seed)  # the random channel subset anomalib draws at construction
    model = PadimModel(
        backbone=timm_name,
        layers=[taps[t] for t in get_spec(backbone).taps],
        pre_trained=False,
        n_features=PADIM_FEATURES[backbone],
    )
    share_weights(model.feature_extractor, backbone, seed)
    return model


def anomalib_padim_fit(model: PadimModel, transform: Callable, images: Sequence) -> None:
    model.train()
    with torch.no_grad():
        for part in batches(images, ANOMALIB_BATCH):
            model(anomalib_input(part, transform))
        model.fit()


def run_padim(backbone: str, data: Data, args, fidelity: list[Fidelity], repeats: int) -> Row:
    log(f"PaDiM {backbone}: {PADIM_FEATURES[backbone]} random channels")
    if missing := ours_padim_available():
        return Row("PaDiM", backbone, "", Side(), Side(), available=False, note=missing)
    onnx = load_onnx(backbone, "random", args.seed)
    ours_side, theirs_side = Side(), Side()
    theirs = anomalib_padim(backbone, args.seed)
    channels = theirs.idx.numpy().astype(np.int64)
    setup = f"{len(channels)} of {theirs.n_features_original} channels"

    times, rss = [], []
    for _ in range(repeats):
        model = ours_padim(backbone, onnx, channels, args.seed)
        _, seconds, grown = timed(lambda m=model: m.fit(data.train))
        times.append(seconds)
        rss.append(grown)
    ours_side.fit_s, ours_side.fit_rss_mb = float(np.median(times)), float(max(rss))
    ours_side.fit_note = f"median of {repeats}" if repeats > 1 else ""
    prediction = model.predict(data.test)
    ours_side.scores, ours_side.maps = prediction.scores, prediction.maps

    transform = Padim.configure_pre_processor(image_size=SIZE).transform
    check_inputs(transform, data.test[:4])
    _, theirs_side.fit_s, theirs_side.fit_rss_mb = timed(
        lambda m=theirs: anomalib_padim_fit(m, transform, data.train)
    )
    log(f"  fit ours {ours_side.fit_s:.2f} s, anomalib {theirs_side.fit_s:.2f} s")
    theirs_side.scores, theirs_side.maps = anomalib_predict(theirs, transform, data.test)
    for side in (ours_side, theirs_side):
        quality(side, data)

    measure_inference(ours_side, theirs_side, model, theirs, transform, data, args.latency_images)
    fidelity.append(
        compare(f"PaDiM {backbone}, same channel subset", ours_side, theirs_side, 0.99, 0.98)
    )
    del model, theirs
    release_memory()
    return Row("PaDiM", backbone, setup, ours_side, theirs_side)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def ratio(theirs: float, ours: float) -> str:
    if not (np.isfinite(theirs) and np.isfinite(ours)) or ours <= 0:
        return "n/a"
    return f"{theirs / ours:.1f}x"


def report(rows: list[Row], fidelity: list[Fidelity], data: Data, args, started: float) -> str:
    n_train = len(data.train)
    lines = [
        f"# PatchCore and PaDiM: vad_inspection vs anomalib {anomalib.__version__}",
        "",
        f"Magnetic tile, {data.summary}; images resized once to 256x256; seeded random weights "
        f"(seed {args.seed}) shared by both sides. Mode: {'quick' if args.quick else 'full'}. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), NumPy BLAS threads "
        f"{args.numpy_blas_threads or 'as installed'}; load average at start "
        f"{args.load_start:.1f}, at end {os.getloadavg()[0]:.1f} (other jobs share the machine). "
        f"Run took {(time.time() - started) / 60:.1f} min.",
        "",
        "Latency: single 256x256 uint8 image, preprocess + model + anomaly map, median (p90) of "
        f"{min(len(data.test), args.latency_images)} calls, the two sides interleaved. Fit RSS / "
        "infer RSS: peak growth of the process's resident memory during fit / during 5 "
        "single-image predictions (same process; freed heap returned to the OS before each). "
        "AUROC with random weights is not a quality figure (about 0.5 is expected); it only "
        "shows that the two sides agree.",
        "",
        "| method | backbone | setup | side | fit s | latency ms | fit RSS MB | infer RSS MB "
        "| image AUROC | pixel AUROC |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for row in rows:
        if not row.available:
            lines.append(f"| {row.method} | {row.backbone} | | both | not available | | | | | |")
            notes.append(f"{row.method} {row.backbone}: {row.note}")
            continue
        for name, side in (("ours", row.ours), ("anomalib", row.theirs)):
            fit = fmt(side.fit_s, 2 if side.fit_s < 10 else 1)
            if side.fit_note.startswith("extrapolated"):
                fit = f"~{fit} (extrapolated)"
                notes.append(f"{row.method} {row.backbone} anomalib fit: {side.fit_note}")
            lines.append(
                f"| {row.method} | {row.backbone} | {row.setup} | {name} | {fit} | "
                f"{fmt(side.latency_ms)} ({fmt(side.latency_p90_ms)}) | "
                f"{fmt(side.fit_rss_mb, 0)} | {fmt(side.infer_rss_mb, 0)} | "
                f"{fmt(side.image_auroc, 3)} | {fmt(side.pixel_auroc, 3)} |"
            )
    lines += [
        "",
        "Ratios (anomalib / ours; above 1 means ours is faster or smaller) and AUROC differences "
        "(ours - anomalib):",
        "",
        "| method | backbone | fit | latency | fit RSS | d image AUROC | d pixel AUROC |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if not row.available:
            continue
        o, t = row.ours, row.theirs
        lines.append(
            f"| {row.method} | {row.backbone} | {ratio(t.fit_s, o.fit_s)} | "
            f"{ratio(t.latency_ms, o.latency_ms)} | {ratio(t.fit_rss_mb, o.fit_rss_mb)} | "
            f"{o.image_auroc - t.image_auroc:+.3f} | {o.pixel_auroc - t.pixel_auroc:+.3f} |"
        )
    lines += [
        "",
        "## Fidelity (same weights, same inputs)",
        "",
        "| comparison | test images | image-score Spearman | map Pearson | max score diff "
        "| target | met |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for f in fidelity:
        target = "-" if f.spearman_target is None else f"Spearman >= {f.spearman_target}"
        if f.pearson_target is not None:
            target += f", Pearson >= {f.pearson_target}"
        met = "-" if f.met is None else "yes" if f.met else "NO"
        lines.append(
            f"| {f.name} | {f.n} | {f.spearman:.4f} | "
            f"{'-' if f.pearson is None else f'{f.pearson:.5f}'} | {f.score_diff:.1e} | "
            f"{target} | {met} |"
        )
        if f.note:
            notes.append(f"{f.name}: {f.note}")
    lines += [
        "",
        "Max score diff: largest difference of image scores relative to the largest score "
        "(rounding-level when both sides compute the same thing; large where the coreset differs).",
    ]
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for target, measured, met in targets(rows, n_train):
        lines.append(f"| {target} | {measured} | {met} |")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def targets(rows: list[Row], n_train: int) -> list[tuple[str, str, str]]:
    out = []
    find = {(r.method, r.backbone, r.setup.split(",")[0]): r for r in rows if r.available}
    full = n_train >= 200
    scope = "" if full else f" (full-mode target; measured on {n_train} images)"
    row = find.get(("PatchCore", "resnet18", "coreset 10%"))
    if row:
        speedup = row.theirs.fit_s / row.ours.fit_s
        verdict = ("yes" if speedup >= 30 else "NO") if full else "n/a" + scope
        extrap = " (anomalib extrapolated)" if row.theirs.fit_note else ""
        out.append(
            ("PatchCore R18 fit >= 30x faster than anomalib", f"{speedup:.1f}x{extrap}", verdict)
        )
        verdict = ("yes" if row.ours.fit_s < 60 else "NO") if full else "n/a" + scope
        out.append(("PatchCore R18 fit < 60 s", f"{row.ours.fit_s:.2f} s", verdict))
    else:
        out.append(("PatchCore R18 fit targets", "not measured", "n/a"))
    for method in ("PatchCore", "PaDiM"):
        row = next((r for r in rows if r.method == method and r.backbone == "mobilenet_v2"), None)
        if row is None or not row.available:
            out.append((f"{method} MobileNetV2 latency <= 25 ms", "not available", "n/a"))
            continue
        out.append(
            (
                f"{method} MobileNetV2 latency <= 25 ms ({row.setup})",
                f"{row.ours.latency_ms:.1f} ms median, {row.ours.latency_p90_ms:.1f} ms p90",
                "yes" if row.ours.latency_ms <= 25 else "NO",
            )
        )
    return out


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 training images, 32 test images")
    parser.add_argument("--data", default="/work/shared/data/magnetic_tile")
    parser.add_argument("--train", type=int, help="training images (default 200, quick 40)")
    parser.add_argument("--test-normal", type=int, help="normal (= anomalous) test images")
    parser.add_argument("--latency-images", type=int, default=40)
    parser.add_argument(
        "--anomalib-timeout",
        type=float,
        default=600.0,
        help="cap on anomalib's coreset run per model, seconds (then extrapolated)",
    )
    parser.add_argument("--repeats", type=int, help="fits of ours per model (median reported)")
    parser.add_argument(
        "--numpy-blas-threads",
        type=int,
        help="limit NumPy's OpenBLAS threads (only our side uses it; torch has its own); "
        "default: as installed",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="patchcore,padim")
    parser.add_argument("--backbones", default="resnet18,mobilenet_v2")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.train = args.train or (40 if args.quick else 200)
    args.test_normal = args.test_normal or (16 if args.quick else 50)
    repeats = args.repeats or 3
    out = args.out or ROOT / "results" / f"vs_anomalib{'-quick' if args.quick else ''}.md"
    started = time.time()
    args.load_start = os.getloadavg()[0]
    if args.numpy_blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.numpy_blas_threads, user_api="blas")

    data = load_data(args.data, args.train, args.test_normal, args.seed)
    log(data.summary)
    methods = args.methods.split(",")
    rows: list[Row] = []
    fidelity: list[Fidelity] = []
    for backbone in args.backbones.split(","):
        if "patchcore" in methods:
            # ResNet18 at the 10 %; MobileNetV2 at our default (1 %), the robot setting
            ratio = 0.1 if backbone == "resnet18" else PatchCoreConfig().coreset_ratio
            rows.append(run_patchcore(backbone, ratio, data, args, fidelity, repeats))
        if "padim" in methods:
            rows.append(run_padim(backbone, data, args, fidelity, repeats))

    text = report(rows, fidelity, data, args, started)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    raw = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": [
            {"method": r.method, "backbone": r.backbone, "setup": r.setup, "note": r.note,
             "ours": r.ours.figures(), "anomalib": r.theirs.figures(), "anomalib_fit": r.extra}
            for r in rows
        ],
        "fidelity": [{**f.__dict__, "met": f.met} for f in fidelity],
        "targets": targets(rows, len(data.train)),
    }  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=float) + "\n")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
