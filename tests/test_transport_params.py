"""Parameters: ROS 2 parameter YAML (wildcards, node sections, nesting), declarations, types."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from vad_inspection.transport.params import (
    ParameterError,
    Parameters,
    ParamType,
    load_parameter_file,
    node_pattern_matches,
    param_type,
    parse_parameter_yaml,
)

YAML = textwrap.dedent(
    """
    /**:
      ros__parameters:
        use_sim_time: true
        shared: 1
    detector:
      ros__parameters:
        model: patchcore
        threshold: 0.5
        image_size: [256, 256]
        camera:
          topic: /camera/image
          fps: 30
    /robot1/recorder:
      ros__parameters:
        budget_kbps: 512.0
    /robot1:
      detector:
        ros__parameters:
          model: padim
    /*/detector:
      ros__parameters:
        threshold: 0.7
    """
)


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(YAML)
    return path


def test_sections_in_file_order_with_flattened_names() -> None:
    sections = parse_parameter_yaml(YAML, "x.yaml")
    assert [s.pattern for s in sections] == [
        "/**",
        "/detector",
        "/robot1/recorder",
        "/robot1/detector",
        "/*/detector",
    ]
    assert sections[1].parameters == {
        "model": "patchcore",
        "threshold": 0.5,
        "image_size": [256, 256],
        "camera.topic": "/camera/image",
        "camera.fps": 30,
    }
    assert sections[0].wildcard and not sections[1].wildcard


def test_node_patterns_follow_rclcpp() -> None:
    assert node_pattern_matches("/**", "/detector")
    assert node_pattern_matches("/**", "/a/b/detector")
    assert node_pattern_matches("detector", "/detector")
    assert not node_pattern_matches("detector", "/robot1/detector")
    assert node_pattern_matches("/*/detector", "/robot1/detector")
    assert not node_pattern_matches("/*/detector", "/detector")
    assert not node_pattern_matches("/*/detector", "/a/b/detector")
    assert node_pattern_matches("/**/detector", "/detector")
    assert node_pattern_matches("/**/detector", "/a/b/detector")


def test_load_merges_wildcard_and_node_sections(params_file: Path) -> None:
    root = load_parameter_file(params_file, "detector")
    assert root["use_sim_time"] is True
    assert root["model"] == "patchcore" and root["threshold"] == 0.5
    assert root["camera.fps"] == 30

    ns = load_parameter_file(params_file, "detector", namespace="/robot1")
    assert ns["model"] == "padim"
    assert ns["threshold"] == 0.7  # the later /*/detector section wins
    assert "camera.topic" not in ns

    recorder = load_parameter_file(params_file, "recorder", namespace="robot1")
    assert recorder == {"use_sim_time": True, "shared": 1, "budget_kbps": 512.0}


def test_declare_takes_file_values_then_overrides(params_file: Path) -> None:
    p = Parameters("/detector", [params_file], {"threshold": 0.9})
    assert p.declare("model", "padim", description="which VAD model") == "patchcore"
    assert p.declare("threshold", 0.1) == 0.9  # the dict of overrides comes last
    assert p.declare("missing", 3) == 3
    assert p.declare("image_size", [128, 128]) == [256, 256]
    assert p.describe("model").description == "which VAD model"
    assert p.describe("image_size").type is ParamType.INTEGER_ARRAY
    assert p["threshold"] == 0.9 and "model" in p


def test_int_accepted_for_double_but_nothing_else_converted(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("n:\n  ros__parameters:\n    gain: 2\n    name: 5\n    flags: [1, 2.5]\n")
    p = Parameters("/n", [path])
    assert p.declare("gain", 1.0) == 2.0 and isinstance(p["gain"], float)
    assert p.declare("flags", [0.0]) == [1.0, 2.5]
    message = r"'name' \(.*p\.yaml \[/n\]\): expected string, got int 5"
    with pytest.raises(ParameterError, match=message):
        p.declare("name", "x")


@pytest.mark.parametrize(
    ("default", "given", "message"),
    [
        (0.5, "high", "expected double, got str 'high'"),
        (3, 2.5, "expected integer, got float 2.5"),
        (True, 1, "expected bool, got int 1"),
        (1, True, "expected integer, got bool True"),
        ([1, 2], [1, "a"], "expected integer_array, got str 'a'"),
        ("s", ["a"], "expected string, got list"),
    ],
)
def test_ill_typed_values_are_refused(default: object, given: object, message: str) -> None:
    p = Parameters("/n", overrides={"x": given})
    with pytest.raises(ParameterError, match=message.replace("[", r"\[").replace("(", r"\(")):
        p.declare("x", default)


def test_required_parameter_and_explicit_types() -> None:
    p = Parameters("/n", overrides={"model_path": "/m.onnx"})
    assert p.declare("model_path", type=str) == "/m.onnx"
    with pytest.raises(ParameterError, match=r"'weights' .* is required"):
        p.declare("weights", type="string")
    assert p.declare("ids", [], type=list[int]) == []
    with pytest.raises(ParameterError, match="give type="):
        p.declare("empty", [])
    assert param_type("double_array") is ParamType.DOUBLE_ARRAY
    with pytest.raises(ParameterError, match="unknown parameter type"):
        param_type(dict)


def test_unknown_parameters_are_reported_with_a_hint(params_file: Path) -> None:
    p = Parameters("/detector", [params_file], {"treshold": 0.3})
    p.declare("model", "padim")
    p.declare("threshold", 0.5)
    # wildcard values (use_sim_time, shared) are shared by all nodes: not "unknown" here
    assert p.unused() == ["camera.fps", "camera.topic", "image_size", "treshold"]
    assert "shared" in p.unused(include_wildcard=True)
    hint = r"\(did you mean 'threshold'\?\)"
    with pytest.raises(ParameterError, match=r"'treshold' from overrides " + hint):
        p.check_unused()
    with pytest.raises(ParameterError, match=r"'treshhold' is not declared on /detector " + hint):
        p.get("treshhold")


def test_set_checks_type_and_read_only() -> None:
    p = Parameters("/n")
    p.declare("rate", 10.0)
    p.declare("frame", "map", read_only=True)
    p.set("rate", 20)
    assert p["rate"] == 20.0
    with pytest.raises(ParameterError, match="expected double"):
        p.set("rate", "fast")
    with pytest.raises(ParameterError, match="read-only"):
        p.set("frame", "odom")
    with pytest.raises(ParameterError, match="already declared"):
        p.declare("rate", 1.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("detector: [1, 2]\n", "'detector' is not a node section"),
        ("detector:\n  ros__parameters: 3\n", "ros__parameters must be a map"),
        ("ros__parameters: {a: 1}\n", "needs a node name"),
        ("n:\n  ros__parameters:\n    a: null\n", "parameter 'a' has no value"),
        ("n:\n  ros__parameters:\n    a: [1, x]\n", "a list must hold values of one type"),
        ("n:\n  ros__parameters:\n    a: [[1]]\n", "a list must hold values of one type"),
        ("n:\n  ros__parameters:\n    bad name: 1\n", "invalid parameter name 'bad name'"),
        ("n: {ros__parameters: {a: 1}\n", "not valid YAML"),
        ("- 1\n", "expected a map of node names"),
    ],
)
def test_malformed_files_are_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        parse_parameter_yaml(text, "bad.yaml")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"cannot read parameter file .*nope\.yaml"):
        load_parameter_file(tmp_path / "nope.yaml", "n")


def test_repository_platform_files_load() -> None:
    """The shipped platform parameter files parse (whatever nodes they configure); other YAML
    in config/ (the graph description) is not a ROS 2 parameter file."""
    root = Path(__file__).resolve().parents[1] / "config"
    files = [root / f"{platform}.yaml" for platform in ("uav", "agv", "arm")]
    for path in files:
        assert path.is_file(), f"{path} missing"
        parse_parameter_yaml(path.read_text(), str(path))
