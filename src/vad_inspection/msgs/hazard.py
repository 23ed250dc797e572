"""Landing sites and stand-off points <-> their ROS 2 messages, for planners and RViz/Foxglove.

- ``geometry_msgs/PoseArray``: the ranked sites, best first (orientation identity), what a planner
  reads;
- ``visualization_msgs/MarkerArray``: per site a flat disc of the footprint (green for the best,
  towards yellow down the list) and its rank and score as text;
- the scores travel in a ``diagnostic_msgs/DiagnosticArray`` (one status per site, its key values:
  position, clear radius, anomaly in the footprint, score), so ``ros2 topic echo`` shows them.

The grids themselves are nav_msgs/OccupancyGrid (:func:`~.geometry.grid_to_msg`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..geometry.landing import Site
from .anomaly import diagnostic_array, point_pose, status
from .defaults import new_message
from .time import header

_CYLINDER, _TEXT = 3, 9
_ADD, _DELETEALL = 0, 3


def site_poses(sites: Sequence[Site], stamp_ns: int, frame_id: str, distro: str = "jazzy") -> Any:
    return new_message(
        "geometry_msgs/msg/PoseArray",
        distro,
        header=header(stamp_ns, frame_id, distro),
        poses=[point_pose((s.x, s.y, s.z), distro) for s in sites],
    )


def site_markers(
    sites: Sequence[Site], footprint_radius_m: float, stamp_ns: int, frame_id: str,
    distro: str = "jazzy",
) -> Any:  # fmt: skip
    """DELETEALL first (sites move as the map fills), then a disc and a label per site."""
    head = header(stamp_ns, frame_id, distro)
    items = [new_message("visualization_msgs/msg/Marker", distro, header=head, ns="sites",
                         action=_DELETEALL)]  # fmt: skip
    for rank, s in enumerate(sites):
        share = rank / max(len(sites) - 1, 1)
        colour = new_message("std_msgs/msg/ColorRGBA", distro, r=share, g=1.0, b=0.2, a=0.6)
        size = new_message("geometry_msgs/msg/Vector3", distro, x=2 * footprint_radius_m,
                           y=2 * footprint_radius_m, z=0.05 * footprint_radius_m)  # fmt: skip
        items.append(new_message(
            "visualization_msgs/msg/Marker", distro, header=head, ns="sites", id=2 * rank,
            type=_CYLINDER, action=_ADD, pose=point_pose((s.x, s.y, s.z), distro), scale=size,
            color=colour,
        ))  # fmt: skip
        text = new_message("geometry_msgs/msg/Vector3", distro, z=0.5 * footprint_radius_m)
        white = new_message("std_msgs/msg/ColorRGBA", distro, r=1.0, g=1.0, b=1.0, a=1.0)
        above = (s.x, s.y, s.z + 0.5 * footprint_radius_m)
        items.append(new_message(
            "visualization_msgs/msg/Marker", distro, header=head, ns="sites", id=2 * rank + 1,
            type=_TEXT, action=_ADD, pose=point_pose(above, distro), scale=text, color=white,
            text=f"#{rank + 1} {s.score:.2f}",
        ))  # fmt: skip
    return new_message("visualization_msgs/msg/MarkerArray", distro, markers=items)


def site_scores(sites: Sequence[Site], stamp_ns: int, node: str, distro: str = "jazzy") -> Any:
    statuses = []
    for rank, s in enumerate(sites):
        values = {
            "x": f"{s.x:.3f}", "y": f"{s.y:.3f}", "z": f"{s.z:.3f}",
            "clear_radius_m": f"{s.clear_radius_m:.2f}", "mean_anomaly": f"{s.mean_anomaly:.3f}",
            "max_anomaly": f"{s.max_anomaly:.3f}", "score": f"{s.score:.4f}",
        }  # fmt: skip
        statuses.append(status(f"{node}: site {rank + 1}", 0, f"score {s.score:.3f}", values,
                               distro=distro))  # fmt: skip
    return diagnostic_array(statuses, stamp_ns, distro)
