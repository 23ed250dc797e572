"""The launch file, under ROS 2 (skips where launch / launch_ros are not installed)."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import ROOT

pytestmark = pytest.mark.ros
launch = pytest.importorskip("launch", reason="ROS 2 launch is not installed here")
pytest.importorskip("launch_ros", reason="ROS 2 launch_ros is not installed here")


def _description():
    spec = importlib.util.spec_from_file_location(
        "inspection_launch", ROOT / "launch" / "inspection.launch.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def test_declares_the_platform_argument_with_its_choices() -> None:
    arguments = {a.name: a for a in _description().get_launch_arguments()}
    assert arguments["platform"].default_value[0].text == "agv"
    assert set(arguments["platform"].choices) == {"uav", "agv", "arm"}
