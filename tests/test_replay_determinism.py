"""Closed-loop replay repeats exactly: each scenario kind replayed twice into a model learnt from
the bag itself (`fit --from-bag`) gives the same scores, raw scores and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vad_inspection.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared/data"
SMALL = {  # each scenario kind, cut down to a few dozen frames
    "crack_wall": ["--set", "cells=[2, 6]", "--set", "rate_hz=2"],
    "lunar_orbit": ["--set", "passes=1", "--set", "rate_hz=12.5", "--no-depth"],
    "mars_traverse": ["--set", "frames=30", "--set", "novelty_fraction=0.2", "--set", "size=64"],
}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", sorted(SMALL))
def test_two_closed_loop_replays_give_identical_scores_and_metrics(
    scenario: str, tmp_path: Path
) -> None:
    if not DATA.is_dir():
        pytest.skip("../shared/data not found")
    bag, model = tmp_path / "bag", tmp_path / "m.vad"
    assert main(["sim", scenario, "-o", str(bag), "--data-root", str(DATA), *SMALL[scenario]]) == 0
    assert main(["fit", "--method", "padim", "--from-bag", str(bag), "--frames", "20",
                 "--size", "32", "-o", str(model), "--no-progress"]) == 0  # fmt: skip
    reports = []
    for run in ("a", "b"):
        assert main(["replay", str(bag), "--model", str(model), "-o", str(tmp_path / run),
                     "--no-progress"]) == 0  # fmt: skip
        reports.append(json.loads((tmp_path / run / "report.json").read_text()))
    first, second = reports
    assert first["run"]["missed"] == 0 and first["run"]["frames_sent"] > 10
    keys = ("stamp_ns", "score", "raw", "flagged", "truth")
    assert [[f[k] for k in keys] for f in first["frames"]] == [
        [f[k] for k in keys] for f in second["frames"]
    ]
    assert first["metrics"] == second["metrics"] and first["by_category"] == second["by_category"]
