"""``vad-inspection eval`` without ``--data`` (``make eval``): the offline evaluation job on the
real data beside us.

Compare every model under the three evaluation settings on real magnetic-tile and CrackForest
imagery, then fit PatchCore on normal magnetic tiles and show what it flags on defective ones, as
heat-map overlays gathered on one contact sheet. (It was ``make demo`` until the nodes existed;
the demo is now the robot's graph on scenarios, :mod:`vad_inspection.demo`.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vad_inspection import pipeline
from vad_inspection.data import open_dataset
from vad_inspection.eval.runner import EvalConfig
from vad_inspection.eval.suite import SuiteEntry, SuiteResult, run_suite
from vad_inspection.vad.calibration import DEFAULT_K
from vad_inspection.vad.detector import detector_for_model
from vad_inspection.vad.registry import MODELS, CommonOptions, save_model
from vad_inspection.vad.vae import CRACK_OPTIONS
from vad_inspection.viz import write_png

DEMO_MODELS: tuple[str, ...] = ("darkest_pixel", "local_contrast", "patchcore", "padim")
#: The VAE, trained from scratch, so it learns something real without pretrained weights, and
#: ``dark_lines``, its crack options without the network (what the VAE must beat to have learned
#: anything); run on the CrackForest tiles only, where 64 px keeps training to seconds per setting.
CRACK_MODELS: tuple[str, ...] = ("vae", "dark_lines")


@dataclass(frozen=True)
class DemoOptions:
    data_root: Path
    out: Path
    models: tuple[str, ...] = DEMO_MODELS
    settings: tuple[int, ...] = (1, 2, 3)
    max_train: int = 200
    seed: int = 0
    threshold_k: float = DEFAULT_K
    common: CommonOptions = field(default_factory=CommonOptions)
    #: the VAE with the crack options (dark, thin defects), as it runs on CrackForest only
    method_options: dict[str, dict[str, object]] = field(
        default_factory=lambda: {"vae": dict(CRACK_OPTIONS)}
    )
    crack_models: tuple[str, ...] = CRACK_MODELS


def _entries(options: DemoOptions) -> list[SuiteEntry]:
    root = options.data_root
    split = {"max_train": options.max_train}
    return [
        SuiteEntry(open_dataset(f"magnetic_tile:{root}/magnetic_tile"), 256, split),
        SuiteEntry(
            open_dataset(f"crackforest:{root}/crackforest?tile=64"),
            64,
            split,
            extra_models=options.crack_models,
        ),
    ]


def contact_sheet(tiles: list[np.ndarray], captions: list[str], columns: int = 4) -> np.ndarray:
    """Overlays side by side with their captions, for one look instead of many files."""
    height, width = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (height + 22), columns * width, 3), 255, dtype=np.uint8)
    for i, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        y, x = (i // columns) * (height + 22), (i % columns) * width
        sheet[y + 22 : y + 22 + height, x : x + width] = tile
        cv2.putText(sheet, caption, (x + 4, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    return sheet


def fit_and_show(options: DemoOptions, log=print) -> Path:
    """Fit PatchCore on normal magnetic tiles; score held-out defects; write a contact sheet."""
    dataset = open_dataset(f"magnetic_tile:{options.data_root}/magnetic_tile")
    model, report = pipeline.fit(
        "patchcore", dataset, options.common, max_train=options.max_train, threshold_k=DEFAULT_K
    )
    model_path = save_model(model, options.out / "patchcore_magnetic_tile.vad", report.calibration)
    log(f"fitted PatchCore on {report.train_images} images in {report.fit_seconds:.1f} s -> "
        f"{model_path}")  # fmt: skip
    rng = np.random.default_rng(options.seed)
    defects = [dataset.anomalous[i] for i in rng.choice(len(dataset.anomalous), 8, replace=False)]
    normals = [dataset.normal[i] for i in rng.choice(len(dataset.normal), 4, replace=False)]
    chosen = defects + normals
    results = pipeline.predict_files(
        detector_for_model(model, report.calibration), [s.path for s in chosen],
        options.out / "overlays",
        progress=options.common.progress,
    )  # fmt: skip
    tiles, captions = [], []
    for sample, result in zip(chosen, results, strict=True):
        overlay = cv2.cvtColor(cv2.imread(str(result.overlay)), cv2.COLOR_BGR2RGB)
        tiles.append(cv2.resize(overlay, (192, 192), interpolation=cv2.INTER_AREA))
        verdict = "ANOM" if result.anomalous else "ok"
        captions.append(f"{sample.category}: {result.normalized:.2f} {verdict}")
    sheet = options.out / "patchcore_magnetic_tile_overlays.png"
    write_png(sheet, contact_sheet(tiles, captions))
    return sheet


def run_demo(options: DemoOptions, log=print) -> SuiteResult:
    models = [m for m in options.models if m in MODELS]
    skipped = sorted(set(options.models) - set(models))
    if skipped:
        log(f"not available in this version, skipped: {', '.join(skipped)}")
    config = EvalConfig(
        threshold_k=options.threshold_k,
        progress=options.common.progress,
        model_options=options.common,
        method_options=options.method_options,
    )
    result = run_suite(
        _entries(options), models, options.out, settings=options.settings, seed=options.seed,
        config=config, log=log,
    )  # fmt: skip
    if "patchcore" in models:
        log(f"contact sheet: {fit_and_show(options, log)}")
    return result
