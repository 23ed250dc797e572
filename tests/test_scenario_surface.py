"""The surface-scan scenario on real CrackForest imagery: each frame is the mosaic seen through
the camera model and pose it says, and each defect projects where its pixels are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vad_inspection.data import open_dataset
from vad_inspection.scenarios import ScenarioError, SurfaceConfig, SurfaceScan, pixel_of

WALL = (  # the plane x = 2 in map, facing -x: u along -y, v along +z, normal -x
    (0.0, 0.0, -1.0, 2.0),
    (-1.0, 0.0, 0.0, 0.0),
    (0.0, 1.0, 0.0, 1.5),
    (0.0, 0.0, 0.0, 1.0),
)


@pytest.fixture(scope="module")
def cracks(tmp_path_factory: pytest.TempPathFactory):
    root = Path(__file__).resolve().parents[2] / "shared/data/crackforest"
    if not root.is_dir():
        pytest.skip("../shared/data/crackforest not found")
    return open_dataset(f"crackforest:{root}?tile=160")


@pytest.mark.parametrize("where", ["floor", "wall"])
def test_frames_and_truth_agree_with_the_geometry(cracks, where: str) -> None:
    config = SurfaceConfig(
        name=where, cells=(2, 6), cell_px=160, anomalous_fraction=0.3, width=240, height=200,
        speed=0.05, rate_hz=1.0, mount="down" if where == "floor" else "forward",
        world_from_plane=WALL if where == "wall" else SurfaceConfig("x").world_from_plane,
    )  # fmt: skip
    scan = SurfaceScan(cracks, config)
    views = list(scan.views())
    assert len(views) == len(scan.path) > 10 and len(scan.defects) >= 3
    assert [v.stamp_ns for v in views[:3]] == [0, 1_000_000_000, 2_000_000_000]
    seen_defects = set()
    for view in views:
        rotation = view.world_from_base[:3, :3]  # a proper rotation, as tf needs
        assert np.allclose(rotation @ rotation.T, np.eye(3)) and np.linalg.det(rotation) > 0.99
        assert view.image.shape == (200, 240, 3) and view.truth.mask.shape == (200, 240)
        assert view.truth.anomalous == bool(view.truth.mask.any())
        r0, c0 = view.origin
        assert np.array_equal(view.image, scan.mosaic.image[r0 : r0 + 200, c0 : c0 + 240])
        for defect in view.truth.defects:
            u, v = pixel_of(scan, view, defect.position)  # through the camera model and tf
            row, col = defect.mosaic_rc
            assert abs(u - (col - c0)) < 1.0 and abs(v - (row - r0)) < 1.0
            seen_defects.add(defect.id)
    assert seen_defects  # the camera passes over defects
    if where == "wall":  # the wall is the plane x = 2: every defect is on it
        assert all(abs(d.position[0] - 2.0) < 1e-9 for d in scan.defects)
        # the camera looks along +x from 0.5 m before the wall
        position = views[0].world_from_base[:3, 3]
        assert abs(position[0] - 1.5) < 1e-9


def test_a_mirrored_plane_is_refused(cracks) -> None:
    mirrored = ((0, 0, -1, 2.0), (1, 0, 0, 0), (0, 1, 0, 1.5), (0, 0, 0, 1))
    with pytest.raises(ScenarioError, match="world_from_plane"):
        SurfaceScan(cracks, SurfaceConfig(name="m", world_from_plane=mirrored))


def test_too_few_samples_is_a_clear_error(cracks) -> None:
    config = SurfaceConfig(name="huge", cells=(40, 40), anomalous_fraction=0.9)
    with pytest.raises(ScenarioError, match=r"huge: .* defective samples with masks"):
        SurfaceScan(cracks, config)


@pytest.mark.slow
def test_sim_writes_a_bag_the_mcap_library_reads_with_truth_beside_it(
    cracks, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    from vad_inspection.cli import main

    data_root = Path(__file__).resolve().parents[2] / "shared/data"
    out = tmp_path / "wall"
    code = main(["sim", "crack_wall", "-o", str(out), "--data-root", str(data_root),
                 "--set", "rate_hz=1", "--set", "cells=[2, 8]"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    truth = json.loads((tmp_path / "wall.truth.json").read_text())
    masks = np.load(tmp_path / "wall.masks.npz")
    seen: dict[str, list] = {}
    with open(next(out.glob("*.mcap")), "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for _, channel, message, decoded in reader.iter_decoded_messages():
            seen.setdefault(channel.topic, []).append((message.log_time, decoded))
    images = seen["/camera/image_raw"]
    assert len(images) == len(truth["frames"]) == truth["scenario"]["frames"] > 5
    assert [t for t, _ in images] == [f["stamp_ns"] for f in truth["frames"]]
    first = images[0][1]
    assert (first.width, first.height, first.encoding) == (320, 240, "rgb8")
    assert masks[str(images[0][0])].shape == (240, 320)
    assert len(seen["/tf"]) == len(seen["/clock"]) == len(images) and len(seen["/tf_static"]) == 1
    info = seen["/camera/camera_info"][0][1]
    assert info.k[0] == pytest.approx(500.0)  # 0.5 m / 1 mm per pixel
    depth = seen["/camera/depth/image_raw"][0][1]
    assert depth.encoding == "32FC1"
    wall = {(d["id"]): d["position"] for d in truth["defects"]}
    assert wall and all(abs(p[0] - 2.0) < 1e-9 for p in wall.values())
    assert code == 0 and main(["sim", "no_such_scenario", "-o", str(tmp_path / "x")]) == 2
    assert "no scenario 'no_such_scenario'; available: crack_floor, crack_wall, " in (
        capsys.readouterr().err
    )
