"""Scenario descriptions (YAML under ``sim/``) to scenarios.

A description names its kind (``scenario: surface``, ``traverse`` or ``orbit``), the dataset spec
it lays out (``{data}`` stands for the data root, ``../shared/data`` by default) and the kind's
settings under a key of the kind's name. A name is looked up in ``$VAD_INSPECTION_SIM_DIR``,
then the repository's ``sim/``, then the ROS 2 install's ``share/vad_inspection/sim``; a path is
read as it is.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..data import open_dataset
from ..data.types import DatasetError
from .orbit import OrbitConfig, OrbitPass
from .surface import SurfaceConfig, SurfaceScan
from .traverse import RoverTraverse, TraverseConfig
from .types import Scenario, ScenarioError


def _on_dataset(scenario: Callable[[Any, Any], Scenario]) -> Callable[[str, Any], Scenario]:
    """A scenario over an :func:`open_dataset` spec."""

    def build(spec: str, config: Any) -> Scenario:
        try:
            dataset = open_dataset(spec)
        except DatasetError as error:
            raise ScenarioError(f"{config.name}: dataset: {error}") from None
        return scenario(dataset, config)

    return build


def _on_strips(spec: str, config: OrbitConfig) -> Scenario:
    """The orbit pass lays whole strips: ``lroc_nac:<folder>``."""
    kind, _, root = spec.partition(":")
    if kind != "lroc_nac" or not root:
        raise ScenarioError(
            f"{config.name}: an orbit pass flies over 'lroc_nac:<folder>', not {spec!r}"
        )
    return OrbitPass(root, config)


#: scenario kind -> (its settings class, the scenario from a dataset spec and those settings)
KINDS: dict[str, tuple[type, Callable[[str, Any], Scenario]]] = {
    "surface": (SurfaceConfig, _on_dataset(SurfaceScan)),
    "traverse": (TraverseConfig, _on_dataset(RoverTraverse)),
    "orbit": (OrbitConfig, _on_strips),
}


def search_path() -> list[Path]:
    """Folders a scenario name is looked up in, first match wins."""
    folders = []
    if os.environ.get("VAD_INSPECTION_SIM_DIR"):
        folders.append(Path(os.environ["VAD_INSPECTION_SIM_DIR"]))
    folders.append(Path(__file__).resolve().parents[3] / "sim")  # a source checkout
    prefix = Path(os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)[0] or "/nonexistent")
    folders.append(prefix / "share" / "vad_inspection" / "sim")
    return folders


def available() -> list[str]:
    return sorted({p.stem for folder in search_path() if folder.is_dir()
                   for p in folder.glob("*.yaml")})  # fmt: skip


def find(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ScenarioError(f"scenario file {path} does not exist")
        return path
    for folder in search_path():
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    raise ScenarioError(f"no scenario {name!r}; available: {', '.join(available()) or 'none'}")


def load(name: str, data_root: Path | str = Path("../shared/data"), **overrides: Any) -> Scenario:
    """The scenario ``name`` (or a YAML path) over the data in ``data_root``; ``overrides``
    replace settings of the description (e.g. ``rate_hz=5``)."""
    path = find(name)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ScenarioError(f"{path}: not valid YAML ({error})") from None
    kind = spec.get("scenario")
    if kind not in KINDS:
        raise ScenarioError(f"{path}: scenario kind {kind!r}; known: {', '.join(KINDS)}")
    config_class, build = KINDS[kind]
    settings = {**(spec.get(kind) or {}), **overrides}
    names = {f.name for f in dataclasses.fields(config_class)} - {"name"}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise ScenarioError(f"{path}: unknown setting(s) {unknown}; known: {sorted(names)}")
    for key, value in settings.items():  # YAML lists to the frozen configs' tuples
        if isinstance(value, list):
            settings[key] = tuple(value)
    if "world_from_plane" in settings:
        settings["world_from_plane"] = tuple(tuple(float(v) for v in row)
                                             for row in settings["world_from_plane"])  # fmt: skip
    config = config_class(name=path.stem, **settings)
    return build(str(spec.get("dataset", "")).format(data=Path(data_root)), config)
