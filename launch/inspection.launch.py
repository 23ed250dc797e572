"""Launch the inspection graph of one platform.

    ros2 launch vad_inspection inspection.launch.py platform:=uav
    ros2 launch vad_inspection inspection.launch.py platform:=agv camera:=/front autostart:=true \
        model:=/data/models/tiles.vad
    ros2 launch vad_inspection inspection.launch.py platform:=orbiter scenario:=lunar_orbit \
        model:=/data/models/lunar.vad autostart:=true record:=true

Thin on purpose: which nodes run, with which remappings and parameter files, is described once in
``config/graph.yaml``; the arguments and what they resolve to (a scenario written to a bag once,
``use_sim_time`` auto when something plays, the recorder only with ``record:=true``) are
:data:`~vad_inspection.nodes.graph.LAUNCH_ARGUMENTS` and
:func:`~vad_inspection.nodes.graph.plan_launch`, which the ROS-free ``vad-inspection launch`` uses
too. This file declares the arguments, and at launch time (an ``OpaqueFunction``, so the arguments
are plain strings by then and no substitution has to be nested) turns each ``NodeSpec`` into one
``launch_ros`` action.

Checked against launch and launch_ros on the humble and jazzy branches (identical there for every
call used here): ``DeclareLaunchArgument(name, default_value=str, description=str,
choices=list[str])`` (the default must be one of the choices); ``OpaqueFunction(function=f)``
calls ``f(context)`` and launches what it returns; ``Node(package, executable, name, namespace,
parameters=list, remappings=iterable of 2-tuples, respawn=bool, output=str)`` where
``parameters`` must be a ``list`` whose items are file paths or dicts of bool / int / float / str
/ non-empty lists; ``LifecycleNode`` is ``Node`` with ``name`` and ``namespace`` required.

Why ``LifecycleNode`` for nodes that serve the REP-2006 lifecycle themselves (the detector): it
subscribes to ``<node>/transition_event`` and keeps a ``<node>/change_state`` client, so a launch
that includes this one can react to transitions (``OnStateTransition``: start a recorder when the
detector is active) and request them (``EmitEvent(ChangeState(...))``). A plain ``Node`` would run
the same process but make the launch blind to its state. The cost is an rclpy node in the launch
process (launch_ros's ROS adapter), which ``ros2 launch`` provides. The namespace is passed as
given (empty: relative), so an enclosing ``PushRosNamespace`` still applies.
"""

from __future__ import annotations

import os
from typing import Any

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from launch import LaunchDescription
from vad_inspection.nodes.graph import (
    BOOL_ARGUMENTS,
    LAUNCH_ARGUMENTS,
    plan_launch,
    platforms,
)

PACKAGE = "vad_inspection"
BOOL_CHOICES = ["true", "false"]


def _config_dir() -> str:
    """The installed ``share/vad_inspection/config`` (graph.yaml and the parameter files)."""
    return os.path.join(get_package_share_directory(PACKAGE), "config")


def _launch_nodes(context: Any, config_dir: str) -> list[Any]:
    """Resolve the launch arguments and return one launch_ros action per node of the platform."""
    arguments = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    plan = plan_launch(arguments, config_dir)
    actions: list[Any] = []
    for spec in plan.graph.nodes:
        parameters: list[Any] = list(spec.params_files)
        if spec.parameters:
            parameters.append(dict(spec.parameters))
        action = LifecycleNode if spec.lifecycle else Node
        actions.append(
            action(
                package=spec.package,
                executable=spec.executable,
                name=spec.name,
                namespace=spec.namespace,
                parameters=parameters,
                remappings=[(src, dst) for src, dst in spec.remappings],
                respawn=spec.respawn,
                output="screen",
            )
        )
    return actions


def _choices(name: str, config_dir: str) -> list[str] | None:
    if name == "platform":
        return platforms(config_dir)
    if name in BOOL_ARGUMENTS:
        return BOOL_CHOICES
    if name == "use_sim_time":
        return ["auto", *BOOL_CHOICES]
    return None


def generate_launch_description() -> LaunchDescription:
    config_dir = _config_dir()
    declared = []
    for name, (default, description) in LAUNCH_ARGUMENTS.items():
        choices = _choices(name, config_dir)
        options = {"choices": choices} if choices else {}
        declared.append(
            DeclareLaunchArgument(name, default_value=default, description=description, **options)
        )
    return LaunchDescription(
        [
            *declared,
            OpaqueFunction(function=_launch_nodes, kwargs={"config_dir": config_dir}),
        ]
    )
