"""`vad-inspection replay` end to end on real scenario bags: the player, the detector and the
collector on the in-process bus (and the detector in its own process over DDS), every frame
answered, the same scores twice, and a report whose figures come from the bag's truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vad_inspection.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared/data"


@pytest.fixture(scope="module")
def mars(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 24-frame traverse (held-out sols, 6 novelties) and PaDiM fitted on train-split ground."""
    if not (DATA / "msl_surface").is_dir():
        pytest.skip("../shared/data/msl_surface not found")
    root = tmp_path_factory.mktemp("mars")
    bag, model = root / "traverse", root / "ground.vad"
    assert main(["sim", "mars_traverse", "-o", str(bag), "--data-root", str(DATA),
                 "--set", "frames=24", "--set", "novelty_fraction=0.25",
                 "--set", "size=96"]) == 0  # fmt: skip
    assert main(["fit", "--method", "padim", "--data", f"msl_surface:{DATA}/msl_surface",
                 "--size", "64", "--max-train", "60", "-o", str(model),
                 "--no-progress"]) == 0  # fmt: skip
    return bag, model


def _replay(bag: Path, model: Path, out: Path, *extra: str) -> dict:
    assert main(["replay", str(bag), "--model", str(model), "-o", str(out), "--no-progress",
                 *extra]) == 0  # fmt: skip
    return json.loads((out / "report.json").read_text())


def test_closed_loop_replay_scores_every_frame_the_same_way_twice(
    mars: tuple[Path, Path], tmp_path: Path
) -> None:
    bag, model = mars
    first = _replay(bag, model, tmp_path / "a")
    second = _replay(bag, model, tmp_path / "b")
    run = first["run"]
    assert run["frames_sent"] == run["frames_scored"] == 24 and run["missed"] == 0
    assert run["latency_ms"]["p50"] > 0 and run["jitter_ms"] is not None
    scores = [f["score"] for f in first["frames"]]
    assert None not in scores and scores == [f["score"] for f in second["frames"]]
    truth = json.loads(bag.with_name(bag.name + ".truth.json").read_text())
    assert [f["truth"] for f in first["frames"]] == [f["anomalous"] for f in truth["frames"]]
    figures = first["metrics"]
    assert 0.0 <= figures["image_auroc"] <= 1.0 and figures["pixel_auroc"] is None
    assert figures["why"]["pixel_auroc"] == "no pixel masks in the truth"
    assert first["bag"]["sha256"] == second["bag"]["sha256"] and len(first["model"]["sha256"]) == 64
    assert {r["category"] for r in first["by_category"]} >= {"ground"}
    assert (tmp_path / "a" / "report.html").stat().st_size > 10_000  # holds the gallery images


@pytest.mark.slow
def test_replay_with_the_detector_in_its_own_process_over_dds(
    mars: tuple[Path, Path], tmp_path: Path, domain: int
) -> None:
    bag, model = mars
    local = _replay(bag, model, tmp_path / "local")
    dds = _replay(bag, model, tmp_path / "dds", "--transport", "dds")
    assert dds["run"]["transport"] == "dds" and dds["run"]["missed"] == 0
    assert [f["score"] for f in dds["frames"]] == pytest.approx(
        [f["score"] for f in local["frames"]], abs=1e-6
    )  # the same model gives the same scores through another process


def test_a_bag_without_a_camera_is_refused_by_name(tmp_path: Path, capsys) -> None:
    from vad_inspection.msgs.defaults import new_message
    from vad_inspection.transport.bag import BagWriter

    with BagWriter(tmp_path / "tf_only") as bag:
        bag.write("/tf", 1, new_message("tf2_msgs/msg/TFMessage"))
    model = tmp_path / "m.vad"
    model.write_bytes(b"not used")
    assert main(["replay", str(tmp_path / "tf_only"), "--model", str(model)]) == 2
    assert "no camera topic" in capsys.readouterr().err


def test_fit_from_a_bag_learns_on_its_camera_frames(
    mars: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    bag, _ = mars
    model = tmp_path / "from_bag.vad"
    assert main(["fit", "--method", "padim", "--from-bag", str(bag), "--frames", "12",
                 "--size", "32", "-o", str(model), "--no-progress"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "took 12 of the 24 frames on /camera/image_raw" in out and model.stat().st_size > 0
