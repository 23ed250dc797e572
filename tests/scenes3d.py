"""A synthetic inspection scene with known geometry: a textured floor with dark defects at known
3-D positions, seen by a downward camera moving over it, rendered by ray casting.

Everything a detector node needs comes out of it with exact ground truth: the image, a 16UC1
depth image (millimetres), the CameraInfo numbers, and the transforms map -> base_link (moving)
and base_link -> camera_optical (static). The texture is a function of the floor position, so
clean views from anywhere look like one another (what a fitted model must accept) and a defect
looks the same from every viewpoint (what tags must recognise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vad_inspection.geometry import CameraModel
from vad_inspection.msgs.defaults import new_message
from vad_inspection.msgs.geometry import matrix_to_transform, model_to_camera_info
from vad_inspection.msgs.image import Frame, frame_to_msg
from vad_inspection.msgs.time import header

WIDTH = HEIGHT = 128
FX = FY = 200.0
CX, CY = (WIDTH - 1) / 2, (HEIGHT - 1) / 2
ALTITUDE = 1.0  # m: 0.5 cm of floor per pixel
#: optical frame (z forward, x right, y down) looking straight down from base_link (z up)
R_BASE_FROM_OPTICAL = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class Defect:
    x: float
    y: float
    radius: float = 0.04


DEFECTS = (Defect(0.30, 0.10), Defect(-0.25, 0.40))


def k_matrix() -> np.ndarray:
    return np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1.0]])


def texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Floor brightness at (x, y): stripes every 4 cm and a fine deterministic grain."""
    stripes = (np.mod(x, 0.04) < 0.012) * 60.0
    grain = 12.0 * np.sin(x * 517.0) * np.cos(y * 433.0)
    return 110.0 + stripes + grain


def render(
    x: float, y: float, defects: tuple[Defect, ...] = DEFECTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The view from base_link at ``(x, y, ALTITUDE)``: rgb8 image, 16UC1 depth (mm), bool mask
    of defect pixels."""
    u, v = np.meshgrid(np.arange(WIDTH, dtype=np.float64), np.arange(HEIGHT, dtype=np.float64))
    rays = np.stack([(u - CX) / FX, (v - CY) / FY, np.ones_like(u)], axis=-1)  # optical, z = 1
    world = rays @ R_BASE_FROM_OPTICAL.T  # directions in base_link (= map orientation)
    t = ALTITUDE / -world[..., 2]
    wx, wy = x + t * world[..., 0], y + t * world[..., 1]
    gray = texture(wx, wy)
    mask = np.zeros(gray.shape, dtype=bool)
    for d in defects:
        inside = (wx - d.x) ** 2 + (wy - d.y) ** 2 <= d.radius**2
        mask |= inside
        gray[inside] = 25.0
    image = np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    depth = np.full(gray.shape, round(ALTITUDE * 1000), dtype=np.uint16)
    return image, depth, mask


def base_pose(x: float, y: float) -> np.ndarray:
    """map -> base_link at a viewpoint (identity rotation, z = ALTITUDE)."""
    pose = np.eye(4)
    pose[:3, 3] = (x, y, ALTITUDE)
    return pose


def optical_mount() -> np.ndarray:
    """base_link -> camera_optical (static)."""
    mount = np.eye(4)
    mount[:3, :3] = R_BASE_FROM_OPTICAL
    return mount


def clean_views(count: int, seed: int = 0) -> list[np.ndarray]:
    """Views far from every defect (x in [1.5, 3]): normal material only."""
    rng = np.random.default_rng(seed)
    return [render(float(rng.uniform(1.5, 3.0)), float(rng.uniform(-1, 1)), ())[0]
            for _ in range(count)]  # fmt: skip


def fit_floor_model(path: Any, size: int = 64) -> Any:
    """PatchCore fitted on clean views of the floor (32 fit, 8 calibrate), saved at ``path``."""
    from vad_inspection.vad.calibration import from_normal_scores
    from vad_inspection.vad.registry import CommonOptions, create_model, save_model

    views = clean_views(40)
    model = create_model("patchcore", CommonOptions(size=size), coreset_ratio=0.1)
    model.fit(views[:32])
    calibration = from_normal_scores(model.predict(views[32:]).scores)
    return save_model(model, path, calibration)


# -- the messages a camera driver and tf would publish for a view ----------------------------


def image_msg(image: np.ndarray, stamp_ns: int, encoding: str = "rgb8") -> Any:
    return frame_to_msg(Frame(np.ascontiguousarray(image), encoding, stamp_ns, "camera_optical"))


def camera_info(stamp_ns: int = 0) -> Any:
    model = CameraModel(WIDTH, HEIGHT, k_matrix(), np.zeros(5), "plumb_bob",
                        "camera_optical")  # fmt: skip
    return model_to_camera_info(model, stamp_ns)


def tf_message(parent: str, child: str, matrix: np.ndarray, stamp_ns: int) -> Any:
    stamped = new_message("geometry_msgs/msg/TransformStamped", header=header(stamp_ns, parent),
                          child_frame_id=child, transform=matrix_to_transform(matrix))  # fmt: skip
    return new_message("tf2_msgs/msg/TFMessage", transforms=[stamped])
