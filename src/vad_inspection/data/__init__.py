"""Dataset loaders, one per published layout, behind one spec string for the CLI and configs.

A spec is ``kind:path`` optionally followed by ``?key=value&key=value``, e.g.
``crackforest:../shared/data/crackforest?tile=64&stride=32`` or
``mastcam:/data/mastcam?bands=2,1,0&multispectral=true``. Option values are converted by the
type hint of the loader's parameter (int, float, bool, ``tuple[int, ...]`` as comma-separated
ints, ``None`` for optional ones), so every loader option is reachable from a command line
without a per-loader parser. The path may not contain ``?``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from types import MappingProxyType, UnionType

from vad_inspection.data.crackforest import open_crackforest
from vad_inspection.data.folder import open_folder
from vad_inspection.data.lroc_nac import open_lroc_nac
from vad_inspection.data.lrocnet import open_lrocnet
from vad_inspection.data.magnetic_tile import open_magnetic_tile
from vad_inspection.data.mastcam import open_mastcam
from vad_inspection.data.metu import open_metu
from vad_inspection.data.msl_surface import open_msl_surface
from vad_inspection.data.mvtec import open_mvtec
from vad_inspection.data.types import Dataset, DatasetError, Sample

__all__ = ["DATASET_KINDS", "Dataset", "DatasetError", "Sample", "open_dataset", "parse_spec"]

Opener = Callable[..., Dataset]

#: Every dataset kind a spec may name, with the function that opens it (read-only).
DATASET_KINDS: Mapping[str, Opener] = MappingProxyType(
    {
        "folder": open_folder,
        "mvtec": open_mvtec,
        "magnetic_tile": open_magnetic_tile,
        "crackforest": open_crackforest,
        "lroc_nac": open_lroc_nac,
        "lrocnet": open_lrocnet,
        "mastcam": open_mastcam,
        "metu": open_metu,
        "msl_surface": open_msl_surface,
    }
)

_SPEC_FORM = "kind:path[?key=value&key=value...]"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``(kind, path, raw options)`` of a spec; checks the form, not the kind or the options."""
    kind, colon, rest = spec.partition(":")
    path, _, query = rest.partition("?")
    if not colon or not kind.strip() or not path.strip():
        raise DatasetError(f"dataset spec {spec!r}: expected {_SPEC_FORM}")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise DatasetError(f"dataset spec {spec!r}: option {item!r} is not key=value")
        if key.strip() in options:
            raise DatasetError(f"dataset spec {spec!r}: option {key.strip()!r} given twice")
        options[key.strip()] = value.strip()
    return kind.strip(), path.strip(), options


def _guess(text: str) -> object:
    """Simple rules for an option without a usable type hint: int, float, bool, else text."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    lowered = text.lower()
    return True if lowered in _TRUE else False if lowered in _FALSE else text


def _convert(text: str, hint: object) -> object:
    """``text`` as the type ``hint`` names; ValueError with the expected form otherwise."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, UnionType):
        if type(None) in args and text.lower() in ("", "none"):
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) != 1:
            return _guess(text)
        hint, args = options[0], typing.get_args(options[0])
    if hint is bool:
        if text.lower() not in _TRUE | _FALSE:
            raise ValueError("expected true/false, yes/no, on/off or 1/0")
        return text.lower() in _TRUE
    if hint in (int, float, str):
        try:
            return hint(text)  # type: ignore[operator]
        except ValueError:
            raise ValueError(f"expected {'an integer' if hint is int else 'a number'}") from None
    if typing.get_origin(hint) is tuple and args and args[0] in (int, float):
        try:
            return tuple(args[0](p) for p in text.split(",") if p.strip())
        except ValueError:
            raise ValueError(f"expected comma-separated {args[0].__name__}s") from None
    return _guess(text)


def _options(kind: str, opener: Opener, raw: dict[str, str]) -> dict[str, object]:
    """Raw spec options converted by the opener's signature; unknown names are errors."""
    params = list(inspect.signature(opener).parameters)[1:]  # the first is the root path
    hints = typing.get_type_hints(opener)
    converted: dict[str, object] = {}
    for key, text in raw.items():
        if key not in params:
            valid = ", ".join(params) if params else "none"
            raise DatasetError(f"unknown option {key!r} for {kind}: valid options are {valid}")
        try:
            converted[key] = _convert(text, hints.get(key))
        except ValueError as error:
            raise DatasetError(f"option {key}={text!r} for {kind}: {error}") from None
    return converted


def open_dataset(spec: str) -> Dataset:
    """Open the dataset a spec names; DatasetError for a bad spec, kind, option or layout."""
    kind, path, raw = parse_spec(spec)
    opener = DATASET_KINDS.get(kind)
    if opener is None:
        raise DatasetError(
            f"unknown dataset kind {kind!r} in {spec!r}: valid kinds are {', '.join(DATASET_KINDS)}"
        )
    return opener(path, **_options(kind, opener, raw))
