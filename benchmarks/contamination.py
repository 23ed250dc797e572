"""Setting 2 versus Setting 3: what 5 % anomalies in the training set cost PatchCore.

The planetary benchmark saw PatchCore collapse on Mars when its training set was contaminated
(image AUROC 0.80 -> 0.40). This runs the benchmark's own protocol (vad_inspection.eval.settings)
on a synthetic scene set whose defects any feature sees -- random backbone weights are all these
machines have -- for PatchCore with and without ``outlier_fraction``, and reports image AUROC and
which contaminating training images the option found.

    python benchmarks/contamination.py [--n-normal 400] [--size 128]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from vad_inspection.data.types import ANOMALOUS, NORMAL, Dataset, Sample
from vad_inspection.eval.metrics import auroc
from vad_inspection.eval.settings import build_split
from vad_inspection.vad.backbones import load_onnx
from vad_inspection.vad.patchcore import PatchCore, PatchCoreConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scenes import scene


def synthetic_dataset(n_normal: int, n_anomalous: int, size: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n_normal + n_anomalous):
        label = NORMAL if i < n_normal else ANOMALOUS
        image, mask = scene(rng, size, label == ANOMALOUS)
        samples.append(
            Sample(f"scene{i:04d}", label, "blob" if label else "good", Path(f"scene{i:04d}"),
                   load_image=lambda im=image: im, load_mask=lambda m=mask: m)
        )  # fmt: skip
    return Dataset("synthetic", Path("."), tuple(samples), 3, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-normal", type=int, default=400)
    parser.add_argument("--n-anomalous", type=int, default=120)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = synthetic_dataset(args.n_normal, args.n_anomalous, args.size, args.seed)
    backbone = load_onnx("mobilenet_v2", "random", 0)
    print("| setting | outlier_fraction | train (anomalous) | image AUROC | contaminants dropped |")
    print("| --- | ---: | ---: | ---: | ---: |")
    results = {}
    for fraction in (0.0, 0.05):
        for setting in (2, 3):
            split = build_split(dataset, setting, seed=args.seed)
            train = [s.image() for s in split.train]
            config = PatchCoreConfig(size=(args.size, args.size), coreset_ratio=0.1,
                                     outlier_fraction=fraction)  # fmt: skip
            model = PatchCore(config, backbone)
            model.fit(train)
            labels = np.array([s.label for s in split.test])
            score = auroc(labels, model.predict([s.image() for s in split.test]).scores)
            results[fraction, setting] = score
            contaminants = np.array([s.label == ANOMALOUS for s in split.train])
            dropped = int((~model.kept_images & contaminants).sum())
            print(f"| {setting} | {fraction} | {len(train)} ({contaminants.sum()}) | "
                  f"{score:.3f} | {dropped}/{contaminants.sum()} |")  # fmt: skip
    for fraction in (0.0, 0.05):
        cost = results[fraction, 2] - results[fraction, 3]
        verdict = "meets" if cost <= 0.03 else "misses"
        print(f"outlier_fraction {fraction}: Setting 3 costs {cost:+.3f} AUROC ({verdict} <= 0.03)")


if __name__ == "__main__":
    main()
