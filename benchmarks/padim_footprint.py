"""PaDiM's model-file size against its fidelity: storage precision x kept channels, side by side.

    python benchmarks/padim_footprint.py            # 200 training, 100 + 100 test images (~6 min)
    python benchmarks/padim_footprint.py --quick    # 40 training, 20 + 20 test images

The issue: at 256 px a MobileNetV2 PaDiM file is 86.5 MB (``benchmarks/latency.py``) against the
planetary paper's 10.7 MB; target <= 11 MB with image-score Spearman >= 0.99 against today's model
(d = 100 random channels, float32). The two levers are ``PaDiMConfig.storage`` (``float32``;
``float16``: the packed inverse covariances in half precision; ``cholesky16``: their Cholesky
factors in half precision) and ``n_features`` (d; the file grows as d^2). With a 2.14 MB
MobileNetV2 graph, 4096 positions and a float32 mean, d = 44 is the largest d whose half-precision
file fits in 11 MB (d = 45 would be 11.35 MB). The third lever, ``storage="lowrank16"``, keeps
d = 100 and approximates each inverse covariance by ``rank`` directions of its own plus one shared
precision (``padim.low_rank_precision``): the file grows as d * rank instead of d^2; run at ranks
4, 8 and 16, and at rank 8 on a second channel subset against that subset's float32 model.

One magnetic-tile split (setting 1 of ``vad_inspection.eval.settings``, seed 0): every variant is
fitted on the same normal training images and scores the same held-out test images (normal and
anomalous, half each), all resized once to 256x256; backbone weights are seeded random (seed 0;
no pretrained weights can be downloaded here). Each variant is fitted, saved, loaded back and
scored from the loaded file, and compared with the reference of its backbone (d = 100, float32,
channel seed 0): Spearman of the image scores, Pearson of the anomaly maps (all pixels), the
largest relative image-score difference; and image / pixel AUROC of each. Then single-image
latency (``predict([image])``, preprocess + backbone + model + map), models taking turns in blocks
as in ``latency.py``. ``d = 44`` is also drawn with other channel seeds (random subsets of the 152
channels, same backbone weights) to show how much the choice of the subset alone moves the
ranking.

Random MobileNetV2 features barely vary (their per-position spread is far below the 0.1 standard
deviation that epsilon = 0.01 stands for), so its covariances are almost epsilon * I and rounding
them hardly shows. Random ResNet18 features vary about as much as epsilon, so the covariances
matter: ResNet18 is run as a check of the storage precision only (its 11.1 MB graph alone rules
it out of the 11 MB target). ``--backbones mobilenet_v2`` skips it.

Writes ``benchmarks/results/padim_footprint.{md,json}``; model files go to a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vad_inspection.data import open_dataset  # noqa: E402
from vad_inspection.eval.metrics import auroc, pixel_auroc  # noqa: E402
from vad_inspection.eval.resources import array_footprint  # noqa: E402
from vad_inspection.eval.settings import build_split  # noqa: E402
from vad_inspection.vad.backbones import load_onnx  # noqa: E402
from vad_inspection.vad.padim import (  # noqa: E402
    PaDiM,
    PaDiMConfig,
    low_rank_mahalanobis,
    low_rank_precision,
    mahalanobis,
    pack_cholesky,
    pack_precision,
    to_half,
)
from vad_inspection.vad.preprocess import resize_image, resize_mask, to_network_input  # noqa: E402
from vad_inspection.vad.registry import load_model, save_model  # noqa: E402

SIZE = (256, 256)
TARGET_MB = 11.0
TARGET_SPEARMAN = 0.99
PAPER_MB = 10.7


@dataclass(frozen=True)
class Variant:
    backbone: str
    n_features: int
    storage: str
    channel_seed: int = 0
    rank: int = 8

    @property
    def label(self) -> str:
        seed = f", channel seed {self.channel_seed}" if self.channel_seed else ""
        rank = f" rank {self.rank}" if self.storage == "lowrank16" else ""
        return f"{self.backbone} d={self.n_features} {self.storage}{rank}{seed}"


def variants(backbones: list[str]) -> list[Variant]:
    """The reference of each backbone first (d = 100, float32, channel seed 0)."""
    out: list[Variant] = []
    if "mobilenet_v2" in backbones:
        m = "mobilenet_v2"
        out += [Variant(m, 100, s) for s in ("float32", "float16", "cholesky16")]
        out += [Variant(m, 80, "cholesky16"), Variant(m, 64, "cholesky16")]
        out += [Variant(m, 44, s) for s in ("float32", "float16", "cholesky16")]
        out += [Variant(m, 44, "cholesky16", seed) for seed in (1, 2, 3, 4)]
        out += [Variant(m, 100, "lowrank16", rank=rank) for rank in (4, 8, 16)]
        # another channel subset, with its own float32 reference first
        out += [Variant(m, 100, "float32", 1), Variant(m, 100, "lowrank16", 1, rank=8)]
    if "resnet18" in backbones:
        r = "resnet18"
        out += [Variant(r, 100, s) for s in ("float32", "float16", "cholesky16")]
        out += [Variant(r, 44, "cholesky16")]
        out += [Variant(r, 100, "lowrank16", rank=rank) for rank in (8, 16, 32)]
    return out


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_data(root: str, n_train: int, n_test_normal: int):
    dataset = open_dataset(f"magnetic_tile:{root}")
    split = build_split(dataset, 1, seed=0, max_train=n_train, max_test_normal=n_test_normal)
    train = [resize_image(s.image(), SIZE) for s in split.train]
    test = [resize_image(s.image(), SIZE) for s in split.test]
    masks = np.stack([resize_mask(s.mask(), SIZE) for s in split.test])
    labels = np.array([s.label for s in split.test])
    return train, test, labels, masks, split.summary()


def feature_spread(model: PaDiM, images: list[np.ndarray]) -> float:
    """The largest, over the kept channels, of a channel's median (over positions) standard
    deviation across ``images``: to set against the sqrt(epsilon) = 0.1 of the regularisation."""
    embedding = model.embed(to_network_input(images, model.input_spec))  # (n, d, h, w)
    spread = embedding.std(axis=0).reshape(embedding.shape[1], -1)
    return float(np.median(spread, axis=1).max())


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of all pixels of two map stacks, in float64."""
    return float(pearsonr(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0])


def packing_seconds(model: PaDiM) -> dict[str, float]:
    """Seconds to pack a float32 model's fitted inverse covariances as each storage does (the
    only part of ``fit`` that the storage changes)."""
    inverse = model.inv_covariance
    steps = {
        "float32": lambda: pack_precision(inverse),
        "float16": lambda: to_half(pack_precision(inverse), "inverse covariances"),
        "cholesky16": lambda: to_half(pack_cholesky(inverse), "Cholesky factors"),
        "lowrank16": lambda: to_half(low_rank_precision(inverse, 8)[0], "low-rank bases"),
    }
    out = {}
    for storage, step in steps.items():
        start = time.perf_counter()
        step()
        out[storage] = time.perf_counter() - start
    return out


def one_image_vectors(model: PaDiM, image: np.ndarray) -> np.ndarray:
    """The ``(L, 1, d)`` embedding vectors of one image, as ``predict`` hands them to the
    distance kernel."""
    embedding = model.embed(to_network_input([image], model.input_spec))
    return np.ascontiguousarray(embedding.reshape(1, embedding.shape[1], -1).transpose(2, 0, 1))


def time_kernel(model: PaDiM, vectors: np.ndarray, calls: int) -> list[float]:
    """Seconds per call of the distance kernel alone (what the storage changes)."""
    factor = model.config.storage == "cholesky16"
    out = []
    for call in range(-3, calls):
        start = time.perf_counter()
        if model.config.storage == "lowrank16":
            low_rank_mahalanobis(vectors, model.mean, model.precision, model.isotropic)
        else:
            mahalanobis(vectors, model.mean, model.precision, factor=factor)
        if call >= 0:
            out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/magnetic_tile"))
    parser.add_argument("--backbones", default="mobilenet_v2,resnet18")
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test-normal", type=int, default=100)
    parser.add_argument("--calls", type=int, default=30, help="timed single-image calls per model")
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="40 training, 20 + 20 test images")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/padim_footprint")
    args = parser.parse_args()
    if args.quick:
        args.train, args.test_normal = 40, 20
        args.out = args.out.with_name(args.out.name + "-quick")

    train, test, labels, masks, summary = load_data(args.data, args.train, args.test_normal)
    log(f"magnetic tile: {summary}")
    graphs: dict[str, bytes] = {}
    references: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    spread: dict[str, float] = {}
    packing: dict[str, dict[str, float]] = {}
    rows: list[dict] = []
    loaded_models: list[PaDiM] = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants(args.backbones.split(",")):
            if variant.backbone not in graphs:
                graphs[variant.backbone] = load_onnx(variant.backbone, "random", 0)
            config = PaDiMConfig(
                backbone=variant.backbone,
                size=SIZE,
                n_features=variant.n_features,
                storage=variant.storage,
                rank=variant.rank,
                seed=variant.channel_seed,
            )
            model = PaDiM(config, graphs[variant.backbone])
            start = time.perf_counter()
            model.fit(train)
            fit_s = time.perf_counter() - start
            if variant.backbone not in spread:
                spread[variant.backbone] = feature_spread(model, train[:32])
            path = save_model(model, Path(tmp) / "model.vad", None)
            file_mb = path.stat().st_size / 1e6
            del model
            loaded, _ = load_model(path)
            path.unlink()
            prediction = loaded.predict(test)
            scores, maps = prediction.scores, prediction.maps
            # the reference: the first variant of each backbone (d = 100, float32), and of each
            # other channel seed where one was run at d = 100 in float32 before its variants
            key = (variant.backbone, variant.channel_seed)
            if key not in references and variant.storage == "float32" and variant.n_features == 100:
                references[key] = (scores, maps)
                if variant.channel_seed == 0:
                    packing[variant.backbone] = packing_seconds(loaded)
            key = key if key in references else (variant.backbone, 0)
            row_reference = f"d=100 float32, channel seed {key[1]}"
            ref_scores, ref_maps = references[key]
            row = {
                **asdict(variant),
                "label": variant.label,
                "reference": row_reference,
                "file_mb": file_mb,
                "arrays_mb": array_footprint(loaded) / 1e6,
                "fit_s": fit_s,
                "spearman": float(spearmanr(scores, ref_scores).statistic),
                "pearson": pearson(maps, ref_maps),
                "max_rel_score_diff": float(np.max(np.abs(scores / ref_scores - 1.0))),
                "image_auroc": auroc(labels, scores),
                "pixel_auroc": pixel_auroc(masks, maps),
            }
            row["meets_target"] = bool(
                row["file_mb"] <= TARGET_MB and row["spearman"] >= TARGET_SPEARMAN
            )
            rows.append(row)
            loaded_models.append(loaded)
            del prediction, maps
            log(
                f"{variant.label}: {file_mb:.2f} MB, fit {fit_s:.1f} s, "
                f"Spearman {row['spearman']:.4f}, Pearson {row['pearson']:.4f}"
            )

    # Latency: single images, the models in rotating blocks (three unmeasured calls re-warm
    # each block's caches), so a disturbance of the shared machine spreads over all of them.
    for model in loaded_models:
        model.predict(test[:1])
    load = os.getloadavg()[0]
    times: list[list[float]] = [[] for _ in loaded_models]
    for _ in range(-(-args.calls // args.block)):
        for model, timing in zip(loaded_models, times, strict=True):
            for call in range(-3, args.block):
                image = test[call % len(test)]
                start = time.perf_counter()
                model.predict([image])
                if call >= 0 and len(timing) < args.calls:
                    timing.append(time.perf_counter() - start)
    kernel: list[list[float]] = [[] for _ in loaded_models]
    vectors = [one_image_vectors(model, test[0]) for model in loaded_models]
    for _ in range(5):
        for model, v, timing in zip(loaded_models, vectors, kernel, strict=True):
            timing += time_kernel(model, v, 20)
    for row, timing, kernel_timing in zip(rows, times, kernel, strict=True):
        ms = np.asarray(timing) * 1000
        row["latency_ms_median"] = float(np.median(ms))
        row["latency_ms_p90"] = float(np.percentile(ms, 90))
        row["kernel_ms_median"] = float(np.median(kernel_timing) * 1000)

    text = report(rows, args, summary, load, spread, packing)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text + "\n")
    machine = {
        "cores": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "load_average_at_timing": load,
    }
    payload = {
        "data": summary,
        "train_images": len(train),
        "test_images": len(test),
        "size": list(SIZE),
        "weights": "random, seed 0",
        "feature_spread": spread,
        "packing_s_d100": packing,
        "targets": {"file_mb": TARGET_MB, "spearman": TARGET_SPEARMAN, "paper_mb": PAPER_MB},
        "machine": machine,
        "rows": rows,
    }
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")


def report(
    rows: list[dict],
    args,
    summary: str,
    load: float,
    spread: dict[str, float],
    packing: dict[str, dict[str, float]],
) -> str:
    lines = [
        "# PaDiM footprint: storage precision x kept channels",
        "",
        f"`python benchmarks/padim_footprint.py{' --quick' if args.quick else ''}`. Magnetic "
        f"tile, {summary}; images resized once to 256x256. Every variant is "
        "fitted on the same training images, saved, loaded back and scored from its file; "
        "fidelity is against the reference of its backbone (d = 100, float32, channel seed 0: "
        "the model as it was before the storage option; a low-rank variant of another channel "
        "seed against the float32 model of that seed). Latency: median (p90) of "
        f"`predict([image])` over {args.calls} calls per model, models in rotating blocks of "
        f"{args.block}; distance kernel: median of 100 calls on one image's vectors (the part "
        "the storage changes; the backbone dominates the rest); "
        f"{os.cpu_count()} cores shared with other jobs, load average {load:.2f} when timing "
        "started.",
        "",
        "**Caveat: seeded random backbone weights** (no pretrained weights can be downloaded "
        "here). AUROC is therefore no measure of quality, and the fidelity figures are for "
        "random features. Random MobileNetV2 features barely vary (no kept channel spreads "
        f"more than {spread.get('mobilenet_v2', float('nan')):.2g} across training images, "
        "against the 0.1 that epsilon = 0.01 stands for), so its covariances are almost "
        "epsilon * I, the distance is nearly a scaled Euclidean one, and it is decided by the "
        "few channels that vary most: which channels a smaller d keeps decides its ranking. "
        "Random ResNet18 features vary more than epsilon (up to "
        f"{spread.get('resnet18', float('nan')):.2g}), so there the covariances, and rounding "
        "them, do show. With pretrained weights the cost of a smaller d may differ either way: "
        "re-run with real weights before choosing d.",
        "",
        f"Target (issue): file <= {TARGET_MB} MB (the paper's PaDiM: {PAPER_MB} MB) with "
        f"image-score Spearman >= {TARGET_SPEARMAN} against the float32 d = 100 model.",
        "",
        "| variant | file MB | arrays in memory MB | Spearman (image) | Pearson (maps) | "
        "max rel. score diff | image AUROC | pixel AUROC | fit s | latency ms median (p90) | "
        "distance kernel ms | meets target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {row['file_mb']:.2f} | {row['arrays_mb']:.1f} | "
            f"{row['spearman']:.4f} | {row['pearson']:.4f} | {row['max_rel_score_diff']:.1e} | "
            f"{row['image_auroc']:.3f} | {row['pixel_auroc']:.3f} | {row['fit_s']:.1f} | "
            f"{row['latency_ms_median']:.1f} ({row['latency_ms_p90']:.1f}) | "
            f"{row['kernel_ms_median']:.2f} | {'yes' if row['meets_target'] else 'no'} |"
        )
    packs = "; ".join(
        f"{backbone} d = 100: " + ", ".join(f"{s} {t:.2f} s" for s, t in seconds.items())
        for backbone, seconds in packing.items()
    )
    lines += [
        "",
        *conclusions(rows),
        "",
        "Fit time is feature extraction plus the batched inversion (the same for every storage, "
        "and on this shared machine several-fold slower or faster from one fit to the next) plus "
        f"the packing, the only step the storage changes ({packs}).",
    ]
    return "\n".join(lines)


def conclusions(rows: list[dict]) -> list[str]:
    """What the table says about the target, written from the figures."""
    mnv2 = [r for r in rows if r["backbone"] == "mobilenet_v2"]
    if not mnv2:
        return []
    out = []
    met = [r for r in mnv2 if r["meets_target"]]
    if met:
        out.append("Target met by: " + "; ".join(r["label"] for r in met) + ".")
    else:
        out.append("Target not met by any variant.")
    low = [r for r in mnv2 if r["storage"] == "lowrank16"]
    if low:
        out.append(
            "Low rank (d = 100, each inverse covariance as rank directions plus one shared "
            "precision, half precision): "
            + "; ".join(
                f"{r['label']}: {r['file_mb']:.2f} MB, Spearman {r['spearman']:.4f} against "
                f"{r['reference']}"
                for r in low
            )
            + "."
        )
    other = [r for r in rows if r["storage"] == "lowrank16" and r["backbone"] != "mobilenet_v2"]
    if low and other:
        out.append(
            "Caveat: random MobileNetV2 covariances are almost epsilon * I, where the shared "
            "precision is nearly exact; features that vary more need a higher rank for the same "
            "fidelity (random ResNet18: "
            + ", ".join(f"rank {r['rank']} Spearman {r['spearman']:.4f}" for r in other)
            + "). With pretrained weights, re-run this before relying on rank 8."
        )
    small = [r for r in mnv2 if r["file_mb"] <= TARGET_MB and r["storage"] != "lowrank16"]
    if small:
        rhos = [r["spearman"] for r in small]
        kept = ", ".join(sorted({str(r["n_features"]) for r in small}))
        seeds = len({r["channel_seed"] for r in small})
        out.append(
            f"Variants within {TARGET_MB} MB (d = {kept}, half precision): Spearman "
            f"{min(rhos):.3f}-{max(rhos):.3f} over the {seeds} channel subsets drawn; the "
            "subset moves the ranking far more than the storage precision does."
        )
    faithful = [r for r in mnv2 if r["spearman"] >= TARGET_SPEARMAN]
    if faithful:
        smallest = min(r["file_mb"] for r in faithful)
        best = [r for r in faithful if r["file_mb"] == smallest]
        out.append(
            f"Smallest variant with Spearman >= {TARGET_SPEARMAN}: "
            + " and ".join(f"{r['label']} (Spearman {r['spearman']:.4f})" for r in best)
            + f", {smallest:.1f} MB."
        )
    for backbone in sorted({r["backbone"] for r in rows}):
        half = [r for r in rows if r["backbone"] == backbone and r["n_features"] == 100]
        errs = ", ".join(
            f"{r['label'].split(' ', 2)[2]} {r['max_rel_score_diff']:.1e}"
            for r in half
            if r["storage"] != "float32"
        )
        if errs:
            out.append(
                f"{backbone}, d = 100: largest relative image-score change from half-precision "
                f"storage: {errs}."
            )
    return out


if __name__ == "__main__":
    main()
