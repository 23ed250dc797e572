"""What a ROS 2 node tells the graph about itself on DDS, as rmw_cyclonedds_cpp does it.

No middleware here: bytes and messages only, so every rule can be tested without a network. The
dds binding (:mod:`.dds`) puts them on Cyclone DDS entities.

What ROS 2 expects from a participant that hosts nodes (read in rmw_cyclonedds_cpp
``src/rmw_node.cpp`` and rmw_dds_common ``src/graph_cache.cpp``, ``src/qos.cpp``, branches humble
and jazzy):

- the participant's USER_DATA QoS is ``enclave=<enclave>;`` (``/`` unless security enclaves are in
  use). ``ros2 node list`` keeps only participants it can attribute nodes to;
- the participant publishes on the DDS topic ``ros_discovery_info`` (no ``rt/`` prefix) an
  ``rmw_dds_common/msg/ParticipantEntitiesInfo``: its own GID and, per node, namespace, name and
  the GIDs of the node's readers and writers. Reliable, transient local, keep last 1, so a late
  joiner gets the current state; republished on every change. Without it the node's topics work
  but the node is invisible to ``ros2 node list`` / ``ros2 topic info -v``;
- a GID is the entity's 16-byte DDS GUID (12-byte prefix, 4-byte entity id, as Cyclone's
  ``dds_get_guid`` gives it) zero-padded to the message's ``Gid.data`` length: 24 bytes on Humble,
  16 from Iron on (``rmw_dds_common/msg/Gid.msg``: ``char[24]`` / ``char[16]``);
- from Iron on, every endpoint's USER_DATA is ``typehash=RIHS01_<64 hex>;`` (service endpoints put
  ``clientid=...;`` / ``serviceid=...;`` first). A Jazzy process that finds an endpoint without it
  logs "Failed to parse type hash ... from USER_DATA '(null)'" for each one. Humble sets no
  USER_DATA on endpoints.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..msgs import cdr
from ..msgs.types import msg_class, typestore
from .qos import Durability, History, QoS, Reliability

ENCLAVE = "/"
DISCOVERY_TOPIC = "ros_discovery_info"
DISCOVERY_TYPE = "rmw_dds_common/msg/ParticipantEntitiesInfo"
DISCOVERY_QOS = QoS(Reliability.RELIABLE, Durability.TRANSIENT_LOCAL, History.KEEP_LAST, 1)
"""What rmw_cyclonedds publishes ``ros_discovery_info`` with (its readers use KEEP_ALL)."""

GUID_SIZE = 16
_NO_TYPE_HASH = frozenset({"humble"})  # distros before REP-2011 type hashes (Iron)

# Cyclone DDS's dds_qos_policy_id_t (dds/ddsc/dds_public_qosdefs.h), as reported in the
# requested/offered incompatible QoS statuses' last_policy_id; named as ROS 2 names them.
QOS_POLICY_NAMES: dict[int, str] = {
    1: "USER_DATA",
    2: "DURABILITY",
    3: "PRESENTATION",
    4: "DEADLINE",
    5: "LATENCY_BUDGET",
    6: "OWNERSHIP",
    7: "OWNERSHIP_STRENGTH",
    8: "LIVELINESS",
    9: "TIME_BASED_FILTER",
    10: "PARTITION",
    11: "RELIABILITY",
    12: "DESTINATION_ORDER",
    13: "HISTORY",
    14: "RESOURCE_LIMITS",
    15: "ENTITY_FACTORY",
    16: "WRITER_DATA_LIFECYCLE",
    17: "READER_DATA_LIFECYCLE",
    18: "TOPIC_DATA",
    19: "GROUP_DATA",
    20: "TRANSPORT_PRIORITY",
    21: "LIFESPAN",
    22: "DURABILITY_SERVICE",
    23: "PROPERTY",
    24: "TYPE_CONSISTENCY_ENFORCEMENT",
    25: "DATA_REPRESENTATION",
}


# --------------------------------------------------------------------------------------------
# USER_DATA


def participant_user_data(enclave: str = ENCLAVE) -> bytes:
    """The participant's USER_DATA: ``enclave=/;`` (rmw_cyclonedds ``rmw_context_impl_s::init``)."""
    return f"enclave={enclave};".encode()


def has_type_hash(distro: str) -> bool:
    """Whether endpoints of ``distro`` carry a type hash (Iron and later do, Humble does not)."""
    return distro not in _NO_TYPE_HASH


@functools.lru_cache(maxsize=256)
def type_hash(typename: str, distro: str = "jazzy") -> str | None:
    """``RIHS01_<hex>`` of a message type as rosidl computes it, or None before Iron.

    rosbags computes the hash from its field definitions, but it hashes a ``char`` field as
    FIELD_TYPE_CHAR, whereas rosidl converts ``.msg`` to IDL first (rosidl_adapter maps ``char``
    to ``uint8``) and hashes the IDL: so ``char`` is hashed as ``uint8`` here. Types without
    ``char`` (nearly all) get rosbags' hash unchanged. rmw_dds_common's Gid is ``char[16]``.
    """
    if not has_type_hash(distro):
        return None
    store = typestore(distro)
    if not _uses_char(typename, store.fielddefs, set()):
        return str(store.hash_rihs01(typename))
    return str(_char_as_uint8_store(distro).hash_rihs01(typename))


def _uses_char(typename: str, defs: Mapping[str, Any], seen: set[str]) -> bool:
    if typename in seen:
        return False
    seen.add(typename)
    return any(_desc_uses_char(desc, defs, seen) for _name, desc in defs[typename][1])


def _desc_uses_char(desc: Any, defs: Mapping[str, Any], seen: set[str]) -> bool:
    kind = int(desc[0])
    if kind == 1:
        return bool(desc[1][0] == "char")
    if kind == 2:
        return _uses_char(desc[1], defs, seen)
    return _desc_uses_char(desc[1][0], defs, seen)  # array / sequence: the element


def _char_to_uint8(desc: Any) -> Any:
    kind = int(desc[0])
    if kind == 1 and desc[1][0] == "char":
        return (desc[0], ("uint8", desc[1][1]))
    if kind in (3, 4):
        return (desc[0], (_char_to_uint8(desc[1][0]), desc[1][1]))
    return desc


@functools.lru_cache(maxsize=4)
def _char_as_uint8_store(distro: str) -> Any:
    """A scratch rosbags Typestore holding only field definitions, ``char`` read as ``uint8``,
    used for hashing only (the hash reads nothing but the field definitions)."""
    from rosbags.typesys.store import Typestore

    scratch = Typestore()
    for name, (consts, fields) in typestore(distro).fielddefs.items():
        scratch.fielddefs[name] = (consts, [(n, _char_to_uint8(d)) for n, d in fields])
    return scratch


def endpoint_user_data(typename: str, distro: str = "jazzy", extra: str = "") -> bytes | None:
    """A reader's or writer's USER_DATA: ``extra`` (e.g. ``clientid=...;`` for services) followed
    by ``typehash=RIHS01_...;`` on Iron and later; None (no USER_DATA at all) on Humble."""
    digest = type_hash(typename, distro)
    if digest is None:
        return extra.encode() if extra else None
    return f"{extra}typehash={digest};".encode()


def parse_user_data(data: bytes | None) -> dict[str, str]:
    """``k1=v1;k2=v2;`` -> ``{"k1": "v1", "k2": "v2"}`` (entries without ``=`` are skipped),
    the way rmw reads USER_DATA."""
    result: dict[str, str] = {}
    for item in (data or b"").decode("utf-8", "replace").split(";"):
        key, sep, value = item.partition("=")
        if sep and key:
            result[key] = value
    return result


# --------------------------------------------------------------------------------------------
# GIDs and the discovery message


def gid_size(distro: str = "jazzy") -> int:
    """Length of ``rmw_dds_common/msg/Gid.data`` in ``distro`` (24 on Humble, 16 on Jazzy)."""
    _consts, fields = typestore(distro).fielddefs["rmw_dds_common/msg/Gid"]
    (_name, desc), *_ = fields
    return int(desc[1][1])


def gid_bytes(guid: uuid.UUID | bytes, distro: str = "jazzy") -> bytes:
    """An entity's GID as rmw_cyclonedds fills it (``convert_guid_to_gid``): the 16 GUID bytes in
    order, then zeros up to the distro's GID length."""
    raw = guid.bytes if isinstance(guid, uuid.UUID) else bytes(guid)
    if len(raw) != GUID_SIZE:
        raise ValueError(f"a DDS GUID has {GUID_SIZE} bytes, got {len(raw)}")
    return raw + bytes(gid_size(distro) - GUID_SIZE)


@dataclass
class NodeEntities:
    """One node's entry in ParticipantEntitiesInfo: its name and its endpoints' GIDs (in the
    order they were created, as rmw_dds_common's graph cache appends them)."""

    namespace: str
    name: str
    readers: list[bytes] = field(default_factory=list)
    writers: list[bytes] = field(default_factory=list)


def participant_entities_info(
    participant_gid: bytes, nodes: Iterable[NodeEntities], distro: str = "jazzy"
) -> Any:
    """The ``rmw_dds_common/msg/ParticipantEntitiesInfo`` message for a participant."""
    import numpy as np

    gid_cls = msg_class("rmw_dds_common/msg/Gid", distro)
    node_cls = msg_class("rmw_dds_common/msg/NodeEntitiesInfo", distro)
    size = gid_size(distro)

    def gid(data: bytes) -> Any:
        if len(data) != size:
            raise ValueError(f"a {distro} GID has {size} bytes, got {len(data)}")
        return gid_cls(data=np.frombuffer(data, dtype=np.uint8).copy())

    entries = [
        node_cls(
            node_namespace=node.namespace,
            node_name=node.name,
            reader_gid_seq=[gid(g) for g in node.readers],
            writer_gid_seq=[gid(g) for g in node.writers],
        )
        for node in nodes
    ]
    return msg_class(DISCOVERY_TYPE, distro)(
        gid=gid(participant_gid), node_entities_info_seq=entries
    )


def encode_participant_entities_info(
    participant_gid: bytes, nodes: Iterable[NodeEntities], distro: str = "jazzy"
) -> bytes:
    """:func:`participant_entities_info` as CDR, ready for the ``ros_discovery_info`` writer."""
    msg = participant_entities_info(participant_gid, nodes, distro)
    return cdr.serialize(msg, DISCOVERY_TYPE, distro)


# --------------------------------------------------------------------------------------------
# incompatible QoS


def policy_name(policy_id: int) -> str:
    return QOS_POLICY_NAMES.get(int(policy_id), f"QoS policy {int(policy_id)}")


def incompatible_qos_message(
    topic: str, policy_id: int, own: QoS | None, is_reader: bool, what: str = ""
) -> str:
    """The warning for a peer whose QoS does not match ours, in the spirit of rclpy's default
    incompatible-QoS event handler: which topic, which policy, what we asked for or offered.
    ``what`` names the endpoint when it is not a plain subscription/publisher."""
    name = policy_name(policy_id)
    mine = _own_value(name, own)
    detail = f" {mine}" if mine else ""
    if is_reader:
        role = what or "subscription"
        return (
            f"{topic}: a publisher offers {name} incompatible with this {role}'s{detail} "
            "request; no messages will be received from it"
        )
    role = what or "publisher"
    return (
        f"{topic}: a subscription requests {name} incompatible with this {role}'s{detail} "
        "offer; no messages will be sent to it"
    )


def _own_value(policy: str, qos: QoS | None) -> str:
    if qos is None:
        return ""
    if policy == "RELIABILITY":
        return "reliable" if qos.reliable else "best effort"
    if policy == "DURABILITY":
        return "transient local" if qos.latched else "volatile"
    return ""
