"""CDR bytes <-> message objects, the single wire currency of every transport.

Bytes are exactly what rosbags' ``serialize_cdr`` writes: a 4-byte encapsulation header
(``00 01 00 00``, CDR little-endian) followed by the XCDR1 body, without trailing padding. This is
what rclpy's raw publish/subscribe carries, what rosbag2 stores and, byte for byte, what Cyclone
DDS produces for the ROS 2 type (checked, see ARCHITECTURE.md).

Deserialisation is where untrusted data enters, so every failure becomes a :class:`MessageError`
naming the type and the defect; a subscriber catches that one class, logs it and drops the
message. Arrays of primitive numbers in the result (``Image.data``, ...) are zero-copy NumPy views
of ``data``: keep ``data`` immutable while the message is alive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .types import MessageError, normalize_typename, typestore

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

_ENCAPSULATIONS = {b"\x00\x00": "CDR big-endian", b"\x00\x01": "CDR little-endian"}


def serialize(msg: Any, typename: str, distro: str = "jazzy") -> bytes:
    """Message object -> CDR little-endian bytes with encapsulation header."""
    return serialize_with(typestore(distro), msg, typename)


def deserialize(data: bytes | bytearray | memoryview, typename: str, distro: str = "jazzy") -> Any:
    """CDR bytes -> message object; any defect raises :class:`MessageError`."""
    return deserialize_with(typestore(distro), data, typename)


def header_stamp_ns(data: bytes | bytearray | memoryview) -> int | None:
    """The stamp of a message that starts with ``std_msgs/Header`` (Image, CompressedImage...),
    read straight from its CDR bytes (after the 4-byte encapsulation: sec int32, nanosec uint32),
    so a player or recorder can pair frames without decoding them. None if the bytes are too
    short to hold a header."""
    if len(data) < 12:
        return None
    order = "little" if data[1] == 1 else "big"
    sec = int.from_bytes(bytes(data[4:8]), order, signed=True)
    return sec * 1_000_000_000 + int.from_bytes(bytes(data[8:12]), order)


def serialize_with(store: Typestore, msg: Any, typename: str) -> bytes:
    """:func:`serialize` against an explicit typestore (bag readers carry their own)."""
    name = _known(store, typename)
    have = getattr(msg, "__msgtype__", None)
    if have is None:
        raise MessageError(f"{name}: cannot serialise a {type(msg).__name__}, not a message")
    if have != name:
        raise MessageError(f"{name}: message object is a {have}")
    try:
        return bytes(store.serialize_cdr(msg, name, little_endian=True))
    except Exception as exc:  # rosbags raises struct/attribute/type errors for bad fields
        raise MessageError(f"{name}: cannot serialise: {type(exc).__name__}: {exc}") from exc


def deserialize_with(store: Typestore, data: bytes | bytearray | memoryview, typename: str) -> Any:
    """:func:`deserialize` against an explicit typestore (bag readers carry their own)."""
    name = _known(store, typename)
    try:
        view = memoryview(data).cast("B")
    except TypeError as exc:
        raise MessageError(f"{name}: expected bytes, got {type(data).__name__}") from exc
    if len(view) < 4:
        raise MessageError(
            f"{name}: {len(view)} bytes is too short for the 4-byte CDR encapsulation header"
        )
    kind = bytes(view[:2])
    if kind not in _ENCAPSULATIONS:
        raise MessageError(
            f"{name}: unsupported encapsulation {kind.hex(' ')} (expected plain CDR: 00 01, 00 00)"
        )
    try:
        return store.deserialize_cdr(view, name)
    except Exception as exc:  # SerdeError, and anything a malformed buffer provokes
        detail = str(exc).removeprefix(f"Could not deserialize {name!r}: ")
        if "size mismatch" in detail:
            detail = "trailing garbage after the message"
        else:
            detail = f"truncated or malformed: {detail}"
        raise MessageError(f"{name}: cannot deserialise {len(view)} bytes, {detail}") from exc


def _known(store: Typestore, typename: str) -> str:
    name = normalize_typename(typename)
    if name not in store.types:
        raise MessageError(f"unknown message type {typename!r}: not in the typestore")
    return name
