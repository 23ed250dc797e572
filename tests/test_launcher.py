"""``vad-inspection launch``: the supervisor starts a platform's graph as real node processes over
Cyclone DDS (on a fresh domain per test), watches their lifecycle state and topic rate, restarts a
node that is killed, gives up on one that keeps failing, and stops every process it started.

The helpers that build a node's command line are checked against the node runner's own parser,
so what the supervisor writes is what a node reads."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT

from vad_inspection import cli
from vad_inspection.launcher import (
    LaunchOptions,
    NodeStatus,
    Supervisor,
    config_dir,
    exit_text,
    format_table,
    node_command,
    parse_arguments,
    value_text,
)
from vad_inspection.nodes.graph import GraphError, GraphSpec, LaunchPlan, NodeSpec, plan_launch
from vad_inspection.nodes.runner import parse_args

WAIT = 40.0  # s: generous for two node processes starting on a loaded 2-core box
PID = re.compile(r"pid (\d+)")


# --------------------------------------------------------------------------------------------
# the pieces, without processes


@pytest.mark.parametrize(
    "value",
    [True, False, 0, 3, -2, 0.5, 1e-05, -1.5e20, "", "123", "true", "null", "a b: c",
     "/data/models/x.vad", [1, 2], [0.5, 1.0], ["a", "true"]],
)  # fmt: skip
def test_parameter_values_survive_the_runners_yaml(value: Any) -> None:
    text = value_text(value)
    assert yaml.safe_load(text) == value
    assert type(yaml.safe_load(text)) is type(value)


def test_the_command_line_is_what_the_runner_reads() -> None:
    spec = NodeSpec(
        name="detector", executable="detector", namespace="/robot1",
        parameters={"model": "123", "autostart": True, "use_sim_time": False},
        params_files=("/cfg/uav.yaml", "/cfg/extra.yaml"),
        remappings=(("image", "/camera/image_raw"), ("depth", "/camera/depth/image_raw")),
    )  # fmt: skip
    command = node_command(spec, "dds", loopback=True)
    assert command[:5] == [sys.executable, "-m", "vad_inspection.cli", "run", "detector"]
    args, _ = parse_args(command[5:], "detector")
    assert args.transport == "dds" and args.loopback
    assert (args.name, args.namespace) == ("detector", "/robot1")
    assert args.params_file == ["/cfg/uav.yaml", "/cfg/extra.yaml"]
    assert args.overrides == {"model": "123", "autostart": True, "use_sim_time": False}
    assert args.remappings == dict(spec.remappings)


def test_exit_text_names_the_signal() -> None:
    assert exit_text(-signal.SIGKILL) == "exit by SIGKILL"
    assert exit_text(0) == "exit code 0"
    assert exit_text(2) == "exit code 2"


def test_arguments_are_name_value_pairs() -> None:
    assert parse_arguments(["platform:=uav", "model:=a:=b", "camera:="]) == {
        "platform": "uav", "model": "a:=b", "camera": ""}  # fmt: skip
    with pytest.raises(GraphError, match="NAME:=VALUE"):
        parse_arguments(["platform=uav"])


def test_the_config_is_the_checkouts() -> None:
    assert config_dir() == ROOT / "config"


def test_the_table_has_a_row_per_node() -> None:
    lines = format_table(
        [NodeStatus("detector", 123, "active", 0.0, 0, True),
         NodeStatus("hazard_map", None, "restarting", None, 2, False)], 12.3,
    )  # fmt: skip
    assert lines[0].startswith("--- 12 s ---")
    assert lines[1].split() == ["node", "pid", "state", "rate", "restarts"]
    assert lines[2].split() == ["detector", "123", "active", "0.0", "Hz", "0"]
    assert lines[3].split() == ["hazard_map", "-", "restarting", "-", "2"]


@pytest.mark.parametrize(
    "word, message",
    [("platform:=boat", "unknown platform 'boat'"),
     ("colour:=red", "unknown launch argument(s) colour"),
     ("platform", "launch arguments are NAME:=VALUE")],
)  # fmt: skip
def test_a_bad_argument_exits_2_with_the_message(
    word: str, message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["launch", word, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()  # nothing started


# --------------------------------------------------------------------------------------------
# real processes over DDS


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _ours(pid: int) -> bool:
    try:
        return b"vad_inspection" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _wait(predicate: Callable[[], bool], what: str, output: Callable[[], str]) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {WAIT:g} s: {what}\n--- output ---\n{output()}")
        time.sleep(0.1)


class Running:
    """A supervisor running ``plan`` in a thread, its status lines in a buffer."""

    def __init__(self, plan: LaunchPlan, out: Path, **options: Any) -> None:
        self.stream = io.StringIO()
        settings: dict[str, Any] = {"status_period_s": 1.0, "restart_delay_s": 0.5, **options}
        self.supervisor = Supervisor(
            plan, LaunchOptions(out=out, loopback=True, stream=self.stream, **settings)
        )
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.supervisor.run()

    @property
    def output(self) -> str:
        return self.stream.getvalue()

    def pids(self) -> set[int]:
        return {int(p) for p in PID.findall(self.output)}

    def row(self, name: str) -> NodeStatus:
        return next(r for r in self.supervisor.status() if r.name == name)

    def wait(self, predicate: Callable[[], bool], what: str) -> None:
        _wait(predicate, what, lambda: self.output)

    def finish(self, timeout: float = 30.0) -> int | None:
        self.supervisor.stop()
        self.thread.join(timeout)
        return self.code


@pytest.fixture
def supervise(domain: int, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """``supervise(plan, **options)``; every process started is gone after the test."""
    made: list[Running] = []

    def start(plan: LaunchPlan, **options: Any) -> Running:
        running = Running(plan, tmp_path / f"run{len(made)}", **options)
        made.append(running)
        return running

    yield start
    for running in made:
        running.finish()
        for pid in running.pids():  # a failed test must not leave nodes behind
            if _alive(pid) and _ours(pid):
                os.kill(pid, signal.SIGKILL)


def _uav() -> LaunchPlan:
    # no model file: the detector warns and runs (it can learn one through ~/fit)
    return plan_launch({"platform": "uav", "autostart": "true"}, config_dir())


def test_the_graph_comes_up_with_state_and_rate(supervise: Callable[..., Running]) -> None:
    run = supervise(_uav())
    run.wait(lambda: run.row("hazard_map").state == "active", "the hazard map active")
    run.wait(lambda: (run.row("hazard_map").rate_hz or 0) > 0, "the hazard grid's rate")
    run.wait(lambda: run.row("detector").state != "?", "the detector answering ~/get_state")
    assert run.row("detector").state in ("active", "unconfigured")
    run.wait(lambda: re.search(r"hazard_map +\d+ +active +\d+\.\d Hz +0", run.output) is not None,
             "a status table row")  # fmt: skip
    pids = {r.pid for r in run.supervisor.status()}
    assert None not in pids and len(pids) == 2
    assert run.finish() == 0
    assert not any(_alive(pid) for pid in run.pids())
    assert (run.supervisor.out / "logs" / "hazard_map.log").read_text().count("--- ") == 1
    assert "stopped" in run.output and "sending SIGINT" in run.output


def test_a_killed_node_is_restarted(supervise: Callable[..., Running]) -> None:
    run = supervise(_uav())
    run.wait(lambda: run.row("hazard_map").state == "active", "the hazard map active")
    first = run.row("hazard_map").pid
    detector = run.row("detector").pid
    assert first is not None
    os.kill(first, signal.SIGKILL)

    def back() -> bool:
        row = run.row("hazard_map")
        return row.pid not in (None, first) and row.restarts == 1 and row.state == "active"

    run.wait(back, "the hazard map restarted and active again")
    assert "restarted hazard_map (exit by SIGKILL), restart 1" in run.output
    assert f"hazard_map (pid {first}) died: exit by SIGKILL" in run.output
    assert run.row("detector").pid == detector and run.row("detector").restarts == 0
    assert run.finish() == 0
    assert not any(_alive(pid) for pid in run.pids())
    log = (run.supervisor.out / "logs" / "hazard_map.log").read_text()
    assert "start 1:" in log and "start 2:" in log


def test_a_node_that_keeps_failing_is_given_up(supervise: Callable[..., Running]) -> None:
    # an unknown parameter stops a node at start-up (exit code 2)
    bad = {"nonsense": 1}
    graph = GraphSpec("test", (
        NodeSpec("crashy", "player", parameters=bad, respawn=True, lifecycle=True),
        NodeSpec("once", "player", parameters=bad, respawn=False, lifecycle=True),
    ))  # fmt: skip
    run = supervise(LaunchPlan(graph, "", False), max_restarts=1, restart_delay_s=0.1)
    run.thread.join(WAIT)
    assert not run.thread.is_alive(), run.output
    assert run.code == 1  # ended by itself: nothing left to run, and nodes failed
    assert "once (pid" in run.output and "not restarted (respawn false)" in run.output
    assert "restarted crashy (exit code 2), restart 1" in run.output
    assert "not restarted again: 1 restarts within 60 s" in run.output
    assert "every node has exited; failed: crashy, once" in run.output
    assert "unknown parameter" in (run.supervisor.out / "logs" / "once.log").read_text()
    assert [r.restarts for r in run.supervisor.status()] == [1, 0]


def test_the_duration_stops_the_graph(supervise: Callable[..., Running]) -> None:
    graph = GraphSpec("test", (_uav().graph.node("hazard_map"),))
    run = supervise(LaunchPlan(graph, "", False), duration_s=2.0)
    run.thread.join(WAIT)
    assert not run.thread.is_alive(), run.output
    assert run.code == 0 and "ran 2 s: stopping" in run.output
    assert not any(_alive(pid) for pid in run.pids())


def test_ctrl_c_stops_the_launch_command(domain: int, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "vad_inspection.cli", "launch", "platform:=uav",
         "autostart:=true", "--out", str(tmp_path), "--loopback"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")))
    reader.start()

    def output() -> str:
        return "".join(lines)

    pids: set[int] = set()
    try:
        _wait(lambda: re.search(r"hazard_map +\d+ +active", output()) is not None,
              "the hazard map active in the status table", output)  # fmt: skip
        pids = {int(p) for p in re.findall(r"started \w+, pid (\d+)", output())}
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0, output()
        reader.join(10)
        assert not any(_alive(pid) for pid in pids), output()
        assert output().count("stopped: ") == 2
        assert (tmp_path / "launch.log").read_text().count("started ") == 2
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in pids:
            if _alive(pid) and _ours(pid):
                os.kill(pid, signal.SIGKILL)


def test_foxglove_serves_the_graphs_grid_live(supervise: Callable[..., Running]) -> None:
    """``--foxglove``: a WebSocket client of the Foxglove protocol sees the graph's topics and
    receives the hazard map's grid as the CDR the node published."""
    import asyncio
    import json
    import socket
    import struct

    import websockets

    from vad_inspection.msgs import deserialize
    from vad_inspection.transport.foxglove import SUBPROTOCOL

    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = supervise(_uav(), foxglove_port=port)
    run.wait(lambda: "Foxglove: open ws://" in run.output, "the live view started")
    run.wait(lambda: run.row("hazard_map").state == "active", "the hazard map active")

    async def grid() -> tuple[dict, bytes]:
        uri = f"ws://127.0.0.1:{port}"
        async with websockets.connect(uri, subprotocols=[SUBPROTOCOL]) as ws:
            channels: dict[str, dict] = {}
            while "/hazard_map/grid" not in channels:
                frame = await asyncio.wait_for(ws.recv(), 10)
                if isinstance(frame, str) and json.loads(frame)["op"] == "advertise":
                    channels |= {c["topic"]: c for c in json.loads(frame)["channels"]}
            sub = {"op": "subscribe", "subscriptions": [
                {"id": 7, "channelId": channels["/hazard_map/grid"]["id"]}]}  # fmt: skip
            await ws.send(json.dumps(sub))
            while True:
                frame = await asyncio.wait_for(ws.recv(), 10)
                if isinstance(frame, bytes) and frame[0] == 0x01:
                    (sub_id,) = struct.unpack_from("<I", frame, 1)
                    assert sub_id == 7
                    return channels, frame[1 + 4 + 8 :]

    channels, payload = asyncio.run(grid())
    assert {"/camera/image_raw", "/detector/overlay", "/hazard_map/landing_markers"} <= set(
        channels
    )
    assert channels["/hazard_map/grid"]["schemaName"] == "nav_msgs/msg/OccupancyGrid"
    msg = deserialize(payload, "nav_msgs/msg/OccupancyGrid")
    assert msg.header.frame_id == "map" and msg.info.width > 0
    assert run.finish() == 0
