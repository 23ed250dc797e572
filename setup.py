"""Build script for both worlds: colcon (ament_python) on ROS 2 robots, pip everywhere else.

Runtime Python dependencies live in extras, not install_requires, on purpose: on a ROS 2 robot
they come from rosdep (package.xml), and setuptools' console-script wrappers would refuse to start
if pip metadata for apt-installed packages (python3-opencv, ...) were required.
"""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "vad_inspection"
HERE = Path(__file__).parent


def _tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries that install ``folder`` recursively under share/<pkg>/."""
    entries: dict[str, list[str]] = {}
    for path in sorted(glob(f"{folder}/**/*", recursive=True)):
        if Path(path).is_file():
            target = str(Path("share") / PACKAGE / Path(path).parent)
            entries.setdefault(target, []).append(path)
    return sorted(entries.items())


CORE = [
    "numpy>=1.24",
    "opencv-python-headless>=4.8",
    "onnxruntime>=1.17",
    "onnx>=1.16",
    "numba>=0.60",
    "rosbags>=0.10",
    "mcap>=1.1",  # reads an MCAP cut off before its summary (a crash mid-recording)
    "cyclonedds==11.0.1",
    "pyyaml>=6",
    "tqdm>=4.60",
    "matplotlib>=3.7",
    "foxglove-sdk>=0.30,<0.31",  # --foxglove: the graph's topics live in Foxglove, no ROS 2
]
TRAIN = ["torch==2.14.*", "torchvision==0.29.*"]
DEV = [
    "pytest>=7",
    "pytest-timeout>=2",
    "ruff>=0.5",
    "scikit-learn>=1.3",
    "scipy>=1.10",
    "mcap-ros2-support>=0.5",
    "colcon-common-extensions>=0.3",
    "websockets>=12",  # a Foxglove WebSocket client in the bridge's test
]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Visual anomaly detection nodes for inspection robots (ROS 2 and ROS-free)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={"vad_inspection.msgs": ["definitions/*/*.msg", "definitions/srv/*/*.srv"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *_tree("launch"),
        *_tree("config"),
        *_tree("models"),
        *_tree("sim"),
    ],
    install_requires=["setuptools"],
    extras_require={"core": CORE, "train": TRAIN, "dev": DEV},
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "vad-inspection = vad_inspection.cli:main",
            # ROS 2 nodes: `ros2 run vad_inspection <name>` finds them in lib/vad_inspection/,
            # and config/graph.yaml names them as each node kind's executable.
            "detector = vad_inspection.nodes.detector:main",
            "player = vad_inspection.nodes.player:main",
            "recorder = vad_inspection.nodes.recorder:main",
            "hazard_map = vad_inspection.nodes.hazard:main",
        ],
    },
)
