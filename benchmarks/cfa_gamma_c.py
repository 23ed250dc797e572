"""CFA's memory-bank reduction gamma_c, side by side: fit time, latency and agreement at 256 px.

    python benchmarks/cfa_gamma_c.py

CFA's bank holds one centroid per position (4096 at 256 px with MobileNetV2); ``gamma_c`` reduces
it by k-means. Both models are fitted on the same 20 normal magnetic-tile images for 3 epochs
(seeded random weights), then score 10 others in alternating blocks of 10 single-image calls;
printed: fit seconds, median latency and the Spearman of their image scores. Prints only.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vad_inspection.data import open_dataset  # noqa: E402
from vad_inspection.vad.registry import CommonOptions, create_model  # noqa: E402


def main() -> None:
    normal = open_dataset(f"magnetic_tile:{ROOT.parent / 'shared/data/magnetic_tile'}").normal
    images = [cv2.resize(s.image(), (256, 256), interpolation=cv2.INTER_AREA) for s in normal[:30]]
    models = {}
    for gamma_c in (1, 4):
        model = create_model("cfa", CommonOptions(size=256), gamma_c=gamma_c, epochs=3)
        start = time.perf_counter()
        model.fit(images[:20])
        print(f"gamma_c {gamma_c}: fit {time.perf_counter() - start:.1f} s (3 epochs, 20 images)")
        model.predict(images[20:21])  # warm-up
        models[gamma_c] = model
    times: dict[int, list[float]] = {g: [] for g in models}
    for _ in range(3):
        for gamma_c, model in models.items():
            for image in images[20:30]:
                start = time.perf_counter()
                model.predict([image])
                times[gamma_c].append(time.perf_counter() - start)
    for gamma_c, measured in times.items():
        print(f"gamma_c {gamma_c}: latency median {1000 * float(np.median(measured)):.1f} ms")
    scores = [models[g].predict(images[20:30]).scores for g in models]
    print(f"image-score Spearman between them: {spearmanr(*scores).statistic:.4f}")


if __name__ == "__main__":
    main()
