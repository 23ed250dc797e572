"""Everything that touches Cyclone DDS's Python binding below its public API, in one place.

Why private names: Cyclone's Python IDL decodes ``sequence<uint8>`` into a Python list (ms per
image) and cannot declare a ``bytes`` field at all, so samples move as CDR bytes through the C
layer the Python classes use themselves: ``_clayer.ddspy_write(writer._ref, cdr)`` and
``_clayer.ddspy_take(reader._ref, mask, n)``. The Topic is still declared with an IdlStruct
generated from the ROS definition, so the type name (``pkg::msg::dds_::Type_``) and the XTypes
type information that discovery sends are those of the ROS 2 type.

These names may change in any release: :func:`check_version` refuses any cyclonedds but the one
pinned in setup.py (:data:`PINNED_VERSION`).

CDR on the wire: what rosbags writes (encapsulation ``00 01 00 00``, XCDR1 little endian) padded
with zeros to a multiple of 4 bytes, the number of padding bytes in the low two bits of the
encapsulation options as XTypes 1.3 (7.6.3.1.2) says. Cyclone sends whole 4-byte words: unpadded
data reaches a remote reader with up to 3 bytes of whatever followed it in memory. Received data
is normalised back (padding stripped, options cleared), so a subscriber sees exactly rosbags'
bytes whichever DDS wrote them.
"""

from __future__ import annotations

import importlib.metadata
import keyword
import threading
from typing import Any

PINNED_VERSION = "11.0.1"


class CycloneError(RuntimeError):
    """Cyclone DDS is missing, of another version than the pinned one, or refused an operation."""


def check_version() -> str:
    """The installed cyclonedds version; raise :class:`CycloneError` unless it is the pinned one."""
    try:
        installed = importlib.metadata.version("cyclonedds")
    except importlib.metadata.PackageNotFoundError:
        raise CycloneError(
            f"the dds transport needs cyclonedds=={PINNED_VERSION} (pip install "
            f"'cyclonedds=={PINNED_VERSION}', or the 'core' extra of vad_inspection)"
        ) from None
    if installed != PINNED_VERSION:
        raise CycloneError(
            "the dds transport uses private parts of cyclonedds (_clayer.ddspy_write/ddspy_take)"
            f" checked against cyclonedds=={PINNED_VERSION}, but {installed} is installed; "
            f"install cyclonedds=={PINNED_VERSION}, or re-check vad_inspection/transport/"
            "_cyclone.py against the new version and update the pin"
        )
    return installed


check_version()

from cyclonedds import _clayer  # noqa: E402 - only after the version check
from cyclonedds.core import (  # noqa: E402
    DDSException,
    Entity,
    GuardCondition,
    InstanceState,
    Policy,
    Qos,
    ReadCondition,
    SampleState,
    ViewState,
    WaitSet,
)
from cyclonedds.domain import DomainParticipant  # noqa: E402
from cyclonedds.idl import IdlStruct, make_idl_struct  # noqa: E402
from cyclonedds.idl import types as idl  # noqa: E402
from cyclonedds.pub import DataWriter  # noqa: E402
from cyclonedds.sub import DataReader  # noqa: E402
from cyclonedds.topic import Topic as _CycloneTopic  # noqa: E402
from cyclonedds.util import duration  # noqa: E402

from ..msgs.types import typestore as _typestore  # noqa: E402
from .naming import dds_typename  # noqa: E402
from .qos import QoS  # noqa: E402

__all__ = [  # the public Cyclone classes the dds binding uses, re-exported after the check
    "DDSException",
    "DataReader",
    "DataWriter",
    "DomainParticipant",
    "GuardCondition",
    "ReadCondition",
    "Topic",
    "WaitSet",
]

ANY_STATE = SampleState.Any | ViewState.Any | InstanceState.Any
_PAD = (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")
_TIMEOUT = DDSException.DDS_RETCODE_TIMEOUT  # a reliable writer's history stayed full too long
_UNLIMITED = -1  # DDS_LENGTH_UNLIMITED

# ROS 2 IDL type of each rosbags base type (rosidl: char -> uint8, byte -> octet)
_BASE: dict[str, Any] = {
    "bool": bool,
    "byte": idl.byte,
    "char": idl.uint8,
    "int8": idl.int8,
    "uint8": idl.uint8,
    "int16": idl.int16,
    "uint16": idl.uint16,
    "int32": idl.int32,
    "uint32": idl.uint32,
    "int64": idl.int64,
    "uint64": idl.uint64,
    "float32": idl.float32,
    "float64": idl.float64,
}

_classes: dict[tuple[int, str], type[IdlStruct]] = {}
#: Cyclone's Python binding builds a type's descriptor (and its key and size analysis) lazily,
#: on the first Topic of that type, and is not safe when two threads of a process do it at once
#: (two buses opening together failed with "Non specific error ... upon initialisation of a
#: cyclonedds.topic.Topic"): types are built and topics created under this one lock.
_TYPES_LOCK = threading.RLock()


class Topic(_CycloneTopic):
    """Cyclone's Topic, created under :data:`_TYPES_LOCK`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with _TYPES_LOCK:
            super().__init__(*args, **kwargs)


# --------------------------------------------------------------------------------------------
# types


def idl_class(typename: str, distro: str = "jazzy", store: Any = None) -> type[IdlStruct]:
    """The IdlStruct for ROS type ``pkg/msg/Type`` (named ``pkg::msg::dds_::Type_``), nested
    types included, generated from the rosbags definition in ``store`` (default: the distro's)."""
    store = store if store is not None else _typestore(distro)
    key = (id(store), typename)
    with _TYPES_LOCK:
        cls = _classes.get(key)
        if cls is None:
            cls = _classes[key] = _build(typename, store)
        return cls


def _build(typename: str, store: Any) -> type[IdlStruct]:
    try:
        _consts, fields = store.fielddefs[typename]
    except KeyError:
        raise CycloneError(f"unknown message type {typename!r}: not in the typestore") from None
    members: dict[str, Any] = {}
    for name, desc in fields:
        if keyword.iskeyword(name):
            raise CycloneError(f"{typename}: field name {name!r} is a Python keyword")
        members[name] = _field_type(typename, name, desc, store)
    if not members:  # rosidl gives empty messages one uint8 member
        members["structure_needs_at_least_one_member"] = idl.uint8
    short = typename.rpartition("/")[2]
    return make_idl_struct(f"{short}_", dds_typename(typename), members)


def _field_type(owner: str, field: str, desc: tuple, store: Any) -> Any:
    kind = int(desc[0])
    if kind == 1:  # BASE: (name, string bound)
        base, bound = desc[1]
        if base == "string":
            return idl.bounded_str[bound] if bound else str
        if base in _BASE:
            return _BASE[base]
        raise CycloneError(f"{owner}.{field}: type {base!r} is not supported on the dds transport")
    if kind == 2:  # NAME
        return idl_class(desc[1], store=store)
    if kind in (3, 4):  # ARRAY (fixed) / SEQUENCE (bounded when > 0)
        elem, size = desc[1]
        sub = _field_type(owner, field, elem, store)
        if kind == 3:
            return idl.array[sub, size]
        return idl.sequence[sub, size] if size else idl.sequence[sub]
    raise CycloneError(f"{owner}.{field}: unsupported field description {desc!r}")


# --------------------------------------------------------------------------------------------
# CDR on the wire


def pad(cdr: bytes) -> bytes:
    """rosbags CDR -> what goes to ``ddspy_write``: zero-padded to 4 bytes, count in options."""
    n = -len(cdr) % 4
    if not n:
        return cdr
    if len(cdr) < 4:
        return cdr + _PAD[n]
    return cdr[:3] + bytes(((cdr[3] & 0xFC) | n,)) + cdr[4:] + _PAD[n]


def unpad(data: bytes) -> bytes:
    """What ``ddspy_take`` returns -> rosbags CDR (padding announced in the options removed)."""
    if len(data) < 4:
        return data
    n = data[3] & 3
    if not n:
        return data
    if n > len(data) - 4:
        return data  # nonsense options: leave the bytes for the decoder to reject
    return data[:3] + bytes((data[3] & 0xFC,)) + data[4 : len(data) - n]


def unpadded_view(data: bytes) -> memoryview:
    """:func:`unpad` without the copy: a view without the padding (options left as received,
    which decoders ignore). For the decode path, where a 6 MB copy per image would show."""
    n = data[3] & 3 if len(data) >= 4 else 0
    view = memoryview(data)
    return view[: len(data) - n] if 0 < n <= len(data) - 4 else view


def write(writer: Any, cdr: bytes) -> bool:
    """Send one sample of CDR bytes; False when a reliable writer's history stayed full for the
    whole max blocking time (the sample is not sent); raise on other errors."""
    ret = _clayer.ddspy_write(writer._ref, pad(cdr))
    if ret == _TIMEOUT:
        return False
    if ret < 0:
        raise DDSException(ret, f"writing a sample on {writer.topic.get_name()}")
    return True


def take(reader: Any, limit: int = 32, normalise: bool = True) -> list[bytes]:
    """Up to ``limit`` samples from ``reader`` (invalid/disposal samples skipped): rosbags' CDR
    bytes, or with ``normalise=False`` exactly what ``ddspy_take`` returned (padded)."""
    got = _clayer.ddspy_take(reader._ref, ANY_STATE, limit)
    if isinstance(got, int):
        raise DDSException(got, f"taking samples from {reader.topic.get_name()}")
    return [unpad(data) if normalise else data for data, info in got if info.valid_data]


# --------------------------------------------------------------------------------------------
# QoS and entities


def cyclone_qos(qos: QoS, max_blocking_s: float = 1.0, user_data: bytes | None = None) -> Qos:
    """Our QoS -> Cyclone's as rmw_cyclonedds_cpp builds it (``create_readwrite_qos``): the
    policies one to one, the XCDR1 data representation ROS 2 uses, no auto-dispose when a writer
    goes, and ``user_data`` (the ``typehash=...;`` ROS 2 Iron+ peers parse) when given.

    Transient local also sets the durability service history to the history itself: Cyclone
    keeps a writer's historical data for late joiners by that policy, not by the history, and
    its default (keep last 1) would give a late subscriber one sample whatever the depth.
    """
    history = (
        Policy.History.KeepLast(qos.depth) if qos.keep() is not None else Policy.History.KeepAll
    )
    policies = [
        Policy.Reliability.Reliable(duration(seconds=max_blocking_s))
        if qos.reliable
        else Policy.Reliability.BestEffort,
        Policy.Durability.TransientLocal if qos.latched else Policy.Durability.Volatile,
        history,
        Policy.DataRepresentation(use_cdrv0_representation=True),
        Policy.WriterDataLifecycle(autodispose=False),
    ]
    if qos.latched:
        policies.append(
            Policy.DurabilityService(
                cleanup_delay=0,
                history=history,
                max_samples=_UNLIMITED,
                max_instances=_UNLIMITED,
                max_samples_per_instance=_UNLIMITED,
            )
        )
    if user_data is not None:
        policies.append(Policy.Userdata(user_data))
    return Qos(*policies)


def participant(domain_id: int, user_data: bytes | None = None) -> DomainParticipant:
    """A DomainParticipant, with USER_DATA (``enclave=/;`` for a ROS 2 node) when given."""
    qos = Qos(Policy.Userdata(user_data)) if user_data is not None else None
    return DomainParticipant(domain_id, qos)


def guid(entity: Any) -> bytes:
    """The entity's 16-byte DDS GUID as ``dds_get_guid`` gives it (prefix, then entity id)."""
    return bytes(entity.guid.bytes)


def incompatible_qos(entity: Any) -> tuple[int, int]:
    """``(total_count, last_policy_id)`` of a reader's requested- or a writer's offered-
    incompatible-QoS status: how many peers were refused so far, and for which policy last
    (Cyclone's ``dds_qos_policy_id_t``). Reading the status resets only its change counts."""
    if isinstance(entity, DataReader):
        status = entity.get_requested_incompatible_qos_status()
    else:
        status = entity.get_offered_incompatible_qos_status()
    return int(status.total_count), int(status.last_policy_id)


def publication_matched(writer: Any) -> int:
    return int(writer.get_publication_matched_status().current_count)


def subscription_matched(reader: Any) -> int:
    return int(reader.get_subscription_matched_status().current_count)


def delete(entity: Any) -> None:
    """Delete a Cyclone entity now rather than when Python collects it (children go with it)."""
    if isinstance(entity, Entity) and getattr(entity, "_ref", None) in Entity._entities:
        entity.__del__()
