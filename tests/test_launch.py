"""launch/inspection.launch.py: its shape here, for real on a ROS 2 host.

ROS 2's ``launch`` and ``launch_ros`` cannot be installed on the development machines, and a test
that only skips here hid a launch file that raised TypeError on Humble and Jazzy. So the launch
file is also loaded here against small fake ``launch`` / ``launch_ros`` / ``ament_index_python``
modules (injected in ``sys.modules`` for the test only) that record every call and check the
arguments the way the real classes do on the humble and jazzy branches (ros2/launch 1.0.x and
3.4.x, ros2/launch_ros 0.19.x and 0.26.x): keyword names, ``parameters`` a ``list`` of file paths
or dicts of ROS-typed values, ``remappings`` 2-tuples of text, substitutions ``str`` or a
``Substitution`` per item (a nested list raises TypeError, as it does there). That is a shape
check of the calls against those signatures, not ROS: what a node does with them is tested by the
launch_pytest test at the end, which launches the real graph and runs where ROS 2 is installed
(pytest needs the plugin: ``-p launch_pytest.plugin``, see the README).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import time
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from vad_inspection.nodes.graph import load_graph, platforms

LAUNCH_FILE = ROOT / "launch" / "inspection.launch.py"
CONFIG = ROOT / "config"


def _load_module(path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("inspection_launch", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# the source, read as a tree


def nested_substitution_lists(source: str) -> list[str]:
    """Calls of a ``*Substitution`` whose list argument holds a list (TypeError in launch)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = (
            node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        )
        if not name.endswith("Substitution"):
            continue
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            if isinstance(arg, (ast.List, ast.Tuple)) and any(
                isinstance(item, (ast.List, ast.Tuple)) for item in arg.elts
            ):
                found.append(f"line {node.lineno}: {name}")
    return found


def test_the_checker_catches_the_old_nested_list() -> None:
    old = (
        'PathJoinSubstitution([FindPackageShare("vad_inspection"), "config", [platform, ".yaml"]])'
    )
    assert nested_substitution_lists(old) == ["line 1: PathJoinSubstitution"]


def test_no_substitution_is_given_a_nested_list() -> None:
    assert nested_substitution_lists(LAUNCH_FILE.read_text()) == []


# --------------------------------------------------------------------------------------------
# fakes of the launch API, truthful to the humble / jazzy signatures


class Substitution:
    """launch.Substitution."""

    def perform(self, context: Any) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


class TextSubstitution(Substitution):
    def __init__(self, *, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"TextSubstitution expects text, got {type(text)}")
        self.text = text

    def perform(self, context: Any) -> str:
        return self.text


def normalize_to_list_of_substitutions(subs: Any) -> list[Substitution]:
    """launch.utilities.normalize_to_list_of_substitutions: str, a Substitution, or an iterable
    of those; anything else (a nested list) raises TypeError."""

    def normalize(x: Any) -> Substitution:
        if isinstance(x, Substitution):
            return x
        if isinstance(x, str):
            return TextSubstitution(text=x)
        raise TypeError(
            f"Failed to normalize given item of type '{type(x)}', when only "
            "'str' or 'launch.Substitution' were expected."
        )

    if isinstance(subs, str):
        return [TextSubstitution(text=subs)]
    if isinstance(subs, Substitution):
        return [subs]
    return [normalize(y) for y in subs]


class LaunchConfiguration(Substitution):
    def __init__(self, variable_name: Any, *, default: Any = None) -> None:
        self.variable_name = normalize_to_list_of_substitutions(variable_name)
        self.default = default

    def perform(self, context: Any) -> str:
        name = "".join(s.perform(context) for s in self.variable_name)
        if name not in context.launch_configurations:
            if self.default is None:
                raise KeyError(f"launch configuration '{name}' does not exist")
            return str(self.default)
        return context.launch_configurations[name]


class Action:
    """launch.Action: the only keyword it takes is ``condition``."""

    def __init__(self, *, condition: Any = None) -> None:
        self.condition = condition


class LaunchDescription:
    def __init__(
        self, initial_entities: Iterable[Any] | None = None, *, deprecated_reason: Any = None
    ):
        self.entities = list(initial_entities) if initial_entities is not None else []
        for entity in self.entities:
            if not isinstance(entity, Action):
                raise TypeError(f"not a launch entity: {entity!r}")


class DeclareLaunchArgument(Action):
    def __init__(
        self,
        name: str,
        *,
        default_value: Any = None,
        description: str | None = None,
        choices: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.default_value = (
            None if default_value is None else normalize_to_list_of_substitutions(default_value)
        )
        if choices is not None:
            if len(choices) == 0:
                raise RuntimeError(
                    "Provided choices arg is empty. Use None to ignore the choice list."
                )
            # launch configurations are text: a choice that is not can never match
            if not all(isinstance(c, str) for c in choices):
                raise TypeError(f"choices must be text: {choices!r}")
            literal = default_value is not None and not isinstance(
                default_value, (Substitution, list)
            )
            if literal and default_value not in choices:
                raise RuntimeError(
                    f'Provided default_value "{default_value}" is not in provided choices '
                    f'"{choices}".'
                )
        self.description = description
        self.choices = choices

    def execute(self, context: Any) -> None:
        if self.name not in context.launch_configurations:
            if self.default_value is None:
                raise RuntimeError(f'Required launch argument "{self.name}" was not provided.')
            context.launch_configurations[self.name] = "".join(
                s.perform(context) for s in self.default_value
            )
        if self.choices is not None:
            value = context.launch_configurations[self.name]
            if value not in self.choices:
                raise RuntimeError(
                    f'Argument "{self.name}" provided value "{value}" is not valid. '
                    f"Valid options are: {self.choices}"
                )


class OpaqueFunction(Action):
    def __init__(
        self,
        *,
        function: Any,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **left_over_kwargs: Any,
    ) -> None:
        super().__init__(**left_over_kwargs)
        if not callable(function):
            raise TypeError(
                f"OpaqueFunction expected a callable for 'function', got '{type(function)}'"
            )
        if args is not None and not isinstance(args, Iterable):
            raise TypeError("'OpaqueFunction' expected 'args' to be an Iterable or None")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError("'OpaqueFunction' expected 'kwargs' to be a dict or None")
        self.function = function
        self.args = list(args or [])
        self.kwargs = dict(kwargs or {})

    def execute(self, context: Any) -> Any:
        return self.function(context, *self.args, **self.kwargs)


#: Keywords Node passes on to ExecuteProcess / ExecuteLocal / Action, on humble AND jazzy
#: (jazzy adds respawn_max_retries, humble would refuse it).
EXECUTE_KWARGS = {
    "prefix", "cwd", "env", "additional_env",  # ExecuteProcess (``name`` is Node's exec_name)
    "shell", "sigterm_timeout", "sigkill_timeout", "emulate_tty", "output", "output_format",
    "cached_output", "log_cmd", "on_exit", "respawn", "respawn_delay",  # ExecuteLocal
    "condition",  # Action
}  # fmt: skip


def _parameter_value(name: str, value: Any) -> None:
    """launch_ros.utilities.normalize_parameter_dict + evaluate_parameter_dict's value rules."""
    if isinstance(value, Mapping):
        for key, sub in value.items():
            _parameter_value(f"{name}.{key}", sub)
    elif isinstance(value, (str, Substitution, float, bool, int, bytes)):
        return
    elif isinstance(value, Sequence):
        if not value:  # normalises to () and evaluate_parameter_dict then refuses it
            raise TypeError(f"parameter {name!r}: an empty list cannot be evaluated")
        allowed = (float, int, str, bool, Substitution)
        if not all(isinstance(v, allowed) for v in value):
            raise TypeError(f"parameter {name!r}: unexpected item type in {value!r}")
    else:
        raise TypeError(f"Unexpected type for parameter value {value!r}")


class Node(Action):
    def __init__(
        self,
        *,
        executable: Any,
        package: Any = None,
        name: Any = None,
        namespace: Any = None,
        exec_name: Any = None,
        parameters: Any = None,
        remappings: Any = None,
        ros_arguments: Any = None,
        arguments: Any = None,
        **kwargs: Any,
    ) -> None:
        unknown = set(kwargs) - EXECUTE_KWARGS
        if unknown:
            raise TypeError(f"__init__() got unexpected keyword argument(s) {sorted(unknown)}")
        super().__init__(condition=kwargs.get("condition"))
        for value in (executable, package, name, namespace, exec_name):
            if value is not None:
                normalize_to_list_of_substitutions(value)
        if parameters is not None:
            if not isinstance(parameters, list):  # ensure_argument_type(parameters, (list), ...)
                raise TypeError(
                    f"Expected 'parameters' to be one of [list], got {type(parameters)}"
                )
            for item in parameters:
                if isinstance(item, Mapping):
                    for key, value in item.items():
                        normalize_to_list_of_substitutions(key)
                        _parameter_value(str(key), value)
                elif isinstance(item, (str, os.PathLike, Substitution)):
                    continue
                else:
                    raise TypeError(f"a parameters item must be a file path or a dict: {item!r}")
        rules: list[tuple[Any, Any]] = []
        for rule in remappings or []:
            if not isinstance(rule, tuple):  # ensure_argument_type(remap_rule, (tuple), ...)
                raise TypeError(f"Expected 'remap_rule' to be one of [tuple], got {type(rule)}")
            if len(rule) != 2:
                raise TypeError(f"remap_rule must be a tuple of length 2, got length {len(rule)}")
            normalize_to_list_of_substitutions(rule[0])
            normalize_to_list_of_substitutions(rule[1])
            rules.append(rule)
        respawn = kwargs.get("respawn", False)
        if not isinstance(respawn, bool):
            normalize_to_list_of_substitutions(respawn)
        if "output" in kwargs:
            normalize_to_list_of_substitutions(kwargs["output"])
        self.package, self.executable, self.name, self.namespace = (
            package, executable, name, namespace
        )  # fmt: skip
        self.parameters, self.remappings, self.kwargs = parameters, rules, kwargs


class LifecycleNode(Node):
    def __init__(self, *, name: Any, namespace: Any, **kwargs: Any) -> None:
        super().__init__(name=name, namespace=namespace, **kwargs)


class PackageNotFoundError(KeyError):
    pass


def get_package_share_directory(package_name: str, print_warning: bool = True) -> str:
    """The source tree has the install space's share/vad_inspection layout (launch/, config/)."""
    if package_name != "vad_inspection":
        raise PackageNotFoundError(f"package '{package_name}' not found")
    return str(ROOT)


class FakeContext:
    """launch.LaunchContext as far as the launch file uses it."""

    def __init__(self, arguments: Mapping[str, str]) -> None:
        self.launch_configurations = dict(arguments)


@pytest.fixture
def launch_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The launch file loaded against the fakes (restored afterwards, so a real launch is not
    disturbed on a ROS 2 host)."""

    def module(name: str, **attributes: Any) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, mod)
        return mod

    actions = module(
        "launch.actions", DeclareLaunchArgument=DeclareLaunchArgument, OpaqueFunction=OpaqueFunction
    )
    substitutions = module(
        "launch.substitutions",
        LaunchConfiguration=LaunchConfiguration,
        TextSubstitution=TextSubstitution,
    )
    module(
        "launch",
        LaunchDescription=LaunchDescription,
        Substitution=Substitution,
        actions=actions,
        substitutions=substitutions,
    )
    ros_actions = module("launch_ros.actions", Node=Node, LifecycleNode=LifecycleNode)
    module("launch_ros", actions=ros_actions)
    packages = module(
        "ament_index_python.packages",
        get_package_share_directory=get_package_share_directory,
        PackageNotFoundError=PackageNotFoundError,
    )
    module("ament_index_python", packages=packages)
    return _load_module(LAUNCH_FILE)


def _run(module: types.ModuleType, **arguments: str) -> tuple[LaunchDescription, list[Node]]:
    """What ``ros2 launch ... name:=value`` does with the description: declare, then execute."""
    description = module.generate_launch_description()
    context = FakeContext(arguments)
    launched: list[Node] = []
    for entity in description.entities:
        result = entity.execute(context)
        launched.extend(result or [])
    return description, launched


def _arguments(description: LaunchDescription) -> dict[str, DeclareLaunchArgument]:
    return {e.name: e for e in description.entities if isinstance(e, DeclareLaunchArgument)}


def test_declares_the_arguments(launch_module: types.ModuleType) -> None:
    arguments = _arguments(launch_module.generate_launch_description())
    assert set(arguments) == {"platform", "model", "camera", "use_sim_time", "autostart", "bag",
                              "scenario", "record", "data_root"}  # fmt: skip
    platform = arguments["platform"]
    assert platform.default_value[0].text == "agv"
    assert list(platform.choices) == platforms(CONFIG) == [
        "uav", "agv", "arm", "orbiter", "rover"
    ]  # fmt: skip
    assert arguments["autostart"].default_value[0].text == "false"
    assert list(arguments["record"].choices) == ["true", "false"]
    assert list(arguments["use_sim_time"].choices) == ["auto", "true", "false"]
    assert all(a.description for a in arguments.values())


@pytest.mark.parametrize("platform", ["uav", "agv", "arm", "orbiter", "rover"])
def test_one_node_action_per_node_spec(launch_module: types.ModuleType, platform: str) -> None:
    _, launched = _run(launch_module, platform=platform)
    graph = load_graph(platform, CONFIG, {"use_sim_time": False, "autostart": False})
    assert [n.name for n in graph.nodes] == ["detector", "hazard_map"]
    assert len(launched) == len(graph.nodes)
    for action, spec in zip(launched, graph.nodes, strict=True):
        assert type(action) is (LifecycleNode if spec.lifecycle else Node)
        assert (action.package, action.executable, action.name, action.namespace) == (
            "vad_inspection", spec.executable, spec.name, spec.namespace
        )  # fmt: skip
        assert action.remappings == list(spec.remappings)
        assert action.parameters == [
            str((CONFIG / f"{platform}.yaml").resolve()),
            {"use_sim_time": False, "autostart": False},
        ]
        assert action.kwargs == {"respawn": spec.respawn, "output": "screen"}


def test_arguments_become_parameters_and_remappings(launch_module: types.ModuleType) -> None:
    _, (detector, _) = _run(
        launch_module,
        platform="uav",
        model="/models/tiles.vad",
        camera="/front",
        use_sim_time="true",
        autostart="true",
    )
    assert detector.parameters[-1] == {
        "use_sim_time": True,
        "autostart": True,
        "model": "/models/tiles.vad",
    }
    remaps = dict(detector.remappings)
    assert remaps["image"] == "/front/image_raw"
    assert remaps["camera_info"] == "/front/camera_info"


def test_a_bag_adds_the_player_and_record_the_recorder(launch_module: types.ModuleType) -> None:
    _, launched = _run(launch_module, platform="rover", bag="/data/sol_270", record="true")
    assert [a.name for a in launched] == ["player", "detector", "hazard_map", "recorder"]
    player = launched[0]
    assert player.parameters[-1] == {"bag": "/data/sol_270", "use_sim_time": True,
                                     "autostart": False}  # fmt: skip
    assert all(a.parameters[-1]["use_sim_time"] is True for a in launched)  # auto: a bag plays
    with pytest.raises(Exception, match="not both"):
        _run(launch_module, bag="/a", scenario="lunar_orbit")


def test_a_platform_outside_the_choices_is_refused(launch_module: types.ModuleType) -> None:
    with pytest.raises(RuntimeError, match=r'"platform" provided value "boat" is not valid'):
        _run(launch_module, platform="boat")


def test_the_fakes_refuse_what_launch_refuses() -> None:
    """The fakes are only worth something if they fail where the real classes fail."""
    with pytest.raises(TypeError, match="Failed to normalize"):
        normalize_to_list_of_substitutions([LaunchConfiguration("p"), ["a", ".yaml"]])
    with pytest.raises(TypeError, match="parameters"):
        Node(executable="detector", parameters=("a.yaml",))
    with pytest.raises(TypeError, match="remap_rule"):
        Node(executable="detector", remappings=[["image", "/camera/image_raw"]])
    with pytest.raises(TypeError, match="empty list"):
        Node(executable="detector", parameters=[{"plane": []}])
    with pytest.raises(TypeError, match="respawn_max_retries"):
        Node(executable="detector", respawn_max_retries=3)  # jazzy only
    with pytest.raises(TypeError, match="autostart"):
        LifecycleNode(name="detector", namespace="", executable="detector", autostart=True)
    with pytest.raises(TypeError):
        LifecycleNode(name="detector", executable="detector")  # namespace is required
    with pytest.raises(RuntimeError, match="not in provided choices"):
        DeclareLaunchArgument("platform", default_value="boat", choices=["uav"])


# --------------------------------------------------------------------------------------------
# with ROS 2 (skips here)


def _importable(*names: str) -> bool:
    try:
        return all(importlib.util.find_spec(n) is not None for n in names)
    except (ImportError, ValueError):
        return False


HAVE_LAUNCH = _importable("launch", "launch_ros", "ament_index_python")
needs_launch = pytest.mark.skipif(
    not HAVE_LAUNCH, reason="ROS 2 launch / launch_ros are not installed here"
)


def _installed_launch_file() -> Path:
    from ament_index_python.packages import PackageNotFoundError as NotFound
    from ament_index_python.packages import get_package_share_directory as share

    try:
        return Path(share("vad_inspection")) / "launch" / "inspection.launch.py"
    except NotFound:
        pytest.skip("vad_inspection is not installed (colcon build; source install/setup.bash)")


@pytest.mark.ros
@needs_launch
def test_real_launch_builds_the_node_actions() -> None:
    """The same description against the real launch and launch_ros: arguments declared, the
    OpaqueFunction run in a real LaunchContext, and each node's parameters and remappings
    expanded the way they are just before the process starts."""
    from launch.actions import DeclareLaunchArgument as RealDeclare

    import launch

    module = _load_module(_installed_launch_file())
    description = module.generate_launch_description()
    declared = {a.name: a for a in description.get_launch_arguments()}
    assert set(declared["platform"].choices) == {"uav", "agv", "arm"}
    context = launch.LaunchContext()
    context.launch_configurations.update(platform="agv", camera="/front", model="/m.vad")
    nodes = []
    for entity in description.entities:
        if isinstance(entity, RealDeclare):
            entity.execute(context)  # sets the defaults, checks the choices
        else:
            nodes.extend(entity.execute(context) or [])  # the OpaqueFunction
    (detector,) = nodes
    assert detector.node_package == "vad_inspection" and detector.node_executable == "detector"
    detector._perform_substitutions(context)  # what Node.execute does before the process starts
    assert detector.node_name == "/detector"
    assert ("image", "/front/image_raw") in detector.expanded_remapping_rules


HAVE_ROS_LAUNCH_TEST = _importable("launch_pytest", "rclpy", "lifecycle_msgs") and HAVE_LAUNCH
LAUNCH_PYTEST_ACTIVE = "launch_pytest.plugin" in sys.modules

if HAVE_ROS_LAUNCH_TEST and LAUNCH_PYTEST_ACTIVE:
    import launch_pytest
    import rclpy
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from lifecycle_msgs.msg import State
    from lifecycle_msgs.srv import GetState
    from rclpy.executors import SingleThreadedExecutor

    import launch

    @launch_pytest.fixture
    def agv_graph() -> Any:
        """``ros2 launch vad_inspection inspection.launch.py platform:=agv autostart:=false``."""
        return launch.LaunchDescription(
            [
                IncludeLaunchDescription(
                    PythonLaunchDescriptionSource(str(_installed_launch_file())),
                    launch_arguments={"platform": "agv", "autostart": "false"}.items(),
                ),
                launch_pytest.actions.ReadyToTest(),
            ]
        )

    @pytest.mark.ros
    @pytest.mark.launch(fixture=agv_graph)
    def test_launched_detector_waits_unconfigured() -> None:
        context = rclpy.Context()
        rclpy.init(context=context)
        node = rclpy.create_node("vad_inspection_launch_probe", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        try:
            deadline = time.monotonic() + 60.0
            while ("detector", "/") not in node.get_node_names_and_namespaces():
                assert time.monotonic() < deadline, (
                    f"/detector did not appear; nodes: {node.get_node_names_and_namespaces()}"
                )
                executor.spin_once(timeout_sec=0.2)
            client = node.create_client(GetState, "/detector/get_state")
            assert client.wait_for_service(timeout_sec=30.0), "/detector/get_state not served"
            future = client.call_async(GetState.Request())
            executor.spin_until_future_complete(future, timeout_sec=30.0)
            assert future.done(), "/detector/get_state did not answer"
            state = future.result().current_state
            assert (state.id, state.label) == (State.PRIMARY_STATE_UNCONFIGURED, "unconfigured")
        finally:
            executor.remove_node(node)
            node.destroy_node()
            rclpy.shutdown(context=context)

else:

    @pytest.mark.ros
    @pytest.mark.skip(
        reason="needs ROS 2 (launch_pytest, rclpy, lifecycle_msgs) and pytest run with "
        "-p launch_pytest.plugin"
        if HAVE_ROS_LAUNCH_TEST
        else "needs ROS 2 (launch_pytest, rclpy, lifecycle_msgs): runs on a ROS 2 host"
    )
    def test_launched_detector_waits_unconfigured() -> None:
        """Placeholder so the skip, and why, shows in the report."""
