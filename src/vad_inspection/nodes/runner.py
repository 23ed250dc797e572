"""The command line every node shares: ``ros2 run vad_inspection <node> [--ros-args ...]`` and
``vad-inspection run <node> --transport dds|ros|local --params-file ...``.

On ``ros`` the ``--ros-args`` part goes to rclpy as for any ROS 2 node; on the other bindings the
same arguments are read here (``-p name:=value``, ``--params-file``, ``-r from:=to``,
``-r __node:=name``, ``-r __ns:=/ns``), so a launch description's command line works on both.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from ..errors import VadError
from ..transport import Bus, create_bus


def _default_transport() -> str:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        return "dds"
    return "ros"


def parse_args(argv: Sequence[str], node: str) -> tuple[argparse.Namespace, list[str]]:
    """Our options, and the ``--ros-args`` part of ``argv``."""
    argv = list(argv)
    ros_args: list[str] = []
    if "--ros-args" in argv:
        at = argv.index("--ros-args")
        argv, ros_args = argv[:at], argv[at:]
    parser = argparse.ArgumentParser(prog=node, description=f"the vad_inspection {node} node")
    parser.add_argument("--transport", choices=("ros", "dds", "local"), default=None,
                        help="middleware (default: ros where rclpy imports, else dds)")  # fmt: skip
    parser.add_argument("--params-file", action="append", default=[], help="ROS 2 params YAML")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE")
    parser.add_argument("-r", "--remap", action="append", default=[], metavar="FROM:=TO")
    parser.add_argument("--name", default=node)
    parser.add_argument("--namespace", default="")
    parser.add_argument("--loopback", action="store_true",
                        help="dds: the shipped one-host Cyclone configuration")  # fmt: skip
    args = parser.parse_args(argv)
    rest = iter(ros_args[1:])
    for token in rest:
        if token in ("-p", "--param"):
            args.param.append(next(rest, ""))
        elif token == "--params-file":
            args.params_file.append(next(rest, ""))
        elif token in ("-r", "--remap"):
            args.remap.append(next(rest, ""))
    args.remappings = {}
    for rule in args.remap:
        source, _, target = rule.partition(":=")
        if source == "__node":
            args.name = target
        elif source == "__ns":
            args.namespace = target
        else:
            args.remappings[source] = target
    args.overrides = {}
    for pair in args.param:
        key, _, text = pair.partition(":=")
        args.overrides[key] = yaml.safe_load(text)
    args.transport = args.transport or _default_transport()
    return args, ros_args


def run_node(make: Callable[[Bus], Any], name: str, argv: Sequence[str] | None = None) -> int:
    """Create the bus from the command line, run the node until Ctrl-C, shut down cleanly."""
    args, ros_args = parse_args(sys.argv[1:] if argv is None else argv, name)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    options: dict[str, Any] = {
        "namespace": args.namespace or None,
        "params_file": args.params_file,
        "parameters": args.overrides,
        "remappings": args.remappings,
    }
    if args.transport == "ros":
        options["args"] = ros_args or None
    if args.transport == "dds":
        options["loopback"] = args.loopback
    try:
        bus = create_bus(args.transport, args.name, **options)
    except (VadError, ImportError) as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 2
    with bus:
        bus.install_signal_handlers()
        try:
            node = make(bus)
        except VadError as error:
            print(f"{name}: {error}", file=sys.stderr)
            return 2
        try:
            bus.spin()
        finally:
            node.close()
    return 0
