"""colcon builds the package as a ROS 2 user's workspace would, and installs what ros2 looks for.

colcon (colcon-common-extensions, from PyPI) builds an ament_python package without ROS 2, so the
install layout -- launch file, parameter files, package.xml, the ament index marker and the console
scripts under lib/<package>/ where `ros2 run` looks -- is checked for real here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def _colcon() -> str:
    beside = Path(sys.executable).parent / "colcon"
    found = str(beside) if beside.exists() else shutil.which("colcon")
    if not found:
        pytest.skip("colcon is not installed (pip install colcon-common-extensions)")
    return found


def _project_files() -> list[str]:
    """Tracked and new (not ignored) files: what a clone plus local work holds, without .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [f for f in listed if (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def install_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workspace = tmp_path_factory.mktemp("colcon_ws")
    package = workspace / "src" / "vad_inspection"
    for name in _project_files():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, package / name)
    result = subprocess.run(
        [_colcon(), "build", "--event-handlers", "console_direct-"],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"colcon build failed:\n{result.stdout}\n{result.stderr}"
    return workspace / "install" / "vad_inspection"


def test_install_space_holds_the_ros2_layout(install_space: Path) -> None:
    share = install_space / "share" / "vad_inspection"
    assert (install_space / "share/ament_index/resource_index/packages/vad_inspection").is_file()
    assert (share / "package.xml").read_text() == (ROOT / "package.xml").read_text()
    assert (share / "launch" / "inspection.launch.py").is_file()
    for platform in ("uav", "agv", "arm"):
        assert (share / "config" / f"{platform}.yaml").is_file()
    assert (share / "config" / "graph.yaml").is_file()
    assert (share / "config" / "cyclonedds_loopback.xml").is_file()
    assert (share / "sim" / "crack_wall.yaml").is_file()  # scenarios for `sim`, found by name


def test_installed_graph_loads_from_the_share_directory(install_space: Path) -> None:
    """What the launch file does at launch time: the graph and every parameter file it names are
    read from share/vad_inspection/config, not from the source tree."""
    from vad_inspection.nodes.graph import load_graph, platforms

    config = install_space / "share" / "vad_inspection" / "config"
    for platform in platforms(config):
        for spec in load_graph(platform, config).nodes:
            assert spec.params_files
            assert all(Path(p).parent == config for p in spec.params_files)
            script = install_space / "lib" / "vad_inspection" / spec.executable
            assert script.is_file() and os.access(script, os.X_OK), f"no executable {script}"


def test_node_executables_are_where_ros2_run_looks(install_space: Path) -> None:
    """`ros2 run vad_inspection detector` runs lib/vad_inspection/detector: the console script
    finds the node's main in the installed package (its --help answers without a middleware)."""
    script = install_space / "lib" / "vad_inspection" / "detector"
    assert script.is_file() and os.access(script, os.X_OK)
    site = next((install_space / "lib").glob("python3*/site-packages"))
    result = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=install_space,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "detector" in result.stdout and "--ros-args" not in result.stderr


def test_console_scripts_run_from_lib_package(install_space: Path) -> None:
    script = install_space / "lib" / "vad_inspection" / "vad-inspection"
    assert script.is_file() and os.access(script, os.X_OK)
    site = next((install_space / "lib").glob("python3*/site-packages"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, str(script), "--version"],
        capture_output=True,
        text=True,
        env=env,
        cwd=install_space,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "vad-inspection 0.1.0" in result.stdout
