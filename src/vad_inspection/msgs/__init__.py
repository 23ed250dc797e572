"""The message layer: one codec between domain objects and ROS 2 messages, CDR bytes on the wire.

Message classes and CDR (de)serialisation come from rosbags' typestores (Humble and Jazzy) with
vision_msgs registered from the ``.msg`` texts shipped in ``definitions/``; nothing here needs a
ROS installation. Every failure to decode raises :class:`MessageError` naming the type and the
defect. Only conversions live here: the geometry they convert to and from (camera models, 4x4
transforms, grids) is :mod:`vad_inspection.geometry`'s.
"""

from .cdr import deserialize, deserialize_with, serialize, serialize_with
from .geometry import (
    camera_info_to_model,
    grid_to_msg,
    matrix_to_pose,
    matrix_to_transform,
    model_to_camera_info,
    msg_to_grid,
    pose_to_matrix,
    tf_message_to_transforms,
    transform_to_matrix,
)
from .image import (
    ENCODINGS,
    Encoding,
    Frame,
    compressed_to_frame,
    encoding_info,
    frame_to_compressed,
    frame_to_msg,
    msg_to_frame,
    to_rgb,
)
from .time import header, ns_to_stamp, stamp_to_ns
from .types import DISTROS, MessageError, msg_class, normalize_typename, typestore

__all__ = [
    "DISTROS",
    "ENCODINGS",
    "Encoding",
    "Frame",
    "MessageError",
    "camera_info_to_model",
    "compressed_to_frame",
    "deserialize",
    "deserialize_with",
    "encoding_info",
    "frame_to_compressed",
    "frame_to_msg",
    "grid_to_msg",
    "header",
    "matrix_to_pose",
    "matrix_to_transform",
    "model_to_camera_info",
    "msg_class",
    "msg_to_frame",
    "msg_to_grid",
    "normalize_typename",
    "ns_to_stamp",
    "pose_to_matrix",
    "serialize",
    "serialize_with",
    "stamp_to_ns",
    "tf_message_to_transforms",
    "to_rgb",
    "transform_to_matrix",
    "typestore",
]
