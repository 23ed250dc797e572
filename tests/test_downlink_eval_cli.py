"""`vad-inspection downlink-eval` on a real scenario bag: every planner at every budget within its
bytes, the stream's truth read from the bag's truth file, a plot and a table written, and bad
input refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from vad_inspection.cli import main
from vad_inspection.downlink.streams import msl_target

DATA = Path(__file__).resolve().parents[2] / "shared/data"


@pytest.fixture(scope="module")
def traverse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 40-frame Mars traverse bag (held-out sols) and PaDiM fitted on train-split ground."""
    if not (DATA / "msl_surface").is_dir():
        pytest.skip("../shared/data/msl_surface not found")
    root = tmp_path_factory.mktemp("downlink")
    bag, model = root / "traverse", root / "ground.vad"
    assert main(["sim", "mars_traverse", "-o", str(bag), "--data-root", str(DATA),
                 "--set", "frames=40", "--set", "novelty_fraction=0.2",
                 "--set", "size=96"]) == 0  # fmt: skip
    assert main(["fit", "--method", "padim", "--data", f"msl_surface:{DATA}/msl_surface",
                 "--size", "64", "--max-train", "60", "-o", str(model),
                 "--no-progress"]) == 0  # fmt: skip
    return bag, model


def test_a_bag_is_scored_and_every_planner_stays_within_its_budget(
    traverse: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag, model = traverse
    out = tmp_path / "eval"
    assert main(["downlink-eval", "--bag", str(bag), "--model", str(model), "--budgets",
                 "2,5,20", "--windows", "2", "-o", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "At a budget of 5 %" in printed and str(out / "downlink.png") in printed
    data = json.loads((out / "downlink.json").read_text())
    (stream,) = data["streams"].values()
    truth = json.loads(bag.with_name(bag.name + ".truth.json").read_text())["frames"]
    anomalous = [f for f in truth if f["anomalous"]]
    assert stream["info"]["frames"] == 40 and stream["info"]["anomalous"] == len(anomalous) > 0
    targets = {t for f in anomalous for t in msl_target(f["source"], True)}
    assert stream["info"]["distinct_defects"] == len(targets)
    rows = stream["results"]
    planners = {r["planner"] for r in rows}
    assert {"fifo", "planner", "score_only", "planner x2 windows"} <= planners
    assert any(p.startswith("random") for p in planners)
    for r in rows:
        assert r["budget"] in (0.02, 0.05, 0.2) and 0 <= r["bytes_used"] <= r["budget_bytes"]
        assert 0.0 <= r["defects_delivered"] <= 1.0
    fifo = {r["budget"]: r for r in rows if r["planner"] == "fifo"}
    assert fifo[0.02]["frames_sent"] <= fifo[0.2]["frames_sent"]  # more budget, more sent
    image = cv2.imread(str(out / "downlink.png"))
    assert image is not None and image.shape[0] > 200 and image.std() > 10  # a drawn plot
    assert "## traverse" in (out / "downlink.md").read_text()


def test_bad_input_is_refused_by_name(
    traverse: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag, model = traverse
    assert main(["downlink-eval", "--bag", str(bag)]) == 2
    assert "--bag needs --model" in capsys.readouterr().err
    assert main(["downlink-eval", "--bag", str(bag), "--model", str(model),
                 "--budgets", "5,200"]) == 2  # fmt: skip
    assert "(0, 100]" in capsys.readouterr().err
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in bag.iterdir():  # the same bag without its truth file
        (bare / path.name).write_bytes(path.read_bytes())
    assert main(["downlink-eval", "--bag", str(bare), "--model", str(model)]) == 2
    assert "truth.json" in capsys.readouterr().err
