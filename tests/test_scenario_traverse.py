"""The Mars traverse scenarios on real Curiosity data: the stream holds the classes, split and
order it says, and the six-band variant reaches a bag reader with its bands unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vad_inspection.data import open_dataset
from vad_inspection.msgs.image import msg_to_frame
from vad_inspection.scenarios import ScenarioError, catalog
from vad_inspection.scenarios.traverse import RoverTraverse, TraverseConfig

DATA = Path(__file__).resolve().parents[2] / "shared/data"


def _need(name: str) -> Path:
    if not (DATA / name).is_dir():
        pytest.skip(f"../shared/data/{name} not found")
    return DATA / name


def test_rover_traverse_plays_held_out_sols_in_order_with_its_mix() -> None:
    _need("msl_surface")
    scan = catalog.load("mars_traverse", DATA)
    views = list(scan.views(start_ns=5))
    summary = scan.summary()
    assert len(views) == scan.frame_count == summary["frames"] == 100
    assert summary["novelties"] == sum(v.truth.anomalous for v in views) == 5
    categories = [v.truth.category for v in views]
    assert categories.count("ground") == 80  # the rest: 15 clutter frames of other classes
    assert {c for c, v in zip(categories, views, strict=True) if v.truth.anomalous} <= {
        "drill holes", "drt front", "drt side",
    }  # fmt: skip
    listed = (DATA / "msl_surface/val-calibrated-shuffled.txt").read_text()
    assert all(f"calibrated/{Path(v.source).name}" in listed for v in views)  # held-out sols
    sols = [int(Path(v.source).name[:4]) for v in views]
    assert sols == sorted(sols) and sols[0] < sols[-1]
    assert [v.stamp_ns for v in views[:2]] == [5, 1_000_000_005]
    assert all(v.image.shape == (256, 256, 3) and v.encoding == "rgb8" for v in views)
    assert all(v.depth_m is None and v.truth.mask is None for v in views)
    xs = [v.world_from_base[0, 3] for v in views]
    assert np.all(np.diff(xs) > 0)  # the rover moves forward


def test_a_split_too_small_for_the_mix_is_refused_with_the_counts() -> None:
    dataset = open_dataset(f"msl_surface:{_need('msl_surface')}?clutter=normal")
    with pytest.raises(ScenarioError, match=r"too few frames: \{'traverse': \{'have': 87"):
        RoverTraverse(dataset, TraverseConfig("t", frames=300, split="test"))


def test_multispectral_stream_reaches_the_bag_with_six_bands_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    from vad_inspection.cli import main

    root = _need("mastcam_novelty")
    out = tmp_path / "ms"
    code = main(["sim", "mars_multispectral", "-o", str(out), "--data-root", str(DATA),
                 "--set", "frames=40", "--set", "novelty_fraction=0.25"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    truth = json.loads((tmp_path / "ms.truth.json").read_text())
    assert not (tmp_path / "ms.masks.npz").exists()  # tiles carry no pixel masks
    assert truth["scenario"]["encoding"] == "8UC6" and len(truth["scenario"]["bands"]) == 6
    assert sum(f["anomalous"] for f in truth["frames"]) == 10
    topics: dict[str, list] = {}
    with open(next(out.glob("*.mcap")), "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for _, channel, _, decoded in reader.iter_decoded_messages():
            topics.setdefault(channel.topic, []).append(decoded)
    assert "/camera/depth/image_raw" not in topics  # no depth, no empty topic
    images = topics["/camera/image_raw"]
    assert len(images) == 40 and images[0].encoding == "8UC6" and images[0].step == 64 * 6
    for frame, record in zip(images[:8], truth["frames"][:8], strict=True):
        tile = np.load(root / f"{record['source']}.npy")
        assert np.array_equal(msg_to_frame(frame).image, tile.astype(np.uint8))


def test_band_names_must_match_the_bands() -> None:
    dataset = open_dataset(f"mastcam:{_need('mastcam_novelty')}?multispectral=true")
    with pytest.raises(ScenarioError, match="3 band names for 6-band frames"):
        config = TraverseConfig("t", frames=20, size=0, traverse=("typical",),
                                clutter_fraction=0, bands=("a", "b", "c"))  # fmt: skip
        RoverTraverse(dataset, config)
