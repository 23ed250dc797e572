"""One file per fitted model: ONNX graph(s), NumPy arrays and JSON metadata in a zip container.

A robot loads it with ONNX Runtime and NumPy alone. The container is a plain zip so that anyone can
look inside (``unzip -l model.vad``); ``meta.json`` names the format and its version first, so a
truncated, foreign or future file is refused with a message that says which of these it is.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vad_inspection import __version__
from vad_inspection.errors import SetupError

FORMAT = "vad_inspection.model"
FORMAT_VERSION = 1
META = "meta.json"


class ArtifactError(SetupError, ValueError):
    """A model file cannot be read: missing, truncated, foreign, or of an unknown version."""


@dataclass(frozen=True)
class Artifact:
    """The parts of a fitted model. ``meta`` must say ``method``; the rest is method-specific."""

    meta: Mapping[str, object]
    graphs: Mapping[str, bytes] = field(default_factory=dict)
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.meta["method"])


def save(artifact: Artifact, path: Path | str) -> Path:
    """Write atomically (temp file, then rename): a crash never leaves half a model behind."""
    path = Path(path)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        **artifact.meta,
        "graphs": sorted(artifact.graphs),
        "arrays": sorted(artifact.arrays),
    }
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(META, json.dumps(meta, indent=2, sort_keys=True))
        for name, graph in artifact.graphs.items():
            archive.writestr(f"graphs/{name}.onnx", graph)
        for name, array in artifact.arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(array), allow_pickle=False)
            archive.writestr(f"arrays/{name}.npy", buffer.getvalue())
    tmp.replace(path)
    return path


def load(path: Path | str) -> Artifact:
    """Read and validate a model file; every failure names the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if META not in names:
                raise ArtifactError(f"{path} is not a vad_inspection model (no {META} inside)")
            meta = json.loads(archive.read(META))
            _check_meta(path, meta)
            graphs = {g: archive.read(f"graphs/{g}.onnx") for g in meta["graphs"]}
            arrays = {
                a: np.load(io.BytesIO(archive.read(f"arrays/{a}.npy")), allow_pickle=False)
                for a in meta["arrays"]
            }
    except zipfile.BadZipFile as error:
        raise ArtifactError(
            f"{path} is not a vad_inspection model or is truncated ({error})"
        ) from error
    except KeyError as error:
        raise ArtifactError(f"{path} is incomplete: {error} is listed but missing") from error
    except (zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
        if isinstance(error, ArtifactError):
            raise
        raise ArtifactError(f"{path} is damaged: {error}") from error
    return Artifact(meta=meta, graphs=graphs, arrays=arrays)


def _check_meta(path: Path, meta: object) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a vad_inspection model (format is not {FORMAT!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has model format version {version}; this vad_inspection "
            f"({__version__}) reads version {FORMAT_VERSION}. Refit or use a matching release."
        )
    if "method" not in meta:
        raise ArtifactError(f"{path} does not say which method it holds")
