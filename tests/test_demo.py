"""`vad-inspection demo` end to end: both scenarios through the player, detector, hazard map and
recorder as separate processes over DDS, the figures measured against the scenarios' truth, and
the one HTML page opened in headless Chromium."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_chromium
from test_replay_html import Dom

from vad_inspection.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared/data"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The demo run once for the module, on a fresh DDS domain over loopback."""
    pytest.importorskip("vad_inspection.transport._cyclone", exc_type=ImportError)
    from vad_inspection.transport.dds import loopback_config_path

    for name in ("crackforest", "lroc_nac"):
        if not (DATA / name).is_dir():
            pytest.skip(f"../shared/data/{name} not found")
    out = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_DOMAIN_ID", str(random.randint(1, 230)))
        patch.setenv("CYCLONEDDS_URI", loopback_config_path().as_uri())
        assert main(["demo", "--data-root", str(DATA), "--out", str(out)]) == 0
        yield out


@pytest.mark.slow
def test_the_demo_measures_each_scenario_against_its_truth(demo: Path) -> None:
    figures = json.loads((demo / "demo.json").read_text())["scenarios"]
    crack, lunar = figures["crack_wall"], figures["lunar_orbit"]
    # the VAE with the crack options, fitted on a clean wall, finds the cracks
    assert crack["metrics"]["image_auroc"] > 0.9 and crack["metrics"]["pixel_auroc"] > 0.9
    assert crack["verdict"].startswith("detects")
    assert crack["hazard"]["cells"]["precision"] > 0.5 and crack["hazard"]["cells"]["recall"] > 0.3
    assert crack["recorder"]["defects_delivered"] == 1.0  # every crack reached the ground
    for scenario in (crack, lunar):
        run = scenario["metrics"]
        assert run["image_auroc"] is not None and run["pixel_auroc"] is not None
        h = scenario["hazard"]
        assert 0 < h["cells_known"] <= h["cells_total"] and len(h["sites"]) == 5
        assert h["top5_clear"] is not None and h["random_clear"] is not None
        assert scenario["recorder"]["items"] > 0 and scenario["recorder"]["windows"] == 1
    for name in ("crack_wall", "lunar_orbit"):
        assert (demo / name / "hazard.png").stat().st_size > 10_000
        assert list((demo / name / "downlink").glob("window_*/metadata.yaml"))


@pytest.mark.slow
def test_the_report_opens_in_a_browser_with_both_scenarios(
    demo: Path,
    chromium: str,
    tmp_path: Path,
) -> None:
    page = demo / "report.html"
    dom = Dom(run_chromium(chromium, tmp_path, "--dump-dom", page.as_uri()).stdout)
    assert {"summary", "crack_wall", "lunar_orbit"} <= dom.ids()
    rows = [a for t, a, _ in dom.elements if t == "tr" and a.get("data-scenario")]
    assert [r["data-scenario"] for r in rows] == ["crack_wall", "lunar_orbit"]
    images = [a for t, a, _ in dom.elements if t == "img"]
    assert sum((a.get("alt") or "").startswith("hazard grid") for a in images) == 2
