"""Message types per ROS 2 distribution: rosbags' typestores plus vision_msgs.

rosbags ships the standard interfaces of every ROS 2 release (std_msgs, sensor_msgs,
geometry_msgs, nav_msgs, diagnostic_msgs, ...) as generated dataclasses and CDR codecs, so no ROS
installation is needed to speak the ROS 2 wire format. vision_msgs is not a core package; its
definitions ship with this package as ``.msg`` text (``definitions/vision_msgs``) and are
registered into each typestore once.

Services: rosbags' typestores hold messages only. The ``.srv`` definitions the nodes serve or call
(lifecycle_msgs, std_srvs, rcl_interfaces parameter services) ship as text under
``definitions/srv/<pkg>/<Srv>.srv`` (copied from the official interface packages; identical on
Humble and Jazzy) and are registered as two message types each, ``<pkg>/srv/<Srv>_Request`` and
``<pkg>/srv/<Srv>_Response``, exactly the structures rosidl generates (an empty side gets rosidl's
``uint8 structure_needs_at_least_one_member``, so the CDR is the one byte ROS 2 puts on the wire).
:func:`srv_types` names the pair.

Humble and Jazzy both release vision_msgs 4.1.1 (the ``vision_msgs/Pose2D`` bounding-box centre
arrived in 4.0.0, before Humble; ``geometry_msgs/Pose2D`` is the ROS 1 / Galactic layout), so one
set of definitions serves both. ``_VISION_MSGS`` maps each distro to its folder so that a future
divergence is a new folder and one line here.
"""

from __future__ import annotations

import re
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
_SRV_DIR = ("definitions", "srv")
_SRV_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)
# what rosidl gives a structure without fields (rosidl_adapter / rosidl_generator_dds_idl)
_EMPTY_MEMBER = "uint8 structure_needs_at_least_one_member\n"

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


def srv_types(srvtype: str, distro: str | None = None) -> tuple[str, str]:
    """``pkg/srv/Srv`` (or ``pkg/Srv``) -> ``("pkg/srv/Srv_Request", "pkg/srv/Srv_Response")``.

    With ``distro``, also check that both types are registered for it (:class:`MessageError`
    naming the service otherwise).
    """
    parts = srvtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "srv", parts[1]]
    if len(parts) != 3 or parts[1] != "srv" or not all(parts):
        raise MessageError(f"invalid service type {srvtype!r}: expected pkg/srv/Name")
    base = "/".join(parts)
    names = (f"{base}_Request", f"{base}_Response")
    if distro is not None:
        known = typestore(distro).types
        if not all(name in known for name in names):
            raise MessageError(f"unknown service type {srvtype!r} for ROS 2 {distro}")
    return names


def srv_definition_texts() -> dict[str, str]:
    """The shipped ``.srv`` texts: full service type name (``pkg/srv/Srv``) -> definition."""
    folder = resources.files(__package__).joinpath(*_SRV_DIR)
    texts = {}
    for pkg in sorted(folder.iterdir(), key=lambda e: e.name):
        if not pkg.is_dir():
            continue
        for entry in sorted(pkg.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".srv"):
                texts[f"{pkg.name}/srv/{entry.name[:-4]}"] = entry.read_text(encoding="utf-8")
    if not texts:
        raise MessageError(f"no service definitions found in {folder} (package data missing?)")
    return texts


def srv_typedefs(srvtype: str, text: str) -> dict[str, Any]:
    """rosbags type definitions of the request and response of one ``.srv`` text."""
    sides = _SRV_SEPARATOR.split(text)
    if len(sides) != 2:
        found = len(sides) - 1
        raise MessageError(f"{srvtype}: a .srv needs exactly one '---' line, found {found}")
    pkg, _, name = srvtype.split("/")
    out: dict[str, Any] = {}
    for side, typename in zip(sides, srv_types(srvtype), strict=True):
        # parsed as pkg/msg/...: rosbags only accepts msg names, and relative field types of a
        # .srv resolve to pkg/msg/<Type> exactly as for a .msg in that package
        suffix = typename.rpartition("_")[2]
        parsed = f"{pkg}/msg/{name}_{suffix}"
        consts, fields = get_types_from_msg(side, parsed)[parsed]
        if not fields:
            consts, fields = get_types_from_msg(side + "\n" + _EMPTY_MEMBER, parsed)[parsed]
        out[typename] = (consts, fields)
    return out


def _build(distro: str) -> Typestore:
    store = get_typestore(_STORES[distro])
    types: dict[str, Any] = {}
    for name, text in definition_texts(distro).items():
        types.update(get_types_from_msg(text, name))
    for name, text in srv_definition_texts().items():
        types.update(srv_typedefs(name, text))
    store.register(types)
    return store


def typestore(distro: str = "jazzy") -> Typestore:
    """The rosbags typestore for ``distro`` with vision_msgs and the shipped services registered
    (built once, shared).

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
