"""The two paths agree: a model fitted on the Mastcam train tiles scores the test tiles the same
whether `vad-inspection eval` reads them from disk or `vad-inspection replay` receives them as a
camera stream through the player and the detector node (CDR, encodings, the per-frame path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vad_inspection.cli import main
from vad_inspection.data import open_dataset
from vad_inspection.eval.runner import EvalConfig, evaluate_file
from vad_inspection.vad.detector import load_detector

DATA = Path(__file__).resolve().parents[2] / "shared/data"

TRAVERSE = """
scenario: traverse
dataset: "mastcam:{data}/mastcam_novelty"
traverse:
  frames: 40
  novelty_fraction: 0.3
  clutter_fraction: 0.0
  traverse: [typical]
  split: test
  size: 0
  rate_hz: 2
"""


@pytest.mark.slow
def test_eval_and_replay_give_the_same_scores_and_auroc(tmp_path: Path) -> None:
    if not (DATA / "mastcam_novelty").is_dir():
        pytest.skip("../shared/data/mastcam_novelty not found")
    spec = f"mastcam:{DATA}/mastcam_novelty"
    model = tmp_path / "typical.vad"
    assert main(["fit", "--method", "padim", "--data", spec, "--size", "64",
                 "--max-train", "120", "-o", str(model), "--no-progress"]) == 0  # fmt: skip
    (tmp_path / "rgb_tiles.yaml").write_text(TRAVERSE)
    bag = tmp_path / "tiles"
    assert main(["sim", str(tmp_path / "rgb_tiles.yaml"), "-o", str(bag),
                 "--data-root", str(DATA)]) == 0  # fmt: skip
    assert main(["replay", str(bag), "--model", str(model), "-o", str(tmp_path / "r"),
                 "--no-progress"]) == 0  # fmt: skip
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    truth = json.loads((tmp_path / "tiles.truth.json").read_text())["frames"]

    dataset = open_dataset(spec)
    by_id = {s.id: s for s in dataset.samples}
    samples = [by_id[f["source"]] for f in truth]
    offline = evaluate_file(load_detector(model), dataset, EvalConfig(progress=False), samples)
    streamed = np.array([f["raw"] for f in report["frames"]], dtype=np.float64)
    assert len(streamed) == len(samples) == 40 and report["run"]["missed"] == 0
    assert np.allclose(streamed, offline.curve.scores, rtol=1e-5, atol=1e-6)
    assert report["metrics"]["image_auroc"] == pytest.approx(
        offline.row.metrics["image_auroc"], abs=1e-9
    )
