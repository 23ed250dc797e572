"""Visual anomaly detection for inspection robots, as ROS 2 nodes and a ROS-free CLI."""

__version__ = "0.1.0"
