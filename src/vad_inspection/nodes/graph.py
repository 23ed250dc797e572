"""The node graph of each platform, described once, for ``ros2 launch`` and the ROS-free launcher.

Which nodes a platform runs, from which executable, with which remappings and parameter files, is
data: ``config/graph.yaml``. :func:`load_graph` turns it into a :class:`GraphSpec`, a list of
:class:`NodeSpec` that ``launch/inspection.launch.py`` loops over (one ``launch_ros`` action per
node) and that ``vad-inspection launch`` starts over Cyclone DDS.

Why a separate ``graph.yaml`` and not a section in each platform's parameter file: a ROS 2
parameter file may hold node sections only (``<node>: {ros__parameters: ...}``; rcl's parser
refuses anything else, and so does :func:`vad_inspection.transport.params.parse_parameter_yaml`),
so the platform files stay pure ROS 2 parameter files that ``--params-file`` accepts, and the
graph lives in one file beside them. Why one file with every platform in it rather than one per
platform: node kinds (executable, lifecycle, shared remappings) are written once and platforms
only say which nodes they run and what differs, so adding a platform (orbiter, rover) or a node
(recorder, replay, hazard map) is a few lines, not a copy of every other platform.

Launch arguments reach nodes as parameter overrides, but only the nodes that take them: each node
kind lists its ``launch_parameters`` (the detector: ``model``, ``autostart``) and
``shared_launch_parameters`` go to every node (``use_sim_time``, which every ROS 2 node declares).
An override is written under the node's fully qualified name, so a value given to a node that
does not declare it would be an unknown-parameter error; an override that no node takes is refused
here, naming the nodes, so a typo cannot pass silently.

Pure Python: no ROS imports (``ros2 launch`` imports this module, and so does the ROS-free CLI).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import SetupError
from ..transport.naming import (
    InvalidNameError,
    normalize_namespace,
    resolve_topic,
    validate_node_name,
)

GRAPH_FILE = "graph.yaml"
GRAPH_VERSION = 1
PACKAGE = "vad_inspection"

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


class GraphError(SetupError, ValueError):
    """The graph description, a platform name or a launch argument is wrong: nothing is started."""


@dataclass(frozen=True)
class NodeSpec:
    """One node to start: what ``launch_ros.actions.Node`` (or ``LifecycleNode``) is given.

    ``parameters`` are the launch-argument overrides for this node (applied after
    ``params_files``, in that order); ``params_files`` are absolute paths; ``remappings`` are
    ``(from, to)`` pairs in ROS 2 ``-r from:=to`` form. ``lifecycle`` says the node serves the
    REP-2006 lifecycle services itself (so a launch can watch and drive its transitions).
    """

    name: str
    executable: str
    namespace: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    params_files: tuple[str, ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    respawn: bool = False
    lifecycle: bool = False
    package: str = PACKAGE
    watch: tuple[str, str] | None = None  # (resolved topic, type) whose rate shows it works

    @property
    def fqn(self) -> str:
        """Fully qualified node name (``/detector``, ``/robot1/detector``)."""
        ns = normalize_namespace(self.namespace)
        return (ns if ns == "/" else ns + "/") + self.name

    def resolve(self, topic: str) -> str:
        """The fully qualified name ``topic`` (as the node names it) has after the remappings."""
        return resolve_topic(topic, self.namespace, self.name, dict(self.remappings))


@dataclass(frozen=True)
class GraphSpec:
    """The nodes one platform runs, in start order."""

    platform: str
    nodes: tuple[NodeSpec, ...]
    camera: str = ""
    description: str = ""

    def node(self, name: str) -> NodeSpec:
        for spec in self.nodes:
            if spec.name == name:
                return spec
        raise GraphError(
            f"platform {self.platform!r} runs no node {name!r}; "
            f"it runs: {', '.join(n.name for n in self.nodes)}"
        )


def parse_bool(text: str | bool, what: str) -> bool:
    """A launch argument's text as a bool, by launch's own rule ('true'/'false'/'1'/'0', any
    case), so ``autostart:=True`` means the same here as in a launch condition."""
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise GraphError(f"{what} must be true or false, got {text!r}")


def read_graph(config_dir: str | Path) -> dict[str, Any]:
    """The raw graph description (``<config_dir>/graph.yaml``), checked for its top-level shape."""
    path = Path(config_dir) / GRAPH_FILE
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GraphError(
            f"cannot read the graph description {str(path)!r}: {exc.strerror}"
        ) from exc
    except yaml.YAMLError as exc:
        raise GraphError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise GraphError(f"{path}: expected a map with 'nodes' and 'platforms'")
    if doc.get("version") != GRAPH_VERSION:
        raise GraphError(
            f"{path}: version {doc.get('version')!r}; this package reads version {GRAPH_VERSION}"
        )
    for key in ("nodes", "platforms"):
        if not isinstance(doc.get(key), Mapping) or not doc[key]:
            raise GraphError(f"{path}: {key!r} must be a non-empty map")
    return dict(doc)


def platforms(config_dir: str | Path) -> list[str]:
    """The platform names the graph describes, in file order (launch argument choices)."""
    return [str(p) for p in read_graph(config_dir)["platforms"]]


def load_graph(
    platform: str,
    config_dir: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    camera: str | None = None,
    switches: Mapping[str, Any] | None = None,
) -> GraphSpec:
    """The nodes ``platform`` runs, ready to launch.

    ``config_dir`` holds ``graph.yaml`` and the platforms' parameter files (the package's
    ``share/vad_inspection/config`` once installed). ``overrides`` maps parameter names to values
    from launch arguments; ``None`` values mean "not given" and are dropped; each goes to the nodes
    whose kind lists it (see the module docstring). ``camera`` is the camera topic namespace
    (``/camera``); ``None`` or empty takes the platform's default. ``switches`` are launch
    arguments that only decide which nodes run (``record``); a node with ``when: <argument>``
    runs if that argument, among the switches or the overrides, is true or a non-empty text.
    """
    config = Path(config_dir)
    doc = read_graph(config)
    where = str(config / GRAPH_FILE)
    table = doc["platforms"]
    if platform not in table:
        raise GraphError(
            f"unknown platform {platform!r}; {where} describes: {', '.join(map(str, table))}"
        )
    entry = _map(table[platform], f"{where}: platform {platform!r}")
    _only(
        entry, {"description", "params_file", "camera", "nodes"}, f"{where}: platform {platform!r}"
    )

    camera_ns = _camera(camera or entry.get("camera") or "", platform)
    variables = {"camera": camera_ns, "platform": platform}
    shared = _names(doc.get("shared_launch_parameters", []), f"{where}: shared_launch_parameters")
    given = _overrides(overrides or {})
    conditions: dict[str, Any] = {
        str(k): parse_bool(v, str(k)) for k, v in (switches or {}).items() if v is not None
    }
    conditions.update(given)

    platform_files: list[str] = []
    if entry.get("params_file") is not None:
        platform_files.append(_params_path(config, entry["params_file"], platform))

    nodes_entry = _map(entry.get("nodes"), f"{where}: platform {platform!r}: nodes")
    if not nodes_entry:
        raise GraphError(f"{where}: platform {platform!r} runs no node")
    specs: list[NodeSpec] = []
    taken: set[str] = set()
    for name, node_entry in nodes_entry.items():
        context = f"{where}: platform {platform!r}: node {name!r}"
        node_entry = _map(node_entry, context)
        _only(node_entry, {"kind", "namespace", "remappings", "params_files", "respawn", "when"},
              context)  # fmt: skip
        when = node_entry.get("when")
        if when is not None and not _switched_on(conditions.get(str(when)), f"{context}: when"):
            continue
        kind_name = str(node_entry.get("kind", name))
        if kind_name not in doc["nodes"]:
            raise GraphError(
                f"{context}: unknown node kind {kind_name!r}; "
                f"{where} describes: {', '.join(map(str, doc['nodes']))}"
            )
        kind = _map(doc["nodes"][kind_name], f"{where}: node kind {kind_name!r}")
        _only(
            kind,
            {
                "executable",
                "lifecycle",
                "respawn",
                "launch_parameters",
                "remappings",
                "package",
                "watch",
            },
            f"{where}: node kind {kind_name!r}",
        )
        if not isinstance(kind.get("executable"), str) or not kind["executable"]:
            raise GraphError(f"{where}: node kind {kind_name!r} needs an 'executable'")

        try:
            validate_node_name(str(name))
            namespace = str(node_entry.get("namespace") or "")
            if namespace:
                normalize_namespace(namespace)
        except InvalidNameError as exc:
            raise GraphError(f"{context}: {exc}") from exc

        remaps = dict(_remap_table(kind.get("remappings"), f"{where}: node kind {kind_name!r}"))
        for src, dst in _remap_table(node_entry.get("remappings"), context).items():
            if dst is None:
                remaps.pop(src, None)
            else:
                remaps[src] = dst
        remappings = tuple(
            (src, _expand(dst, variables, f"{context}: remapping {src!r}"))
            for src, dst in remaps.items()
            if dst is not None
        )

        takes = set(shared) | set(
            _names(kind.get("launch_parameters", []), f"{where}: node kind {kind_name!r}")
        )
        parameters = {k: v for k, v in given.items() if k in takes}
        taken.update(parameters)

        extra_files = node_entry.get("params_files") or []
        if not isinstance(extra_files, list):
            raise GraphError(f"{context}: params_files must be a list of file names")
        spec = NodeSpec(
            name=str(name),
            executable=kind["executable"],
            namespace=namespace,
            parameters=parameters,
            params_files=tuple(
                [*platform_files, *(_params_path(config, f, platform) for f in extra_files)]
            ),
            remappings=remappings,
            respawn=parse_bool(node_entry.get("respawn", kind.get("respawn", False)), "respawn"),
            lifecycle=parse_bool(kind.get("lifecycle", False), "lifecycle"),
            package=str(kind.get("package", PACKAGE)),
        )
        watch = kind.get("watch")
        if watch is not None:
            if not (
                isinstance(watch, list)
                and len(watch) == 2
                and all(isinstance(w, str) for w in watch)
            ):
                raise GraphError(f"{where}: node kind {kind_name!r}: watch must be [topic, type]")
            spec = dataclasses.replace(spec, watch=(spec.resolve(watch[0]), watch[1]))
        for src, dst in spec.remappings:
            try:
                resolve_topic(src, spec.namespace, spec.name)
                resolve_topic(dst, spec.namespace, spec.name)
            except InvalidNameError as exc:
                raise GraphError(f"{context}: remapping {src!r} -> {dst!r}: {exc}") from exc
        specs.append(spec)

    unused = sorted(set(given) - taken)
    if unused:
        raise GraphError(
            f"launch argument(s) {', '.join(unused)} are taken by no node of platform "
            f"{platform!r} (nodes: {', '.join(s.name for s in specs)})"
        )
    return GraphSpec(
        platform=platform,
        nodes=tuple(specs),
        camera=camera_ns,
        description=str(entry.get("description", "")),
    )


# --------------------------------------------------------------------------------------------
# helpers


def _switched_on(value: Any, what: str) -> bool:
    """A ``when`` argument's value: unset, false or empty text is off; true or a text (a bag's
    path) is on."""
    if isinstance(value, str):
        return bool(value.strip())
    return bool(value)


def _map(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise GraphError(f"{what}: expected a map, got {value!r}")
    return {str(k): v for k, v in value.items()}


def _only(entry: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise GraphError(f"{what}: unknown key(s) {unknown}; known: {sorted(allowed)}")


def _names(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GraphError(f"{what}: expected a list of parameter names, got {value!r}")
    return list(value)


def _remap_table(value: Any, what: str) -> dict[str, str | None]:
    table = _map(value, f"{what}: remappings")
    for src, dst in table.items():
        if dst is not None and not isinstance(dst, str):
            raise GraphError(f"{what}: remapping {src!r} -> {dst!r}: the target must be text")
    return table


def _expand(template: str, variables: Mapping[str, str], what: str) -> str:
    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in variables:
            raise GraphError(f"{what}: unknown placeholder {{{key}}}; known: {sorted(variables)}")
        return variables[key]

    return _PLACEHOLDER.sub(value, template)


def _camera(camera: str, platform: str) -> str:
    """The camera topic namespace, absolute and without a trailing '/' (``/camera``)."""
    text = camera.strip()
    if not text:
        raise GraphError(f"platform {platform!r} has no default camera: give camera:=/<namespace>")
    try:
        ns = normalize_namespace(text if text.startswith("/") else "/" + text)
    except InvalidNameError as exc:
        raise GraphError(f"camera {camera!r} is not a topic namespace: {exc}") from exc
    if ns == "/":
        raise GraphError(f"camera {camera!r}: give the camera's namespace, e.g. /camera")
    return ns


def _params_path(config: Path, name: Any, platform: str) -> str:
    if not isinstance(name, str) or not name:
        raise GraphError(f"platform {platform!r}: a parameter file name must be text, got {name!r}")
    # absolute, but symlinks kept: a `colcon build --symlink-install` share directory stays the
    # path the launch shows
    path = Path(os.path.abspath(config / name))
    if not path.is_file():
        raise GraphError(f"platform {platform!r}: parameter file {str(path)!r} does not exist")
    return str(path)


def _overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Launch-argument values as ROS 2 parameter values, refused early if launch_ros or rclpy
    would refuse them later (launch_ros cannot evaluate an empty list; rclpy has no None)."""
    out: dict[str, Any] = {}
    for name, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, (bool, int, float, str)):
            out[str(name)] = value
        elif isinstance(value, (list, tuple)) and value:
            kinds = {type(v) for v in value}
            if len(kinds) != 1 or not kinds <= {bool, int, float, str}:
                raise GraphError(f"override {name!r}: a list must hold values of one type")
            out[str(name)] = list(value)
        else:
            raise GraphError(f"override {name!r}: unsupported value {value!r}")
    return out


#: The launch arguments of ``inspection.launch.py`` and ``vad-inspection launch``, with their
#: defaults (text, as launch gives them) and descriptions.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "platform": ("agv", "robot platform: its nodes come from config/graph.yaml and their "
                        "parameters from config/<platform>.yaml"),
    "model": ("", "model file (.vad) for the detector; empty: the platform file's value"),
    "camera": ("", "camera topic namespace (/camera: image from /camera/image_raw, camera_info "
                   "from /camera/camera_info); empty: the platform's default"),
    "use_sim_time": ("auto", "follow /clock (true), the system time (false), or auto: /clock "
                             "when a bag or scenario plays"),
    "autostart": ("false", "lifecycle nodes configure and activate themselves; false: they wait "
                           "unconfigured for `ros2 lifecycle set`"),
    "bag": ("", "a rosbag2 bag to play into the graph (adds the player)"),
    "scenario": ("", "a scenario (sim/ name or YAML) written to a bag once and played"),
    "record": ("false", "run the recorder (durable store, downlink windows)"),
    "data_root": ("../shared/data", "where a scenario's imagery lives"),
}  # fmt: skip
BOOL_ARGUMENTS = ("autostart", "record")


@dataclass(frozen=True)
class LaunchPlan:
    """What a launch resolves its arguments to: the graph and the bag it plays (if any)."""

    graph: GraphSpec
    bag: str
    use_sim_time: bool


def plan_launch(
    arguments: Mapping[str, str], config_dir: str | Path, cache_dir: str | Path | None = None,
    progress: Any = None,
) -> LaunchPlan:  # fmt: skip
    """The graph of the launch ``arguments`` (text, as launch passes them; missing ones take
    :data:`LAUNCH_ARGUMENTS`' defaults). ``scenario`` is written to a bag in ``cache_dir`` the
    first time (``vad_inspection.scenarios.bagfile.scenario_bag``) and played like ``bag``;
    giving both is refused. ``use_sim_time`` ``auto`` follows /clock exactly when something
    plays."""
    given = {k: str(v) for k, v in arguments.items()}
    unknown = sorted(set(given) - set(LAUNCH_ARGUMENTS))
    if unknown:
        raise GraphError(f"unknown launch argument(s) {', '.join(unknown)}; "
                         f"known: {', '.join(LAUNCH_ARGUMENTS)}")  # fmt: skip
    value = {k: given.get(k, default) for k, (default, _) in LAUNCH_ARGUMENTS.items()}
    bag, scenario = value["bag"].strip(), value["scenario"].strip()
    if bag and scenario:
        raise GraphError(f"give bag:= or scenario:=, not both (bag {bag!r}, scenario {scenario!r})")
    if scenario:
        from ..scenarios.bagfile import scenario_bag

        cache = Path(cache_dir or Path.home() / ".cache" / PACKAGE / "scenarios")
        bag = str(scenario_bag(scenario, Path(value["data_root"]), cache, progress=progress))
    sim_time = value["use_sim_time"].strip().lower()
    use_sim_time = bool(bag) if sim_time == "auto" else parse_bool(sim_time, "use_sim_time")
    graph = load_graph(
        value["platform"],
        config_dir,
        {
            "use_sim_time": use_sim_time,
            "autostart": parse_bool(value["autostart"], "autostart"),
            "model": value["model"] or None,
            "bag": bag or None,
        },
        camera=value["camera"] or None,
        switches={"record": value["record"]},
    )
    return LaunchPlan(graph, bag, use_sim_time)
