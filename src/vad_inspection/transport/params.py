"""Node parameters: declaration with type and description, values from ROS 2 parameter YAML files.

The file format is ROS 2's (what ``--ros-args --params-file`` reads)::

    /**:                         # every node
      ros__parameters:
        use_sim_time: false
    detector:                    # the node named "detector" in the root namespace
      ros__parameters:
        model: patchcore
        threshold: 0.5
        camera:
          topic: /camera/image   # nested maps flatten to dotted names: camera.topic
    /robot1/recorder:            # fully qualified; "/*" matches one token, "/**" any number
      ros__parameters: {...}

Sections apply in file order, files in the order given, and an explicit dict of overrides last.
A value must have the declared type: an ``int`` is accepted where a ``double`` is declared (YAML
writes ``1`` for ``1.0``), nothing else is converted. Node-specific values that no declaration
asked for are reported by :meth:`Parameters.unused` / :meth:`Parameters.check_unused` (a typo in
a parameter name should not pass silently); wildcard sections are shared between nodes, so their
extra values are not.

Run-time changes (:meth:`Parameters.set`, ``ros2 param set`` through the parameter services of
every binding) pass the declared type check, the read-only flag and then every callback added
with :meth:`Parameters.add_on_set_callback`: a callback raising :class:`ParameterError` rejects
the change, the old value stays and the error (the callback's text) says why. Values given at
declaration are not run-time changes and do not call them.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import yaml

from ..errors import SetupError

PARAMS_KEY = "ros__parameters"

OnSetCallback = Callable[[str, Any], None]
"""``callback(name, value)``, called before a run-time change is accepted; raise to refuse."""


class ParameterError(SetupError, ValueError):
    """A parameter file, declaration or value is invalid; the message says which and where."""


class ParamType(IntEnum):
    """rcl_interfaces/msg/ParameterType numbering, so the ros binding maps one to one."""

    NOT_SET = 0
    BOOL = 1
    INTEGER = 2
    DOUBLE = 3
    STRING = 4
    BYTE_ARRAY = 5
    BOOL_ARRAY = 6
    INTEGER_ARRAY = 7
    DOUBLE_ARRAY = 8
    STRING_ARRAY = 9

    @property
    def label(self) -> str:
        return self.name.lower()


_ALIASES: dict[Any, ParamType] = {
    bool: ParamType.BOOL,
    int: ParamType.INTEGER,
    float: ParamType.DOUBLE,
    str: ParamType.STRING,
    bytes: ParamType.BYTE_ARRAY,
    "bool": ParamType.BOOL,
    "boolean": ParamType.BOOL,
    "int": ParamType.INTEGER,
    "integer": ParamType.INTEGER,
    "float": ParamType.DOUBLE,
    "double": ParamType.DOUBLE,
    "str": ParamType.STRING,
    "string": ParamType.STRING,
    "bytes": ParamType.BYTE_ARRAY,
    "byte_array": ParamType.BYTE_ARRAY,
    "bool_array": ParamType.BOOL_ARRAY,
    "integer_array": ParamType.INTEGER_ARRAY,
    "int_array": ParamType.INTEGER_ARRAY,
    "double_array": ParamType.DOUBLE_ARRAY,
    "float_array": ParamType.DOUBLE_ARRAY,
    "string_array": ParamType.STRING_ARRAY,
    "str_array": ParamType.STRING_ARRAY,
}
_ELEMENT = {
    ParamType.BOOL_ARRAY: ParamType.BOOL,
    ParamType.INTEGER_ARRAY: ParamType.INTEGER,
    ParamType.DOUBLE_ARRAY: ParamType.DOUBLE,
    ParamType.STRING_ARRAY: ParamType.STRING,
}
_ARRAY_OF = {v: k for k, v in _ELEMENT.items()}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def param_type(spec: Any) -> ParamType:
    """A :class:`ParamType` from a ParamType, a Python type (bool, int, float, str, bytes,
    ``list[float]``...) or a ROS type name (``"double"``, ``"string_array"``...)."""
    if isinstance(spec, ParamType):
        return spec
    if isinstance(spec, str):
        key: Any = spec.strip().lower()
    else:
        key = spec
    if key in _ALIASES:
        return _ALIASES[key]
    origin = getattr(spec, "__origin__", None)
    args = getattr(spec, "__args__", ())
    if origin in (list, tuple) and args and args[0] in _ALIASES:
        elem = _ALIASES[args[0]]
        if elem in _ARRAY_OF:
            return _ARRAY_OF[elem]
    raise ParameterError(
        f"unknown parameter type {spec!r}; use bool, int, float, str, bytes, list[...] "
        f"or one of {', '.join(t.label for t in ParamType if t)}"
    )


def _scalar_type(value: Any) -> ParamType | None:
    if isinstance(value, bool):
        return ParamType.BOOL
    if isinstance(value, int):
        return ParamType.INTEGER
    if isinstance(value, float):
        return ParamType.DOUBLE
    if isinstance(value, str):
        return ParamType.STRING
    return None


def infer_type(value: Any) -> ParamType | None:
    """The parameter type of a value, or None when it has none (None, an empty list)."""
    scalar = _scalar_type(value)
    if scalar is not None:
        return scalar
    if isinstance(value, (bytes, bytearray)):
        return ParamType.BYTE_ARRAY
    if isinstance(value, (list, tuple)) and value:
        kinds = {_scalar_type(v) for v in value}
        if kinds == {ParamType.INTEGER, ParamType.DOUBLE}:
            return ParamType.DOUBLE_ARRAY
        if len(kinds) == 1:
            (kind,) = kinds
            if kind is not None:
                return _ARRAY_OF[kind]
    return None


def check_value(name: str, value: Any, ptype: ParamType, where: str = "") -> Any:
    """``value`` as a value of ``ptype`` (int -> float for doubles; tuples -> lists), or raise."""
    at = f" ({where})" if where else ""

    def fail(detail: str) -> ParameterError:
        return ParameterError(f"parameter {name!r}{at}: expected {ptype.label}, got {detail}")

    def scalar(v: Any, kind: ParamType) -> Any:
        got = _scalar_type(v)
        if got is kind:
            return v
        if kind is ParamType.DOUBLE and got is ParamType.INTEGER:
            return float(v)
        raise fail(f"{type(v).__name__} {v!r}")

    if ptype in (ParamType.BOOL, ParamType.INTEGER, ParamType.DOUBLE, ParamType.STRING):
        return scalar(value, ptype)
    if ptype is ParamType.BYTE_ARRAY:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, (list, tuple)) and all(
            _scalar_type(v) is ParamType.INTEGER and 0 <= v < 256 for v in value
        ):
            return bytes(value)
        raise fail(f"{type(value).__name__} {value!r}")
    if ptype in _ELEMENT:
        if not isinstance(value, (list, tuple)):
            raise fail(f"{type(value).__name__} {value!r}")
        return [scalar(v, _ELEMENT[ptype]) for v in value]
    raise ParameterError(f"parameter {name!r}{at}: type {ptype.label} cannot hold a value")


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ParameterError(
            f"invalid parameter name {name!r}: dot-separated tokens of letters, digits and '_'"
        )
    return name


# --------------------------------------------------------------------------------------------
# files


@dataclass(frozen=True)
class ParameterSection:
    """One ``<node pattern>: {ros__parameters: ...}`` block of a file, flattened."""

    pattern: str
    parameters: Mapping[str, Any]
    source: str

    @property
    def wildcard(self) -> bool:
        return "*" in self.pattern

    def matches(self, fqn: str) -> bool:
        return node_pattern_matches(self.pattern, fqn)


def node_pattern_matches(pattern: str, fqn: str) -> bool:
    """Does a file's node key match the fully qualified node name? (rclcpp's rules:
    ``/**`` any number of tokens, ``/*`` exactly one, otherwise equality)."""
    pat = pattern if pattern.startswith("/") else "/" + pattern
    regex = ""
    for token in pat[1:].split("/"):
        if token == "**":
            regex += r"(/\w+)*"
        elif token == "*":
            regex += r"(/\w+)"
        else:
            regex += "/" + re.escape(token)
    return re.fullmatch(regex, fqn) is not None


def _flatten(prefix: str, value: Any, out: dict[str, Any], source: str) -> None:
    if isinstance(value, Mapping):
        for key, sub in value.items():
            if not isinstance(key, str):
                raise ParameterError(
                    f"{source}: parameter key {key!r} under {prefix!r} is not text"
                )
            _flatten(f"{prefix}.{key}" if prefix else key, sub, out, source)
        return
    validate_name(prefix)
    if value is None:
        raise ParameterError(f"{source}: parameter {prefix!r} has no value")
    if isinstance(value, list):
        if value and infer_type(value) is None:
            raise ParameterError(
                f"{source}: parameter {prefix!r}: a list must hold values of one type "
                f"(bool, int, float or string), got {value!r}"
            )
    elif _scalar_type(value) is None:
        raise ParameterError(
            f"{source}: parameter {prefix!r}: unsupported value {value!r} ({type(value).__name__})"
        )
    out[prefix] = value


def parse_parameter_yaml(text: str, source: str = "<string>") -> list[ParameterSection]:
    """The sections of a ROS 2 parameter YAML text, in file order."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParameterError(f"{source}: not valid YAML: {exc}") from exc
    if doc is None:
        return []
    if not isinstance(doc, Mapping):
        raise ParameterError(f"{source}: expected a map of node names at the top level")
    sections: list[ParameterSection] = []

    def walk(node: Mapping, path: list[str]) -> None:
        for key, value in node.items():
            if key == PARAMS_KEY:
                if not path:
                    raise ParameterError(f"{source}: {PARAMS_KEY} needs a node name above it")
                if value is None:
                    value = {}
                if not isinstance(value, Mapping):
                    raise ParameterError(f"{source}: {'/'.join(path)}: {PARAMS_KEY} must be a map")
                params: dict[str, Any] = {}
                _flatten("", value, params, f"{source} [{'/'.join(path)}]")
                pattern = "/" + "/".join(p.strip("/") for p in path if p.strip("/"))
                sections.append(ParameterSection(pattern, params, source))
            elif isinstance(value, Mapping):
                walk(value, [*path, str(key)])
            else:
                where = "/".join([*path, str(key)])
                raise ParameterError(
                    f"{source}: {where!r} is not a node section (expected "
                    f"'<node>: {{{PARAMS_KEY}: {{...}}}}')"
                )

    walk(doc, [])
    return sections


def load_parameter_sections(path: str | os.PathLike) -> list[ParameterSection]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ParameterError(f"cannot read parameter file {str(p)!r}: {exc.strerror}") from exc
    return parse_parameter_yaml(text, str(p))


def load_parameter_file(
    path: str | os.PathLike, node_name: str, namespace: str | None = None
) -> dict[str, Any]:
    """The parameters ``path`` gives the node ``node_name`` (in ``namespace``), flattened and
    merged in file order (later sections override earlier ones)."""
    from .naming import node_fqn

    fqn = node_fqn(node_name, namespace)
    merged: dict[str, Any] = {}
    for section in load_parameter_sections(path):
        if section.matches(fqn):
            merged.update(section.parameters)
    return merged


# --------------------------------------------------------------------------------------------
# the per-node store


@dataclass(frozen=True)
class Descriptor:
    """What a declaration says about a parameter."""

    name: str
    type: ParamType
    description: str = ""
    read_only: bool = False


@dataclass(frozen=True)
class _Given:
    value: Any
    where: str
    node_specific: bool


class Parameters:
    """A node's parameters: declared with type, description and default; values from files and
    overrides, checked against the declared type.

    ``files`` are ROS 2 parameter YAML paths; ``overrides`` a ``{name: value}`` dict applied last.
    """

    def __init__(
        self,
        fqn: str,
        files: Iterable[str | os.PathLike] = (),
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.fqn = fqn
        self._given: dict[str, _Given] = {}
        for path in files:
            for section in load_parameter_sections(path):
                if section.matches(fqn):
                    where = f"{section.source} [{section.pattern}]"
                    for name, value in section.parameters.items():
                        self._given[name] = _Given(value, where, not section.wildcard)
        for name, value in (overrides or {}).items():
            validate_name(name)
            self._given[name] = _Given(value, "overrides", True)
        self._values: dict[str, Any] = {}
        self._descriptors: dict[str, Descriptor] = {}
        self._on_set: list[OnSetCallback] = []

    # declaration ---------------------------------------------------------------------------

    def declare(
        self,
        name: str,
        default: Any = None,
        *,
        type: Any = None,
        description: str = "",
        read_only: bool = False,
    ) -> Any:
        """Declare ``name`` and return its value (given one, else ``default``).

        ``type`` defaults to the default's type; a parameter declared with a type and no default
        is required: it must be given by a file or an override.
        """
        validate_name(name)
        if name in self._descriptors:
            raise ParameterError(f"parameter {name!r} is already declared on {self.fqn}")
        if type is not None:
            ptype = param_type(type)
        else:
            inferred = infer_type(default)
            if inferred is None:
                raise ParameterError(
                    f"parameter {name!r}: give type= (cannot infer a type from {default!r})"
                )
            ptype = inferred
        if default is not None:
            default = check_value(name, default, ptype, "default")
        given = self._given.get(name)
        if given is not None:
            value = check_value(name, given.value, ptype, given.where)
        elif default is not None:
            value = default
        else:
            raise ParameterError(
                f"parameter {name!r} ({ptype.label}) of {self.fqn} is required and was not given"
            )
        self._store(Descriptor(name, ptype, description, read_only), value)
        return value

    def _store(self, descriptor: Descriptor, value: Any) -> None:
        self._descriptors[descriptor.name] = descriptor
        self._values[descriptor.name] = value

    # access --------------------------------------------------------------------------------

    def get(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise ParameterError(self._undeclared(name)) from None

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def set(self, name: str, value: Any) -> None:
        """Change a declared parameter at run time: type-checked (an int is accepted for a
        double), read-only ones refuse, then the on-set callbacks may refuse; on any refusal
        :class:`ParameterError` says why and the old value stays."""
        value = self._check_set(name, value)
        self._run_on_set(name, value)
        self._values[name] = value

    def set_many(self, values: Mapping[str, Any]) -> None:
        """Change several parameters at once: all are accepted, or none is changed."""
        checked = {name: self._check_set(name, value) for name, value in values.items()}
        for name, value in checked.items():
            self._run_on_set(name, value)
        self._values.update(checked)

    def add_on_set_callback(self, callback: OnSetCallback) -> None:
        """Call ``callback(name, value)`` before a run-time change is accepted (``value`` already
        has the declared type). Raising :class:`ParameterError` refuses the change with that
        message; any other exception refuses it too, named as a failure of the callback."""
        self._on_set.append(callback)

    def remove_on_set_callback(self, callback: OnSetCallback) -> None:
        self._on_set.remove(callback)

    def _check_set(self, name: str, value: Any) -> Any:
        """``value`` converted to ``name``'s declared type, or :class:`ParameterError`."""
        descriptor = self.describe(name)
        if descriptor.read_only:
            raise ParameterError(f"parameter {name!r} is read-only")
        return check_value(name, value, descriptor.type, "set")

    def _run_on_set(self, name: str, value: Any) -> None:
        for callback in list(self._on_set):
            try:
                callback(name, value)
            except ParameterError:
                raise
            except Exception as exc:  # a buggy callback refuses, it does not crash the caller
                which = getattr(callback, "__qualname__", repr(callback))
                raise ParameterError(
                    f"parameter {name!r}: on-set callback {which} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc

    def describe(self, name: str) -> Descriptor:
        try:
            return self._descriptors[name]
        except KeyError:
            raise ParameterError(self._undeclared(name)) from None

    def descriptors(self) -> dict[str, Descriptor]:
        """Every declaration, by name (in declaration order)."""
        return dict(self._descriptors)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def given(self) -> dict[str, Any]:
        """Every value the files and overrides hold for this node (declared or not)."""
        return {name: g.value for name, g in self._given.items()}

    def unused(self, include_wildcard: bool = False) -> list[str]:
        """Values given for this node that no declaration asked for."""
        return sorted(
            name
            for name, g in self._given.items()
            if name not in self._descriptors and (g.node_specific or include_wildcard)
        )

    def check_unused(self) -> None:
        """Raise :class:`ParameterError` if a node-specific value matches no declaration."""
        names = self.unused()
        if not names:
            return
        lines = []
        for name in names:
            hint = difflib.get_close_matches(name, list(self._descriptors), n=1)
            where = self._given[name].where
            lines.append(
                f"  {name!r} from {where}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
        raise ParameterError(
            f"unknown parameter(s) for {self.fqn}:\n"
            + "\n".join(lines)
            + f"\ndeclared: {', '.join(sorted(self._descriptors)) or '(none)'}"
        )

    def _undeclared(self, name: str) -> str:
        hint = difflib.get_close_matches(name, list(self._descriptors), n=1)
        return f"parameter {name!r} is not declared on {self.fqn}" + (
            f" (did you mean {hint[0]!r}?)" if hint else ""
        )
