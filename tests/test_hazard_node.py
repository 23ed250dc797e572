"""The hazard-map node on the in-process bus: anomaly maps placed through camera_info and tf onto
the floor, the grid a Nav2 costmap would read (values, unknown, frame, resolution), landing sites
clear of the defect, and bad input counted while the node goes on."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import scenes3d as s3
from noderig import NodeRig

from vad_inspection.msgs.geometry import msg_to_grid
from vad_inspection.msgs.image import Frame, frame_to_msg
from vad_inspection.nodes.hazard import HazardNode
from vad_inspection.transport import LATCHED, SENSOR_DATA

NS = 1_000_000_000
HOT = (0.325, 0.125)  # the defect on the floor (map frame), a cell centre
VIEWS = [(x, y) for x in (-0.3, 0.0, 0.3) for y in (-0.3, 0.0, 0.3)]


def heat_for(view: tuple[float, float], radius_px: int = 10) -> np.ndarray:
    """The anomaly map a nadir camera at ``view`` would give: HOT's pixel hot, the rest calm."""
    heat = np.full((s3.HEIGHT, s3.WIDTH), 0.1, np.float32)
    u = s3.FX * (HOT[0] - view[0]) + s3.CX
    v = s3.FY * -(HOT[1] - view[1]) + s3.CY
    yy, xx = np.mgrid[: s3.HEIGHT, : s3.WIDTH]
    heat[(xx - u) ** 2 + (yy - v) ** 2 <= radius_px**2] = 3.0
    return heat


@pytest.fixture
def rig() -> Iterator[NodeRig]:
    r = NodeRig(
        HazardNode, "hazard_map", autostart=True, resolution=0.05, width_m=2.0, height_m=2.0,
        origin=[-1.0, -1.0, 0.0, 0.0, 0.0, 0.0], footprint_radius_m=0.1, publish_period_s=0.1,
        anomaly_map_topic="/detector/anomaly_map", stride_px=2,
    )  # fmt: skip
    yield r
    r.close()


def fly(r: NodeRig, views: list[tuple[float, float]], rounds: int = 3) -> None:
    r.publish("/camera_info", "sensor_msgs/msg/CameraInfo", s3.camera_info(), SENSOR_DATA)
    mount = s3.tf_message("base_link", "camera_optical", s3.optical_mount(), 0)
    r.publish("/tf_static", "tf2_msgs/msg/TFMessage", mount, LATCHED)
    r.pump(lambda: r.node.inputs.camera is not None, 5.0)
    k, start = 0, r.node.counts["maps"]
    for _ in range(rounds):
        for view in views:
            k += 1
            stamp = k * NS // 10
            r.publish("/tf", "tf2_msgs/msg/TFMessage",
                      s3.tf_message("map", "base_link", s3.base_pose(*view), stamp))  # fmt: skip
            r.pump(lambda s=stamp: r.node.inputs.tf.can_transform("map", "base_link", s), 5.0)
            msg = frame_to_msg(Frame(heat_for(view), "32FC1", stamp, "camera_optical"))
            r.publish("/detector/anomaly_map", "sensor_msgs/msg/Image", msg, SENSOR_DATA)
            r.pump(lambda k=k: r.node.counts["maps"] >= start + k, 5.0)


def test_the_grid_holds_the_defect_in_its_cell_and_follows_nav2_conventions(rig) -> None:
    grids = rig.listen("/hazard_map/grid", "nav_msgs/msg/OccupancyGrid", LATCHED)
    fly(rig, VIEWS)
    assert rig.pump(lambda: rig.node.counts["placed"] == len(VIEWS) * 3)  # waited ones included
    rig.node.publish()
    assert rig.pump(lambda: bool(grids))
    grid = msg_to_grid(grids[-1])
    assert grid.frame_id == "map" and grid.resolution == pytest.approx(0.05)
    assert grid.shape == (40, 40)
    assert np.allclose(grid.origin[:3, 3], [-1.0, -1.0, 0.0])
    cells = grid.grid
    hot = (int((HOT[1] + 1) / 0.05), int((HOT[0] + 1) / 0.05))
    assert cells[hot] == 100  # lethal where the defect is
    assert cells[20, 20] == 0 and cells[2, 2] == -1  # free under the flight, unknown far off
    assert set(np.unique(cells)) <= {-1, *range(0, 101)}
    lethal = np.argwhere(cells == 100)
    centres = (lethal + 0.5) * 0.05 - 1.0  # (row, col) -> (y, x)
    assert np.all(np.hypot(centres[:, 1] - HOT[0], centres[:, 0] - HOT[1]) < 0.1)


def test_landing_sites_avoid_the_defect(rig) -> None:
    poses = rig.listen("/hazard_map/landing_sites", "geometry_msgs/msg/PoseArray", LATCHED)
    fly(rig, VIEWS)
    rig.node.publish()
    assert rig.pump(lambda: bool(poses) and len(poses[-1].poses) == 5)
    for pose in poses[-1].poses:
        p = pose.position
        assert np.hypot(p.x - HOT[0], p.y - HOT[1]) > 0.1 + 0.05  # footprint + defect radius
        assert abs(p.x) < 0.62 and abs(p.y) < 0.62  # on ground that was seen
    assert poses[-1].header.frame_id == "map"
    assert [s.score for s in rig.node.sites] == sorted((s.score for s in rig.node.sites),
                                                       reverse=True)  # fmt: skip


def test_bad_maps_are_counted_and_the_node_goes_on(rig) -> None:
    mono = frame_to_msg(Frame(np.zeros((8, 8), np.uint8), "mono8", NS, "camera_optical"))
    rig.publish("/detector/anomaly_map", "sensor_msgs/msg/Image", mono, SENSOR_DATA)
    assert rig.pump(lambda: rig.node.problems.counts["bad anomaly map"] == 1)
    heat = frame_to_msg(Frame(heat_for((0, 0)), "32FC1", NS, "camera_optical"))
    rig.publish("/detector/anomaly_map", "sensor_msgs/msg/Image", heat, SENSOR_DATA)
    assert rig.pump(lambda: rig.node.problems.counts["map not placed"] == 1)  # no camera_info
    fly(rig, [(0.0, 0.0)], rounds=1)  # then everything arrives: placed
    assert rig.node.counts["placed"] == 1


def test_a_map_ahead_of_its_transform_waits_for_it(rig) -> None:
    """tf is often a frame behind the images (a player publishes a frame's /tf after its image):
    the map waits for its transform (tf_wait_s) rather than being dropped."""
    fly(rig, [(0.0, 0.0)], rounds=1)  # camera_info, the mount, one placed map at 0.1 s
    stamp = 2 * NS  # its transform is not there yet: the newest is 0.1 s
    msg = frame_to_msg(Frame(heat_for((0.3, 0.0)), "32FC1", stamp, "camera_optical"))
    rig.publish("/detector/anomaly_map", "sensor_msgs/msg/Image", msg, SENSOR_DATA)
    assert rig.pump(lambda: len(rig.node._waiting) == 1)
    assert rig.node.counts["placed"] == 1 and not rig.node.problems.counts["map not placed"]
    rig.publish("/tf", "tf2_msgs/msg/TFMessage",
                s3.tf_message("map", "base_link", s3.base_pose(0.3, 0.0), stamp))  # fmt: skip
    assert rig.pump(lambda: rig.node.counts["placed"] == 2)  # at the next publish period
    assert not rig.node._waiting and not rig.node.problems.counts["map not placed"]
