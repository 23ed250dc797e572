"""The node graph (config/graph.yaml + the platform parameter files), tested in full without ROS.

What ``ros2 launch`` would only find out on a robot is checked here: every platform loads; every
node has its own section in its parameter file, holding only parameters the node declares, each
with the declared type (a double written as ``1`` is refused by rclpy) and an allowed choice;
remappings resolve to the camera's topics; launch arguments reach the nodes that take them and no
others; a wrong platform, graph or argument is refused with a message that says what to do.
"""

from __future__ import annotations

import ast
import dataclasses
import shutil
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT

from vad_inspection.nodes.graph import (
    GraphError,
    NodeSpec,
    load_graph,
    parse_bool,
    platforms,
)
from vad_inspection.transport.naming import node_fqn
from vad_inspection.transport.params import load_parameter_sections

CONFIG = ROOT / "config"
PLATFORMS = ("uav", "agv", "arm", "orbiter", "rover")

# --------------------------------------------------------------------------------------------
# what each node kind declares: name -> (type, choices)


def _declared(cls: type) -> dict[str, tuple[Any, tuple[str, ...]]]:
    hints = typing.get_type_hints(cls)
    return {
        f.name: (hints[f.name], tuple(f.metadata.get("choices", ())))
        for f in dataclasses.fields(cls)
    }


def _detector_parameters() -> dict[str, tuple[Any, tuple[str, ...]]]:
    try:
        from vad_inspection.nodes.detector import DetectorParams
    except ImportError:
        DetectorParams = None
    if DetectorParams is not None and dataclasses.is_dataclass(DetectorParams):
        return _declared(DetectorParams)
    # Fallback while the detector is not importable: the parameter list of its design brief.
    return {
        "model": (str, ()),
        "threshold": (float, ()),
        "enabled": (bool, ()),
        "autostart": (bool, ()),
        "image_type": (str, ("raw", "compressed")),
        "image_reliability": (str, ("best_effort", "reliable")),
        "use_depth": (bool, ()),
        "depth_units": (str, ("auto", "mm", "m")),
        "depth_tolerance_s": (float, ()),
        "target_frame": (str, ()),
        "plane_frame": (str, ()),
        "plane": (list[float], ()),
        "tf_tolerance_s": (float, ()),
        "tag_radius_m": (float, ()),
        "min_region_px": (int, ()),
        "fit_frames": (int, ()),
        "fit_method": (str, ()),
        "fit_output": (str, ()),
        "diagnostics_period_s": (float, ()),
    }


#: Parameters each node kind of config/graph.yaml declares; a new kind must be added here.
def _node_parameters() -> dict[str, dict[str, tuple[Any, tuple[str, ...]]]]:
    from vad_inspection.nodes.hazard import HazardParams
    from vad_inspection.nodes.player import PlayerParams
    from vad_inspection.nodes.recorder import RecorderParams

    return {
        "detector": _detector_parameters(),
        "hazard_map": _declared(HazardParams),
        "recorder": _declared(RecorderParams),
        "player": _declared(PlayerParams),
    }


KIND_PARAMETERS = _node_parameters()
#: launch arguments that switch on every optional node (the player and the recorder)
EVERY_NODE: dict[str, Any] = {"overrides": {"bag": "/data/pass"}, "switches": {"record": True}}
#: What every ROS 2 node declares, and so all a wildcard (/**) section may hold.
SHARED_PARAMETERS = {"use_sim_time": (bool, ())}


def _has_type(value: Any, declared: Any) -> bool:
    """Would a node declaring ``declared`` accept ``value`` from a params file under rclpy?

    Strict on purpose: rclpy refuses an integer for a double (InvalidParameterTypeException) and
    reads ``[0, 0, 1, 0]`` as an integer array."""
    origin = typing.get_origin(declared)
    if origin in (list, tuple):
        (item, *_) = typing.get_args(declared) or (Any,)
        return isinstance(value, list) and bool(value) and all(_has_type(v, item) for v in value)
    if declared is bool:
        return isinstance(value, bool)
    if declared is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if declared is float:
        return isinstance(value, float)
    if declared is str:
        return isinstance(value, str)
    return False


def _kind(spec: NodeSpec) -> str:
    """The node kind (graph.yaml ``nodes`` key) a spec was made from, by its executable."""
    kinds = yaml.safe_load((CONFIG / "graph.yaml").read_text())["nodes"]
    return next(k for k, v in kinds.items() if v["executable"] == spec.executable)


# --------------------------------------------------------------------------------------------
# the shipped graph


def test_the_graph_describes_the_platforms() -> None:
    assert platforms(CONFIG) == list(PLATFORMS)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_platform_loads_with_a_detector(platform: str) -> None:
    graph = load_graph(platform, CONFIG)
    assert graph.platform == platform and graph.description
    detector = graph.node("detector")
    assert detector.executable == "detector" and detector.package == "vad_inspection"
    assert detector.lifecycle and detector.respawn
    assert detector.watch == ("/detector/score", "vision_msgs/msg/Classification")
    assert detector.params_files == (str((CONFIG / f"{platform}.yaml").resolve()),)
    assert detector.parameters == {}  # no launch argument given, nothing overridden


@pytest.mark.parametrize("platform", PLATFORMS)
def test_each_node_has_its_own_section_with_declared_parameters_only(platform: str) -> None:
    graph = load_graph(platform, CONFIG, EVERY_NODE["overrides"], switches=EVERY_NODE["switches"])
    assert [n.name for n in graph.nodes] == ["player", "detector", "hazard_map", "recorder"]
    for spec in graph.nodes:
        declared = KIND_PARAMETERS[_kind(spec)]
        specific = 0
        for path in spec.params_files:
            for section in load_parameter_sections(path):
                if not section.matches(spec.fqn):
                    continue
                allowed = (
                    SHARED_PARAMETERS if section.wildcard else {**SHARED_PARAMETERS, **declared}
                )
                specific += not section.wildcard
                for name, value in section.parameters.items():
                    where = f"{path} [{section.pattern}] {name}"
                    assert name in allowed, f"{where}: not a parameter of {spec.name}"
                    ptype, choices = allowed[name]
                    assert _has_type(value, ptype), f"{where}: {value!r} is not a {ptype}"
                    assert not choices or value in choices, f"{where}: {value!r} not in {choices}"
        assert specific, f"no section for {spec.fqn} in {spec.params_files}"


def test_wildcard_sections_hold_only_what_every_node_declares() -> None:
    for path in sorted(CONFIG.glob("*.yaml")):
        if path.name == "graph.yaml":
            continue
        for section in load_parameter_sections(path):
            if section.wildcard:
                assert set(section.parameters) <= set(SHARED_PARAMETERS), (path, section.pattern)


def test_platform_specific_values() -> None:
    """The design per platform: UAV on the ground plane, AGV by depth, arm on a plane in tool0."""

    def values(platform: str) -> dict[str, Any]:
        spec = load_graph(platform, CONFIG).node("detector")
        merged: dict[str, Any] = {}
        for section in load_parameter_sections(spec.params_files[0]):
            if section.matches(spec.fqn):
                merged.update(section.parameters)
        return merged

    uav, agv, arm = values("uav"), values("agv"), values("arm")
    orbiter, rover = values("orbiter"), values("rover")
    assert uav["plane_frame"] == "map" and uav["plane"] == [0.0, 0.0, 1.0, 0.0]
    assert not uav["use_depth"]
    assert agv["use_depth"] and agv["plane_frame"] == ""
    assert arm["plane_frame"] == "tool0" and not arm["use_depth"]
    assert orbiter["plane_frame"] == "map" and orbiter["tag_radius_m"] >= 10.0  # craters
    assert rover["use_depth"]
    assert all(v["use_sim_time"] is False for v in (uav, agv, arm, orbiter, rover))


def _section(platform: str, node: str) -> dict[str, Any]:
    graph = load_graph(platform, CONFIG, EVERY_NODE["overrides"], switches=EVERY_NODE["switches"])
    spec = graph.node(node)
    merged: dict[str, Any] = {}
    for section in load_parameter_sections(spec.params_files[0]):
        if section.matches(spec.fqn):
            merged.update(section.parameters)
    return merged


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_hazard_map_agrees_with_the_detector_on_frames_and_surface(platform: str) -> None:
    """The hazard grid is laid where the detector places defects: the same frame and plane, the
    same depth setting, and the grid lies in the plane it projects onto."""
    detector, hazard = _section(platform, "detector"), _section(platform, "hazard_map")
    assert hazard["use_depth"] == detector["use_depth"]
    if not detector["use_depth"]:
        assert hazard["map_frame"] == detector["plane_frame"]
        assert hazard["plane"] == detector["plane"]
        n_x, n_y, n_z, d = hazard["plane"]
        x, y, z = hazard["origin"][:3]
        assert abs(n_x * x + n_y * y + n_z * z + d) < 1e-9  # the grid's corner on the surface
    assert hazard["anomaly_map_topic"] == "/detector/anomaly_map"
    assert (
        hazard["width_m"] / hazard["resolution"] * hazard["height_m"] / hazard["resolution"]
        <= 25_000_000
    )
    recorder = _section(platform, "recorder")
    assert recorder["score_topic"] == "/detector/score" and recorder["sync"] == "always"


def test_optional_nodes_run_when_their_argument_is_set() -> None:
    def names(overrides: Any = None, switches: Any = None) -> list[str]:
        return [n.name for n in load_graph("rover", CONFIG, overrides, switches=switches).nodes]

    assert names() == ["detector", "hazard_map"]
    assert names({"bag": "/data/sol_270"}) == ["player", "detector", "hazard_map"]
    assert names({"bag": None}, {"record": "false"}) == ["detector", "hazard_map"]
    assert names(None, {"record": "true"}) == ["detector", "hazard_map", "recorder"]
    player = load_graph("rover", CONFIG, {"bag": "/data/sol_270"}).node("player")
    assert player.parameters == {"bag": "/data/sol_270"} and not player.respawn
    recorder = load_graph("rover", CONFIG, switches={"record": True}).node("recorder")
    assert recorder.respawn and recorder.lifecycle
    with pytest.raises(GraphError, match="record"):
        load_graph("rover", CONFIG, switches={"record": "maybe"})


@pytest.mark.parametrize("platform", PLATFORMS)
def test_remappings_resolve_to_the_camera_topics(platform: str) -> None:
    graph = load_graph(platform, CONFIG)
    detector = graph.node("detector")
    camera = graph.camera
    assert camera == ("/wrist_camera" if platform == "arm" else "/camera")
    assert detector.resolve("image") == f"{camera}/image_raw"
    assert detector.resolve("image/compressed") == f"{camera}/image_raw/compressed"
    assert detector.resolve("camera_info") == f"{camera}/camera_info"
    assert detector.resolve("depth") == f"{camera}/depth/image_raw"
    graph = load_graph(platform, CONFIG, switches={"record": True})
    hazard, recorder = graph.node("hazard_map"), graph.node("recorder")
    assert hazard.resolve("camera_info") == f"{camera}/camera_info"
    assert hazard.resolve("depth") == detector.resolve("depth")
    assert recorder.resolve("image") == detector.resolve("image")
    # what is not remapped stays the node's own
    assert detector.resolve("~/score") == "/detector/score"
    assert detector.resolve("/tf") == "/tf"


def test_camera_argument_moves_the_inputs() -> None:
    detector = load_graph("uav", CONFIG, camera="/front/").node("detector")
    assert detector.resolve("image") == "/front/image_raw"
    assert detector.resolve("camera_info") == "/front/camera_info"
    assert load_graph("uav", CONFIG, camera="down").camera == "/down"


def test_launch_arguments_reach_the_nodes_that_take_them() -> None:
    graph = load_graph(
        "agv",
        CONFIG,
        {"model": "/m/tiles.vad", "autostart": True, "use_sim_time": False},
    )
    assert graph.node("detector").parameters == {
        "model": "/m/tiles.vad",
        "autostart": True,
        "use_sim_time": False,
    }
    # None means "not given": the parameter file's value stays
    assert load_graph("agv", CONFIG, {"model": None}).node("detector").parameters == {}


def test_every_launch_parameter_is_declared_by_its_node() -> None:
    doc = yaml.safe_load((CONFIG / "graph.yaml").read_text())
    for kind, entry in doc["nodes"].items():
        for name in entry.get("launch_parameters", []):
            assert name in KIND_PARAMETERS[kind], f"{kind} does not declare {name!r}"


def test_every_executable_is_a_console_script() -> None:
    """graph.yaml names executables that setup.py installs into lib/vad_inspection/."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    scripts: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and " = " in node.value:
            name, _, target = node.value.partition(" = ")
            if ":" in target:
                scripts.add(name.strip())
    doc = yaml.safe_load((CONFIG / "graph.yaml").read_text())
    for kind, entry in doc["nodes"].items():
        assert entry["executable"] in scripts, f"{kind}: no console script {entry['executable']!r}"


# --------------------------------------------------------------------------------------------
# errors that say what to do


def test_unknown_platform_names_the_known_ones() -> None:
    with pytest.raises(GraphError, match=r"unknown platform 'boat'.*uav, agv, arm"):
        load_graph("boat", CONFIG)


def test_launch_argument_no_node_takes_is_refused() -> None:
    with pytest.raises(GraphError, match=r"modle are taken by no node .*detector"):
        load_graph("uav", CONFIG, {"modle": "x.vad"})


@pytest.mark.parametrize("value", [[], {"a": 1}, [1, "a"], b"x"])
def test_override_values_ros_cannot_carry_are_refused(value: Any) -> None:
    with pytest.raises(GraphError, match="override 'model'"):
        load_graph("uav", CONFIG, {"model": value})


@pytest.mark.parametrize("camera", ["/", "/cam era", "/2cam"])
def test_bad_camera_namespace_is_refused(camera: str) -> None:
    with pytest.raises(GraphError, match="camera"):
        load_graph("uav", CONFIG, camera=camera)


def test_parse_bool_follows_launch() -> None:
    assert parse_bool("True", "x") is True and parse_bool("0", "x") is False
    with pytest.raises(GraphError, match="autostart must be true or false, got 'yes please'"):
        parse_bool("yes please", "autostart")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A writable copy of config/ to break."""
    target = tmp_path / "config"
    shutil.copytree(CONFIG, target)
    return target


def _edit(config: Path, change: Any) -> None:
    doc = yaml.safe_load((config / "graph.yaml").read_text())
    change(doc)
    (config / "graph.yaml").write_text(yaml.safe_dump(doc))


def test_missing_graph_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(GraphError, match=r"cannot read the graph description .*graph\.yaml"):
        load_graph("uav", tmp_path)


def test_other_version_is_refused(config: Path) -> None:
    _edit(config, lambda d: d.update(version=2))
    with pytest.raises(GraphError, match="version 2; this package reads version 1"):
        load_graph("uav", config)


def test_missing_parameter_file_is_named(config: Path) -> None:
    (config / "uav.yaml").unlink()
    with pytest.raises(GraphError, match=r"parameter file .*uav\.yaml' does not exist"):
        load_graph("uav", config)


def test_unknown_key_is_refused(config: Path) -> None:
    _edit(config, lambda d: d["platforms"]["uav"]["nodes"]["detector"].update(remap={}))
    with pytest.raises(GraphError, match=r"unknown key\(s\) \['remap'\]"):
        load_graph("uav", config)


def test_unknown_kind_is_refused(config: Path) -> None:
    _edit(config, lambda d: d["platforms"]["uav"]["nodes"].update(mystery={}))
    with pytest.raises(GraphError, match="unknown node kind 'mystery'"):
        load_graph("uav", config)


def test_bad_remapping_target_is_refused(config: Path) -> None:
    _edit(config, lambda d: d["nodes"]["detector"]["remappings"].update(depth="{camera}//depth"))
    with pytest.raises(GraphError, match=r"remapping 'depth'"):
        load_graph("uav", config)


def test_unknown_placeholder_is_refused(config: Path) -> None:
    _edit(config, lambda d: d["nodes"]["detector"]["remappings"].update(depth="{cam}/depth"))
    with pytest.raises(GraphError, match=r"unknown placeholder \{cam\}"):
        load_graph("uav", config)


def test_a_platform_can_add_remove_and_rename(config: Path) -> None:
    """What issue 16's platforms will need: a second detector in a namespace, a remapping
    overridden or removed per platform, an extra parameter file, respawn."""

    def change(doc: dict[str, Any]) -> None:
        doc["platforms"]["rover"] = {
            "description": "rover with two cameras",
            "params_file": "agv.yaml",
            "camera": "/mast",
            "nodes": {
                "detector": {"remappings": {"depth": None}},
                "hazcam": {
                    "kind": "detector",
                    "namespace": "front",
                    "remappings": {"image": "/hazcam/left/image_raw"},
                    "params_files": ["uav.yaml"],
                    "respawn": True,
                },
            },
        }

    _edit(config, change)
    graph = load_graph("rover", config, {"autostart": True})
    assert [n.fqn for n in graph.nodes] == ["/detector", "/front/hazcam"]
    detector, hazcam = graph.nodes
    assert "depth" not in dict(detector.remappings)
    assert detector.resolve("depth") == "/depth"
    assert hazcam.resolve("image") == "/hazcam/left/image_raw"
    assert hazcam.resolve("camera_info") == "/mast/camera_info"
    assert hazcam.respawn and hazcam.parameters == {"autostart": True}
    assert [Path(p).name for p in hazcam.params_files] == ["agv.yaml", "uav.yaml"]
    assert hazcam.fqn == node_fqn("hazcam", "front")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_detector_accepts_its_platform_parameters(platform: str) -> None:
    """The node's own check, on the in-process bus: the platform file plus every launch argument,
    declared from DetectorParams, no value left unused (what a typo would be)."""
    detector = pytest.importorskip("vad_inspection.nodes.detector")
    from vad_inspection.nodes.base import declare_parameters
    from vad_inspection.transport import create_bus

    spec = load_graph(
        platform, CONFIG, {"model": "/m/x.vad", "autostart": True, "use_sim_time": False}
    ).node("detector")
    with create_bus(
        "local",
        spec.name,
        namespace=spec.namespace,
        params_file=list(spec.params_files),
        parameters=spec.parameters,
        remappings=dict(spec.remappings),
    ) as bus:
        params = declare_parameters(bus, detector.DetectorParams)
        bus.parameters.check_unused()
    assert params.model == "/m/x.vad" and params.autostart is True
