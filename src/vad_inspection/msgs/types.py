"""Message types per ROS 2 distribution: rosbags' typestores plus vision_msgs.

rosbags ships the standard interfaces of every ROS 2 release (std_msgs, sensor_msgs,
geometry_msgs, nav_msgs, diagnostic_msgs, ...) as generated dataclasses and CDR codecs, so no ROS
installation is needed to speak the ROS 2 wire format. vision_msgs is not a core package; its
definitions ship with this package as ``.msg`` text (``definitions/vision_msgs``) and are
registered into each typestore once.

Humble and Jazzy both release vision_msgs 4.1.1 (the ``vision_msgs/Pose2D`` bounding-box centre
arrived in 4.0.0, before Humble; ``geometry_msgs/Pose2D`` is the ROS 1 / Galactic layout), so one
set of definitions serves both. ``_VISION_MSGS`` maps each distro to its folder so that a future
divergence is a new folder and one line here.
"""

from __future__ import annotations

import threading
from importlib import resources
from typing import TYPE_CHECKING, Any

from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from ..errors import FrameError

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

DISTROS = ("humble", "jazzy")

_STORES = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}
_VISION_MSGS = {"humble": "vision_msgs", "jazzy": "vision_msgs"}

_cache: dict[str, Typestore] = {}
_lock = threading.Lock()


class MessageError(FrameError):
    """A message, its type or its bytes are not what the codec can handle.

    The text always names the message type (or encoding) and what exactly is wrong, so that a
    subscriber can log it and drop the message without guessing.
    """


def check_distro(distro: str) -> str:
    """Return ``distro`` if it is one of :data:`DISTROS`, else raise :class:`MessageError`."""
    if distro not in _STORES:
        raise MessageError(f"unknown ROS 2 distro {distro!r}; supported: {', '.join(DISTROS)}")
    return distro


def normalize_typename(typename: str) -> str:
    """``pkg/Type`` -> ``pkg/msg/Type``; full names pass unchanged."""
    parts = typename.split("/")
    if len(parts) == 2 and all(parts):
        return f"{parts[0]}/msg/{parts[1]}"
    return typename


def definition_texts(distro: str) -> dict[str, str]:
    """The shipped ``.msg`` texts for ``distro``: full type name -> definition text."""
    subdir = _VISION_MSGS[check_distro(distro)]
    folder = resources.files(__package__).joinpath("definitions", subdir)
    texts = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".msg"):
            texts[f"vision_msgs/msg/{entry.name[:-4]}"] = entry.read_text(encoding="utf-8")
    if not texts:
        raise MessageError(f"no vision_msgs definitions found in {folder} (package data missing?)")
    return texts


def _build(distro: str) -> Typestore:
    store = get_typestore(_STORES[distro])
    types: dict[str, Any] = {}
    for name, text in definition_texts(distro).items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def typestore(distro: str = "jazzy") -> Typestore:
    """The rosbags typestore for ``distro`` with vision_msgs registered (built once, shared).

    Treat it as read-only: it is shared by every codec in the process. A caller that needs extra
    types (a bag's own definitions, say) builds its own store instead of registering here.
    """
    check_distro(distro)
    store = _cache.get(distro)
    if store is None:
        with _lock:
            store = _cache.get(distro)
            if store is None:
                store = _cache[distro] = _build(distro)
    return store


def msg_class(typename: str, distro: str = "jazzy") -> type:
    """The rosbags dataclass for ``typename`` (e.g. ``"sensor_msgs/msg/Image"``) in ``distro``."""
    name = normalize_typename(typename)
    try:
        return typestore(distro).types[name]
    except KeyError:
        raise MessageError(f"unknown message type {typename!r} for ROS 2 {distro}") from None
