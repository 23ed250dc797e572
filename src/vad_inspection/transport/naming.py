"""ROS 2 names: node names, namespaces, topic resolution and remapping, DDS topic names.

Rules as in ROS 2 (design article "Topic and Service name mapping to DDS" and rcl's validators):
names are tokens of ``[A-Za-z0-9_]`` separated by ``/``; a token does not start with a digit; no
empty token (``//``), no trailing ``/``, no ``__``; ``~`` (private) only as the first character.
A relative name is resolved against the node's namespace, ``~`` against the node itself. On DDS a
ROS topic ``/a/b`` is the topic ``rt/a/b``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NODE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

TOPIC_PREFIX = "rt"


class InvalidNameError(ValueError):
    """An invalid node name, namespace or topic name."""


def validate_node_name(name: str) -> str:
    if not isinstance(name, str) or not _NODE.fullmatch(name):
        raise InvalidNameError(
            f"invalid node name {name!r}: letters, digits and '_', not starting with a digit"
        )
    if "__" in name:
        raise InvalidNameError(f"invalid node name {name!r}: '__' is reserved")
    return name


def _check_tokens(tokens: list[str], what: str, original: str) -> None:
    for tok in tokens:
        if not tok:
            raise InvalidNameError(
                f"invalid {what} {original!r}: empty token ('//' or trailing '/')"
            )
        if not _TOKEN.fullmatch(tok):
            raise InvalidNameError(
                f"invalid {what} {original!r}: token {tok!r} must be letters, digits and '_', "
                "not starting with a digit"
            )
        if "__" in tok:
            raise InvalidNameError(f"invalid {what} {original!r}: '__' is reserved")


def normalize_namespace(namespace: str | None) -> str:
    """``None``/``""`` -> ``"/"``; ``"a/b"`` -> ``"/a/b"``; validated."""
    if not namespace or namespace == "/":
        return "/"
    ns = namespace if namespace.startswith("/") else "/" + namespace
    ns = ns.rstrip("/") if len(ns) > 1 and ns.endswith("/") else ns
    _check_tokens(ns[1:].split("/"), "namespace", namespace)
    return ns


def node_fqn(node_name: str, namespace: str | None = None) -> str:
    """Fully qualified node name: ``/ns/node``."""
    ns = normalize_namespace(namespace)
    return (ns if ns == "/" else ns + "/") + validate_node_name(node_name)


def resolve_topic(
    name: str,
    namespace: str | None = None,
    node_name: str | None = None,
    remappings: Mapping[str, str] | None = None,
) -> str:
    """Fully qualified topic name for ``name`` as seen by node ``node_name`` in ``namespace``.

    ``remappings`` maps names (each resolved the same way) to replacements, as ``-r from:=to``.
    """
    fqn = _expand(name, namespace, node_name)
    if remappings:
        for src, dst in remappings.items():
            if _expand(src, namespace, node_name) == fqn:
                return _expand(dst, namespace, node_name)
    return fqn


def _expand(name: str, namespace: str | None, node_name: str | None) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidNameError(f"invalid topic name {name!r}: empty")
    if "{" in name or "}" in name:
        raise InvalidNameError(f"invalid topic name {name!r}: substitutions are not supported")
    ns = normalize_namespace(namespace)
    base = ns if ns == "/" else ns + "/"
    if name.startswith("~"):
        if node_name is None:
            raise InvalidNameError(f"topic {name!r} is private ('~') but there is no node name")
        rest = name[1:]
        if rest and not rest.startswith("/"):
            raise InvalidNameError(f"invalid topic name {name!r}: '~' must be followed by '/'")
        full = base + validate_node_name(node_name) + rest
    elif name.startswith("/"):
        full = name
    else:
        full = base + name
    if len(full) > 1 and full.endswith("/"):
        raise InvalidNameError(f"invalid topic name {name!r}: ends with '/'")
    if full == "/":
        raise InvalidNameError(f"invalid topic name {name!r}: no token")
    _check_tokens(full[1:].split("/"), "topic name", name)
    return full


def dds_topic(fqn: str) -> str:
    """ROS topic ``/a/b`` -> DDS topic ``rt/a/b``."""
    if not fqn.startswith("/"):
        raise InvalidNameError(f"expected a fully qualified topic name, got {fqn!r}")
    return TOPIC_PREFIX + fqn


def dds_typename(typename: str) -> str:
    """ROS type ``pkg/msg/Type`` -> DDS type ``pkg::msg::dds_::Type_``."""
    parts = typename.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise InvalidNameError(f"invalid ROS type name {typename!r}: expected pkg/msg/Type")
    pkg, kind, name = parts
    return f"{pkg}::{kind}::dds_::{name}_"
