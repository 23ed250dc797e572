"""What the crack masks change, to look at: CrackForest tiles with the VAE's masks by the threshold
alone and by the crack options' mask rule (width judged by each crack's own depth, short regions
dropped), coloured against the annotation.

Trains the VAE with the crack options on Setting 1 (seed 0) as ``benchmarks/vae.py`` does (about a
minute on 2 cores), thresholds at the 0.99 quantile of the held-out normal tiles' maps, and draws
crack tiles from the even-numbered photos (the half the mask rule was not chosen on), picked at
evenly spaced quantiles (10th to 100th percentile) of their annotated area, from hairline to
wide. Green: annotated and predicted; red: predicted only; blue: annotated only.

    python benchmarks/vae_masks.py              # writes benchmarks/results/vae_masks.png
    python benchmarks/vae_masks.py --rows 12 --out /tmp/masks.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from vae import DATA, load_split

from vad_inspection.data import open_dataset
from vad_inspection.eval import metrics as M
from vad_inspection.eval.runner import predict_batched
from vad_inspection.eval.settings import build_split
from vad_inspection.vad.registry import CommonOptions, create_model
from vad_inspection.vad.vae import CRACK_OPTIONS

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
SCALE = 4
HEADER = 28
#: RGB of the three outcomes of a pixel.
COLOURS = {"tp": (40, 200, 40), "fp": (230, 40, 40), "fn": (40, 90, 240)}


def coloured(image: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The tile with each pixel's outcome painted over it (correct negatives left as they are)."""
    out = image.copy()
    out[truth & predicted] = COLOURS["tp"]
    out[predicted & ~truth] = COLOURS["fp"]
    out[truth & ~predicted] = COLOURS["fn"]
    return out


def labelled(panel: np.ndarray, text: str) -> np.ndarray:
    """``panel`` enlarged, with ``text`` in a white band above it."""
    big = cv2.resize(panel, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
    band = np.full((HEADER, big.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (4, HEADER - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)  # fmt: skip
    return np.concatenate([band, big], axis=0)


def pick_tiles(ids: list[str], masks: np.ndarray, rows: int) -> list[int]:
    """Crack tiles of even-numbered photos at evenly spaced quantiles of annotated area."""
    area = masks.reshape(len(masks), -1).sum(axis=1)
    even = [i for i, name in enumerate(ids) if area[i] > 0 and int(name.split("/")[0]) % 2 == 0]
    even.sort(key=lambda i: (area[i], ids[i]))
    # from the 10th percentile: the smallest annotations are a few stray pixels at a tile's edge
    picks = np.linspace(0.1 * (len(even) - 1), len(even) - 1, rows).round().astype(int)
    return [even[p] for p in picks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/vae_masks.png")
    args = parser.parse_args()

    spec = f"crackforest:{args.data_root}/crackforest?tile={SIZE}"
    split = build_split(open_dataset(spec), 1, seed=0)
    data = load_split(split, SIZE)
    model = create_model("vae", CommonOptions(seed=0, size=SIZE, progress=True), **CRACK_OPTIONS)
    model.fit(list(data.train))
    test = predict_batched(model, data.test, 64)
    threshold = float(np.quantile(predict_batched(model, data.val, 64).maps, 0.99))
    plain = test.maps >= threshold
    crack = test.masks(threshold)
    truth = data.masks.astype(bool)
    print(f"Dice over the test tiles: threshold alone {M.dice(truth, plain):.3f}, "
          f"crack masks {M.dice(truth, crack):.3f}")  # fmt: skip

    ids = [s.id for s in split.test]
    lines = []
    for i in pick_tiles(ids, truth, args.rows):
        image = data.test[i].astype(np.uint8)
        panels = [
            labelled(image, ids[i]),
            labelled(coloured(image, truth[i], truth[i]), "annotation"),
        ]
        for name, predicted in (("threshold", plain), ("crack mask", crack)):
            dice = M.dice(truth[i : i + 1], predicted[i : i + 1])
            panels.append(
                labelled(coloured(image, truth[i], predicted[i]), f"{name} Dice {dice:.2f}")
            )
        lines.append(np.concatenate(panels, axis=1))
    figure = np.concatenate(lines, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR)):
        raise SystemExit(f"could not write {args.out}")
    print(f"wrote {args.out} ({len(lines)} tiles)")


if __name__ == "__main__":
    main()
