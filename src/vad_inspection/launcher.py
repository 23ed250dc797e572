"""``vad-inspection launch``: the node graph of ``inspection.launch.py`` without ROS 2.

``ros2 launch vad_inspection inspection.launch.py platform:=uav`` needs ROS 2's launch system;
this starts the same :class:`~vad_inspection.nodes.graph.LaunchPlan` (same arguments, same
``config/graph.yaml``, same parameter files and remappings) as one process per node over
Cyclone DDS (``vad-inspection run <node> --transport dds``), so a robot or a laptop without ROS 2
runs the same graph, and ``ros2 lifecycle`` / ``ros2 topic`` on a ROS 2 host see the same nodes.

The :class:`Supervisor` does what launch does for ``Node(respawn=True)`` and what an operator
otherwise checks by hand:

- each node's output goes to ``<run folder>/logs/<node>.log`` (the terminal stays readable with
  four nodes logging at once; a crash's traceback is kept);
- a node that dies is reported with its exit code or signal and, when its spec says ``respawn``
  and it did not exit cleanly (a finished player exits 0), started again after a short delay, at
  most ``max_restarts`` times within ``restart_window_s`` (a node that cannot start must not spin
  for ever);
- a status table shows each node's lifecycle state (asked over ``~/get_state`` from a bus the
  supervisor owns, in a thread so a node that does not answer cannot stall the loop) and the rate
  of the topic its kind names in ``watch`` (counted from raw samples, nothing decoded);
- Ctrl-C stops everything: SIGINT to each node (they shut down cleanly on it), SIGTERM to the
  ones still running after a few seconds, SIGKILL after that.

The nodes run in their own sessions so a Ctrl-C in the terminal reaches the supervisor only and
each node gets exactly one SIGINT, from it (a node reads a second one as "interrupt now"). The
price: a supervisor killed with SIGKILL leaves its nodes running.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from .nodes.graph import GRAPH_FILE, PACKAGE, GraphError, LaunchPlan, NodeSpec, plan_launch

TRANSPORTS = ("dds",)
_GET_STATE = "lifecycle_msgs/srv/GetState"


def config_dir() -> Path:
    """Where ``graph.yaml`` and the platform files are: the source checkout's ``config/`` (as
    :func:`vad_inspection.transport.dds.loopback_config_path` looks first, so an edit there takes
    effect without reinstalling), else ``share/vad_inspection/config`` under ``sys.prefix`` (pip)
    or an ``AMENT_PREFIX_PATH`` entry (colcon)."""
    candidates = [Path(__file__).resolve().parents[2] / "config"]
    prefixes = [sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    candidates += [Path(p) / "share" / PACKAGE / "config" for p in prefixes if p]
    for folder in candidates:
        if (folder / GRAPH_FILE).is_file():
            return folder
    raise GraphError(f"{GRAPH_FILE} not found (looked in {', '.join(map(str, candidates))})")


def parse_arguments(pairs: Sequence[str]) -> dict[str, str]:
    """``NAME:=VALUE`` words as ros2 launch takes them (the last of a repeated name wins); the
    names are checked by :func:`~vad_inspection.nodes.graph.plan_launch`."""
    arguments: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition(":=")
        if not sep or not name.strip():
            raise GraphError(f"launch arguments are NAME:=VALUE (e.g. platform:=uav), got {pair!r}")
        arguments[name.strip()] = value
    return arguments


def value_text(value: Any) -> str:
    """``value`` as the YAML text the node runner's ``-p NAME:=TEXT`` reads back to the same
    value: a model path ``"123"`` or ``"true"`` must stay text, ``1e-05`` a float."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")].strip()
    elif text.endswith("..."):  # a scalar is dumped as "<text>\n...\n"
        text = text[: -len("...")].strip()
    return text


def node_command(spec: NodeSpec, transport: str = "dds", loopback: bool = False) -> list[str]:
    """The command line that runs ``spec`` as ``ros2 run`` would, on the ROS-free runner."""
    command = [sys.executable, "-m", "vad_inspection.cli", "run", spec.executable,
               "--transport", transport, "--name", spec.name]  # fmt: skip
    if spec.namespace:
        command += ["--namespace", spec.namespace]
    for path in spec.params_files:
        command += ["--params-file", path]
    for name, value in spec.parameters.items():
        command += ["-p", f"{name}:={value_text(value)}"]
    for source, target in spec.remappings:
        command += ["-r", f"{source}:={target}"]
    if loopback:
        command.append("--loopback")
    return command


def exit_text(returncode: int) -> str:
    """``exit code 2`` or ``exit by SIGKILL`` (Popen gives a signal as a negative code)."""
    if returncode < 0:
        try:
            return f"exit by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"exit by signal {-returncode}"
    return f"exit code {returncode}"


def default_run_folder() -> Path:
    """``out/launch/<date>_<time>``: beside the other commands' ``out/`` folders, one per run."""
    return Path("out") / "launch" / time.strftime("%Y%m%d_%H%M%S")


@dataclass
class LaunchOptions:
    """How the supervisor runs the graph; the defaults are what ``vad-inspection launch`` uses."""

    out: Path = field(default_factory=default_run_folder)
    transport: str = "dds"
    loopback: bool = False
    stream: TextIO | None = None  # status lines (None: sys.stdout at run time)
    quiet: bool = False  # events only, no periodic table
    duration_s: float | None = None  # stop by itself after this long
    poll_s: float = 0.5  # how often children are checked
    status_period_s: float = 2.0
    restart_delay_s: float = 1.0
    max_restarts: int = 5
    restart_window_s: float = 60.0
    state_period_s: float = 1.0
    state_timeout_s: float = 0.5  # a node that does not answer in time shows "?"
    rate_window_s: float = 5.0
    sigint_timeout_s: float = 5.0  # after SIGINT, before SIGTERM
    sigterm_timeout_s: float = 3.0  # after SIGTERM, before SIGKILL
    foxglove_port: int | None = None  # serve the graph's topics to Foxglove on this port
    foxglove_host: str = "127.0.0.1"  # 0.0.0.0 to watch from another machine


#: What Foxglove shows of each node kind (by executable): topics relative to the node, their
#: type, and whether they are latched. The camera image and tf come on top.
LIVE_TOPICS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "detector": (("overlay", "sensor_msgs/msg/Image", False),
                 ("markers", "visualization_msgs/msg/MarkerArray", False),
                 ("score", "vision_msgs/msg/Classification", False)),
    "hazard_map": (("grid", "nav_msgs/msg/OccupancyGrid", True),
                   ("landing_markers", "visualization_msgs/msg/MarkerArray", True),
                   ("landing_sites", "geometry_msgs/msg/PoseArray", True)),
    "recorder": (("status", "diagnostic_msgs/msg/DiagnosticArray", True),),
}  # fmt: skip


def live_topics(graph: Any) -> list[tuple[str, str, bool]]:
    """(topic, type, latched) the live view serves for ``graph``: the camera, tf, and each
    node's outputs of :data:`LIVE_TOPICS`."""
    topics = [(f"{graph.camera}/image_raw", "sensor_msgs/msg/Image", False),
              ("/tf", "tf2_msgs/msg/TFMessage", False),
              ("/tf_static", "tf2_msgs/msg/TFMessage", True)]  # fmt: skip
    for spec in graph.nodes:
        for name, typename, latched in LIVE_TOPICS.get(spec.executable, ()):
            topics.append((spec.resolve(f"~/{name}"), typename, latched))
    return topics


@dataclass(frozen=True)
class NodeStatus:
    """One row of the status table."""

    name: str
    pid: int | None  # None while not running
    state: str  # lifecycle label, "?", "running", "restarting", "exited (...)", "given up (...)"
    rate_hz: float | None  # None: the node has no watched topic, or is not running
    restarts: int
    running: bool


class _Child:
    """A node's process across its restarts, and what the monitor threads learnt about it."""

    def __init__(self, spec: NodeSpec, log: Path) -> None:
        self.spec = spec
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # of the last process, also after it exited
        self.generation = 0  # bumped at each start so a state answer of the old process is dropped
        self.restarts = 0
        self.restart_times: collections.deque[float] = collections.deque()
        self.restart_at: float | None = None
        self.last_exit: int | None = None
        self.given_up = False
        self.state = "?"
        self.client: Any = None
        self.arrivals: collections.deque[float] = collections.deque(maxlen=100_000)
        self.watch_since = time.monotonic()
        self.lock = threading.Lock()

    def on_message(self, _data: Any) -> None:
        with self.lock:
            self.arrivals.append(time.monotonic())

    def rate(self, now: float, window: float) -> float:
        """Messages per second over the last ``window`` s (from the spacing of the messages
        when there are two or more, so a 1 Hz topic reads 1.0 and not 0.8 or 1.2)."""
        with self.lock:
            while self.arrivals and self.arrivals[0] < now - window:
                self.arrivals.popleft()
            times = list(self.arrivals)
        if len(times) >= 2 and times[-1] > times[0]:
            return (len(times) - 1) / (times[-1] - times[0])
        span = min(window, now - self.watch_since)
        return len(times) / span if span > 0 else 0.0


class Supervisor:
    """Runs a :class:`LaunchPlan` as one process per node until stopped; see the module doc.

    ``run()`` blocks and returns the exit code: 0 when stopped (:meth:`stop`, SIGINT/SIGTERM, the
    duration) or when every node exited cleanly, 1 when the graph ended with a node that failed.
    :meth:`status` and :meth:`stop` may be called from other threads.
    """

    def __init__(self, plan: LaunchPlan, options: LaunchOptions | None = None) -> None:
        self.plan = plan
        self.options = options or LaunchOptions()
        if self.options.transport not in TRANSPORTS:
            raise GraphError(f"transport {self.options.transport!r}: use {', '.join(TRANSPORTS)}")
        from .cli import NODES  # the executables `vad-inspection run` knows

        unknown = sorted({s.executable for s in plan.graph.nodes} - set(NODES))
        if unknown:
            raise GraphError(f"no ROS-free runner for executable(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(NODES))}")  # fmt: skip
        self.out = Path(self.options.out)
        self.children = [
            _Child(spec, self.out / "logs" / (spec.fqn.strip("/").replace("/", ".") + ".log"))
            for spec in plan.graph.nodes
        ]
        self._stop = threading.Event()  # asked to stop
        self._closing = threading.Event()  # the monitor threads end
        self._signals = 0
        self._lines_lock = threading.Lock()
        self._stream: TextIO = sys.stdout
        self._launch_log: TextIO | None = None
        self._bus: Any = None
        self._bridge: Any = None  # the Foxglove live view, when asked for
        self._threads: list[threading.Thread] = []
        self._started = time.monotonic()

    # -- public ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask :meth:`run` to stop every node and return (from any thread)."""
        self._stop.set()

    def status(self) -> list[NodeStatus]:
        """Each node's row of the status table, now."""
        now = time.monotonic()
        rows = []
        for child in self.children:
            process = child.process
            running = process is not None and process.returncode is None
            if running:
                state = child.state if child.spec.lifecycle else "running"
            elif child.restart_at is not None:
                state = "restarting"
            elif child.given_up and child.last_exit is not None:
                state = f"given up ({exit_text(child.last_exit)})"
            elif child.last_exit is not None:
                state = f"exited ({exit_text(child.last_exit)})"
            else:
                state = "not started"
            watched = child.spec.watch is not None and running
            rate = child.rate(now, self.options.rate_window_s) if watched else None
            rows.append(NodeStatus(child.spec.name, child.pid if running else None, state, rate,
                                   child.restarts, running))  # fmt: skip
        return rows

    def run(self) -> int:
        """Start the graph, watch it, stop it; the exit code (see the class doc)."""
        options = self.options
        self._stream = options.stream or sys.stdout
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        self._launch_log = open(self.out / "launch.log", "a", encoding="utf-8")  # noqa: SIM115
        restore = self._install_signal_handlers()
        code = 0
        try:
            graph = self.plan.graph
            self._say(f"platform {graph.platform}: {', '.join(s.fqn for s in graph.nodes)}"
                      + (f"; playing {self.plan.bag}" if self.plan.bag else "")
                      + f"; use_sim_time {str(self.plan.use_sim_time).lower()}")  # fmt: skip
            self._say(f"node logs in {self.out / 'logs'}")
            self._open_bus()
            self._started = time.monotonic()
            for child in self.children:
                self._start(child)
                self._say(f"started {child.spec.name}, pid {child.pid}")
            self._start_threads()
            code = self._loop()
        finally:
            try:
                self._stop_children()
                self._close_bus()
                if not options.quiet:
                    self._print_table()
            finally:
                restore()
                if self._launch_log is not None:
                    self._launch_log.close()
                    self._launch_log = None
        return code

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self) -> int:
        options = self.options
        next_table = time.monotonic() + options.status_period_s
        while True:
            now = time.monotonic()
            if self._stop.is_set():
                self._say("stop requested")
                return 0
            if options.duration_s is not None and now - self._started >= options.duration_s:
                self._say(f"ran {options.duration_s:g} s: stopping")
                return 0
            self._check_children(now)
            if all(c.process is None and c.restart_at is None for c in self.children):
                failed = [c.spec.name for c in self.children if c.given_up or c.last_exit != 0]
                self._say("every node has exited" + (f"; failed: {', '.join(failed)}"
                                                     if failed else ""))  # fmt: skip
                return 1 if failed else 0
            if not options.quiet and now >= next_table:
                self._print_table()
                next_table = now + options.status_period_s
            self._stop.wait(options.poll_s)

    def _check_children(self, now: float) -> None:
        """Report the children that exited; restart the ones due (respawn, not a clean exit)."""
        options = self.options
        for child in self.children:
            name = child.spec.name
            process = child.process
            if process is not None and (code := process.poll()) is not None:
                child.process, child.last_exit = None, code
                said = f"{name} (pid {child.pid}) died: {exit_text(code)}"
                if code == 0:
                    self._say(f"{name} (pid {child.pid}) finished: {exit_text(code)}")
                elif not child.spec.respawn:
                    self._say(f"{said}; not restarted (respawn false), see {child.log}")
                elif self._restarts_within_window(child, now) >= options.max_restarts:
                    child.given_up = True
                    self._say(
                        f"{said}; not restarted again: {options.max_restarts} restarts "
                        f"within {options.restart_window_s:g} s, see {child.log}"
                    )
                else:
                    child.restart_at = now + options.restart_delay_s
                    self._say(f"{said}; restarting in {options.restart_delay_s:g} s")
            if child.process is None and child.restart_at is not None and now >= child.restart_at:
                child.restart_at = None
                child.restart_times.append(now)
                child.restarts += 1
                why = exit_text(child.last_exit) if child.last_exit is not None else "?"
                self._start(child)
                self._say(f"restarted {name} ({why}), restart {child.restarts}, pid {child.pid}")

    def _restarts_within_window(self, child: _Child, now: float) -> int:
        window = self.options.restart_window_s
        while child.restart_times and now - child.restart_times[0] > window:
            child.restart_times.popleft()
        return len(child.restart_times)

    def _start(self, child: _Child) -> None:
        """Start ``child``'s process, its output appended to its log file."""
        command = node_command(child.spec, self.options.transport, self.options.loopback)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # the nodes import this very package, also from a checkout that is not installed
        source = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (source, os.environ.get("PYTHONPATH", "")) if p
        )
        child.log.parent.mkdir(parents=True, exist_ok=True)
        with open(child.log, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- {stamp} start {child.generation + 1}: {' '.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)  # fmt: skip
        with child.lock:
            child.generation += 1
            child.state = "?"
        child.process, child.pid = process, process.pid  # last_exit: the previous run's

    # -- stopping ----------------------------------------------------------------------------
    def _stop_children(self) -> None:
        """SIGINT to every node, SIGTERM to the ones left after a while, then SIGKILL; report
        how each one exited. A second Ctrl-C skips to the next step."""
        for child in self.children:
            child.restart_at = None
        steps = [
            (signal.SIGINT, self.options.sigint_timeout_s),
            (signal.SIGTERM, self.options.sigterm_timeout_s),
            (signal.SIGKILL, 10.0),
        ]
        sent: dict[int, str] = {}
        signals_before = self._signals
        for number, (sig, timeout) in enumerate(steps):
            left = self._alive()
            if not left:
                break
            self._say(f"sending {sig.name} to {', '.join(c.spec.name for c in left)}")
            for child in left:
                assert child.process is not None
                try:
                    child.process.send_signal(sig)
                    sent[id(child)] = sig.name
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while self._alive() and time.monotonic() < deadline:
                if self._signals - signals_before > number and sig != signal.SIGKILL:
                    break  # another Ctrl-C: the next signal now
                time.sleep(0.05)
        for child in self.children:
            process = child.process
            if process is None:
                continue
            code = process.wait()
            child.process, child.last_exit = None, code
            after = sent.get(id(child))
            self._say(f"{child.spec.name} (pid {child.pid}) stopped: {exit_text(code)}"
                      + (f" after {after}" if after else ""))  # fmt: skip

    def _alive(self) -> list[_Child]:
        return [c for c in self.children if c.process is not None and c.process.poll() is None]

    def _install_signal_handlers(self) -> Callable[[], None]:
        """SIGINT/SIGTERM/SIGHUP stop the graph (main thread only; elsewhere the caller stops it
        with :meth:`stop`). Returns what puts the previous handlers back."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, _frame: Any) -> None:
            self._signals += 1
            self._stop.set()

        wanted = [signal.SIGINT, signal.SIGTERM]
        if hasattr(signal, "SIGHUP"):
            wanted.append(signal.SIGHUP)
        previous = {sig: signal.signal(sig, handler) for sig in wanted}

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    # -- watching over DDS -------------------------------------------------------------------
    def _open_bus(self) -> None:
        """The supervisor's own node: a raw subscription per watched topic, a ``~/get_state``
        client per lifecycle node."""
        from .transport import SENSOR_DATA, create_bus
        from .transport.dds import use_loopback_config

        if self.options.loopback:
            use_loopback_config()  # before the first participant; the nodes inherit it
        bus = create_bus(self.options.transport, f"vad_launch_{os.getpid()}",
                         parameter_services=False)  # fmt: skip
        self._bus = bus
        for child in self.children:
            if child.spec.watch:
                topic, typename = child.spec.watch
                # best effort and volatile match every publisher (reliable or not, latched or not)
                bus.create_subscription(topic, typename, child.on_message, SENSOR_DATA, raw=True)
                child.watch_since = time.monotonic()
            if child.spec.lifecycle:
                child.client = bus.create_client(child.spec.fqn + "/get_state", _GET_STATE)
        if self.options.foxglove_port is not None:
            from .transport import LATCHED
            from .transport.foxglove import FoxgloveBridge

            self._bridge = FoxgloveBridge(bus, host=self.options.foxglove_host,
                                          port=self.options.foxglove_port)  # fmt: skip
            for topic, typename, latched in live_topics(self.plan.graph):
                self._bridge.add_topic(topic, typename, LATCHED if latched else None)
            port = self._bridge.start()
            self._say(f"Foxglove: open ws://{self.options.foxglove_host}:{port} in the app "
                      f"({len(self._bridge.topics)} topics)")  # fmt: skip

    def _start_threads(self) -> None:
        bus = self._bus
        self._threads = [
            threading.Thread(target=bus.spin, name="launch-spin", daemon=True),
            threading.Thread(target=self._poll_states, name="launch-states", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _close_bus(self) -> None:
        self._closing.set()
        if self._bridge is not None:
            self._bridge.stop()
            self._bridge = None
        if self._bus is not None:
            self._bus.request_shutdown()
        for thread in self._threads:
            thread.join(10)
        if self._bus is not None:
            self._bus.shutdown()
            self._bus = None

    def _poll_states(self) -> None:
        """Ask each running lifecycle node for its state, about once per ``state_period_s``."""
        from .msgs.defaults import new_message

        request = new_message(_GET_STATE + "_Request", self._bus.distro)
        while not self._closing.wait(self.options.state_period_s):
            for child in self.children:
                if self._closing.is_set():
                    return
                if child.client is None or child.process is None:
                    continue
                generation = child.generation
                label = self._ask_state(child, request)
                with child.lock:
                    if child.generation == generation:
                        child.state = label

    def _ask_state(self, child: _Child, request: Any) -> str:
        from .nodes.base import State

        try:
            if not child.client.service_is_ready():
                return "?"
            state = child.client.call(request, self.options.state_timeout_s).current_state
        except Exception:  # no answer in time, or the bus is closing: unknown, not fatal
            return "?"
        try:
            return State(int(state.id)).label
        except ValueError:
            return str(state.label) or "?"

    # -- output ------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        self._write([f"[launch] {text}"])

    def _print_table(self) -> None:
        self._write(format_table(self.status(), time.monotonic() - self._started))

    def _write(self, lines: list[str]) -> None:
        with self._lines_lock:
            for line in lines:
                print(line, file=self._stream, flush=True)
                if self._launch_log is not None:
                    self._launch_log.write(line + "\n")
            if self._launch_log is not None:
                self._launch_log.flush()


def format_table(rows: Sequence[NodeStatus], elapsed_s: float) -> list[str]:
    """The status table: one line per node (name, pid, state, rate, restarts)."""
    width = max([4, *(len(r.name) for r in rows)])
    state_width = max([len("unconfigured"), *(len(r.state) for r in rows)])
    header = f"  {'node':<{width}}  {'pid':>7}  {'state':<{state_width}}  {'rate':>9}  restarts"
    title = f"--- {elapsed_s:.0f} s "
    lines = [title + "-" * max(3, len(header) - len(title)), header]
    for r in rows:
        pid = str(r.pid) if r.pid is not None else "-"
        rate = f"{r.rate_hz:5.1f} Hz" if r.rate_hz is not None else "-"
        lines.append(f"  {r.name:<{width}}  {pid:>7}  {r.state:<{state_width}}  {rate:>9}  "
                     f"{r.restarts:>8}")  # fmt: skip
    return lines


def launch(
    arguments: Sequence[str] | Mapping[str, str],
    options: LaunchOptions | None = None,
    *,
    config: str | Path | None = None,
    progress: bool = True,
) -> int:
    """``vad-inspection launch``: resolve the launch arguments (``NAME:=VALUE`` words or a map)
    against ``config`` (default :func:`config_dir`) and run the graph; the exit code. A bad
    argument raises :class:`GraphError` before anything starts."""
    given = dict(arguments) if isinstance(arguments, Mapping) else parse_arguments(arguments)
    folder = Path(config) if config is not None else config_dir()
    if given.get("scenario", "").strip() and progress:
        from .progress import progress_bar

        with progress_bar(desc=f"scenario {given['scenario']}", unit="frame") as bar:
            plan = plan_launch(given, folder, progress=bar.update)
    else:
        plan = plan_launch(given, folder)
    return Supervisor(plan, options).run()
