"""``vad-inspection``: the ROS-free command line.

Subcommands are added as the engine grows; each one is a thin adapter over a library function so
that the same work can be done from Python, from a node, or from here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vad_inspection import __version__
from vad_inspection.data import DatasetError, open_dataset
from vad_inspection.errors import VadError
from vad_inspection.eval.metrics import MetricError
from vad_inspection.eval.runner import EvalConfig
from vad_inspection.eval.settings import SplitError
from vad_inspection.eval.suite import SuiteEntry, run_suite
from vad_inspection.transport.bag import BagError
from vad_inspection.vad.artifact import ArtifactError
from vad_inspection.vad.backbones import BACKBONES, RANDOM, BackboneError
from vad_inspection.vad.calibration import DEFAULT_K, CalibrationError
from vad_inspection.vad.preprocess import InputError
from vad_inspection.vad.registry import (
    BASELINES,
    MODELS,
    TRAINING_FREE,
    CommonOptions,
    parse_options,
)


def _settings(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"settings must be like 1,2,3; got {text!r}") from None
    if not values or any(v not in (1, 2, 3) for v in values):
        raise argparse.ArgumentTypeError(f"settings are 1, 2 and 3; got {text!r}")
    return values


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="mobilenet_v2")
    parser.add_argument(
        "--weights",
        default=RANDOM,
        help="backbone weights: random (seeded), imagenet (torchvision cache) or a .pth file",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, splits, sampling")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _common(args: argparse.Namespace, size: int) -> CommonOptions:
    return CommonOptions(
        backbone=args.backbone, weights=args.weights, seed=args.seed, size=size,
        progress=not args.no_progress,
    )  # fmt: skip


def _method_options(pairs: Sequence[str] | None) -> dict[str, dict[str, object]]:
    """``METHOD.KEY=VALUE`` pairs (eval, demo) as typed options per method."""
    grouped: dict[str, list[str]] = {}
    for pair in pairs or ():
        method, dot, rest = pair.partition(".")
        if not dot or "=" not in rest:
            raise ValueError(f"--option takes METHOD.KEY=VALUE, e.g. vae.epochs=10; got {pair!r}")
        grouped.setdefault(method, []).append(rest)
    return {method: parse_options(method, values) for method, values in grouped.items()}


def _demo_options(pairs: Sequence[str] | None) -> dict[str, dict[str, object]]:
    """The demo's method options (the VAE's crack options) updated by the user's."""
    from vad_inspection.eval.job import DemoOptions

    merged = {k: dict(v) for k, v in DemoOptions(Path(), Path()).method_options.items()}
    for method, options in _method_options(pairs).items():
        merged.setdefault(method, {}).update(options)
    return merged


def _add_eval_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        choices=sorted(MODELS),
        help="model to evaluate (repeat for several; default: the baselines)",
    )
    parser.add_argument("--settings", type=_settings, default=(1, 2, 3), help="e.g. 1,2,3")
    parser.add_argument(
        "--threshold-k", type=float, default=DEFAULT_K, help="threshold mean + k*std of normals"
    )
    parser.add_argument("--max-train", type=int, default=None, help="cap on training images")
    parser.add_argument(
        "--option",
        action="append",
        metavar="METHOD.KEY=VALUE",
        help="a method's own option, e.g. vae.epochs=10 or patchcore.coreset_ratio=0.1 (repeat)",
    )
    _add_model_options(parser)


#: node name -> module whose ``main(argv)`` runs it (imported only when asked for)
NODES = {
    "detector": "vad_inspection.nodes.detector",
    "player": "vad_inspection.nodes.player",
    "recorder": "vad_inspection.nodes.recorder",
    "hazard_map": "vad_inspection.nodes.hazard",
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vad-inspection", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser(
        "eval",
        help="compare models on datasets under the three settings (no --data: the evaluation "
        "job on the real datasets beside us, `make eval`)",
    )
    ev.add_argument(
        "--data",
        action="append",
        metavar="SPEC",
        help="dataset spec kind:path[?key=value&...], e.g. crackforest:data/crackforest?tile=64",
    )
    ev.add_argument("--data-root", type=Path, default=Path("../shared/data"),
                    help="without --data: where the real datasets are")  # fmt: skip
    ev.add_argument("--size", type=int, default=256, help="input size the images are scored at")
    ev.add_argument(
        "--model-file",
        type=Path,
        action="append",
        help="score fitted model file(s) on the datasets instead of fitting (repeat for several):"
        " every image, at the model's size, with the file's own thresholds",
    )
    ev.add_argument("-o", "--out", type=Path, default=Path("out/eval"), help="output folder")
    _add_eval_options(ev)

    fit = sub.add_parser("fit", help="learn normal from a dataset's normal images; write a model")
    fit.add_argument("--method", choices=sorted(set(MODELS) - set(TRAINING_FREE)), required=True)
    source = fit.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="SPEC", help="dataset spec kind:path[?...]")
    source.add_argument(
        "--from-topic",
        metavar="TOPIC",
        help="learn from the next --frames frames of a live camera topic (sensor_msgs/Image)",
    )
    source.add_argument(
        "--from-bag", type=Path, metavar="BAG",
        help="learn from the camera frames of a rosbag2 bag (e.g. a clean pass of a scenario)",
    )  # fmt: skip
    fit.add_argument("--frames", type=int, default=200,
                     help="--from-topic / --from-bag: how many")  # fmt: skip
    fit.add_argument("--compressed", action="store_true",
                     help="--from-topic: the topic is sensor_msgs/CompressedImage")  # fmt: skip
    fit.add_argument("--transport", choices=("dds", "ros"), default="dds",
                     help="with --from-topic: middleware (dds needs no ROS 2)")  # fmt: skip
    fit.add_argument("--timeout", type=float, default=120.0, help="with --from-topic: seconds")
    fit.add_argument("-o", "--out", type=Path, required=True, help="model file to write (.vad)")
    fit.add_argument("--size", type=int, default=256, help="input size (square)")
    fit.add_argument("--coreset-ratio", type=float, default=None, help="PatchCore memory bank")
    fit.add_argument("--val-fraction", type=float, default=0.1, help="normals held out")
    fit.add_argument(
        "--threshold-k", type=float, default=DEFAULT_K, help="threshold mean + k*std of normals"
    )
    fit.add_argument("--threshold-quantile", type=float, default=None, help="or a quantile")
    fit.add_argument("--max-train", type=int, default=None, help="cap on training images")
    fit.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="the method's own option, e.g. epochs=10 or map_source=attention for vae (repeat)",
    )
    _add_model_options(fit)

    pred = sub.add_parser("predict", help="score images with a model; write heat-map overlays")
    pred.add_argument("images", nargs="+", type=Path, help="image files or folders")
    pred.add_argument("--model", type=Path, required=True, help="model file from `fit`")
    pred.add_argument("-o", "--out", type=Path, default=Path("out/predict"), help="overlay dir")
    pred.add_argument("--no-progress", action="store_true", help="no progress bars")

    exp = sub.add_parser("export", help="export a backbone to ONNX (needs torch) for offline use")
    exp.add_argument("-o", "--out", type=Path, required=True, help="ONNX file to write")
    _add_model_options(exp)

    run = sub.add_parser(
        "run",
        help="run a node without ROS 2 (over dds by default), as `ros2 run vad_inspection` would",
        description="Node options: --transport ros|dds|local, --params-file F, -p NAME:=VALUE, "
        "-r FROM:=TO, --name, --namespace, --loopback; `--ros-args ...` is read too. "
        "See `vad-inspection run detector -h`.",
    )
    run.add_argument("node", choices=sorted(NODES), help="which node")
    run.add_argument("node_args", nargs=argparse.REMAINDER, help="the node's own options")

    from vad_inspection.nodes.graph import LAUNCH_ARGUMENTS

    launch = sub.add_parser(
        "launch",
        help="start a platform's node graph without ROS 2 (one process per node over Cyclone "
        "DDS), as `ros2 launch vad_inspection inspection.launch.py` would",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="launch arguments (default):\n" + "\n".join(
            f"  {name}:={default or repr('')}  {text}"
            for name, (default, text) in LAUNCH_ARGUMENTS.items()
        ),
    )  # fmt: skip
    launch.add_argument("arguments", nargs="*", metavar="NAME:=VALUE",
                        help="launch arguments, e.g. platform:=uav autostart:=true")  # fmt: skip
    launch.add_argument("--out", type=Path, default=None,
                        help="run folder: logs/<node>.log, launch.log "
                        "(default out/launch/<date_time>)")  # fmt: skip
    launch.add_argument("--foxglove", type=int, default=None, metavar="PORT",
                        help="serve the graph's images, overlays, markers and grid to the "
                        "Foxglove app over its WebSocket protocol on PORT (e.g. 8765)")  # fmt: skip
    launch.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop by itself after S seconds")  # fmt: skip
    launch.add_argument("--loopback", action="store_true",
                        help="the shipped one-host Cyclone configuration")  # fmt: skip
    launch.add_argument("--quiet", action="store_true", help="events only, no status table")

    sim = sub.add_parser(
        "sim", help="write a scenario (camera stream with ground truth) to a rosbag2 bag"
    )
    sim.add_argument(
        "scenario",
        help="a name from sim/ (crack_wall, crack_floor, tile_part, mars_traverse, "
        "mars_multispectral, lunar_orbit) or a YAML",
    )
    sim.add_argument("-o", "--out", type=Path, required=True, help="bag to write (a new folder)")
    sim.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    sim.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    sim.add_argument("--distro", choices=("humble", "jazzy"), default="jazzy")
    sim.add_argument("--compressed", choices=("jpeg", "png"), default=None,
                     help="images as CompressedImage on /camera/image_raw/compressed")  # fmt: skip
    sim.add_argument("--no-depth", action="store_true", help="leave out the depth image")
    sim.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a scenario setting, e.g. rate_hz=5 (repeat)")  # fmt: skip

    rp = sub.add_parser(
        "replay",
        help="replay a rosbag2 bag into the detector; report scores against its ground truth",
    )
    rp.add_argument("bag", type=Path, help="rosbag2 bag (folder, .mcap or .db3)")
    rp.add_argument("--model", type=Path, required=True, help="model file (.vad)")
    rp.add_argument("-o", "--out", type=Path, default=None,
                    help="report folder (default: <bag>.replay)")  # fmt: skip
    rp.add_argument("--transport", choices=("local", "dds"), default="local",
                    help="local: one process; dds: the detector in its own process")  # fmt: skip
    rp.add_argument("--rate", type=float, default=None,
                    help="play at this multiple of real time instead of closed loop")  # fmt: skip
    rp.add_argument("--threshold", type=float, default=0.5, help="normalised decision threshold")
    rp.add_argument("--match-radius", type=float, default=0.15,
                    help="a placed defect this close (m) to a true one finds it")  # fmt: skip
    rp.add_argument("--timeout", type=float, default=30.0, help="longest wait for a score (s)")
    rp.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                    help="a detector parameter, e.g. plane_frame:=map (repeat)")  # fmt: skip
    rp.add_argument("--no-progress", action="store_true")

    dl = sub.add_parser(
        "downlink-eval",
        help="what each downlink planner delivers of a labelled stream at budgets of its bytes",
        description="Scenario streams fit their own PaDiM (seeded random weights) on data that "
        "is not the stream; a bag is scored by --model and labelled by <bag>.truth.json.",
    )
    dl.add_argument("--scenario", action="append", default=[],
                    help="mars_traverse, lunar_orbit or crack_wall (repeat)")  # fmt: skip
    dl.add_argument("--bag", type=Path, action="append", default=[],
                    help="a bag with <bag>.truth.json (repeat); needs --model")  # fmt: skip
    dl.add_argument("--model", type=Path, help="model file (.vad) scoring the bags")
    dl.add_argument("--budgets", default="1,2,5,10,20",
                    help="budgets in %% of the stream's bytes, comma-separated")  # fmt: skip
    dl.add_argument("--windows", type=int, default=4,
                    help="also the planner over this many windows over the pass")  # fmt: skip
    dl.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    dl.add_argument("--min-crater-m", type=float, default=80.0,
                    help="lunar_orbit: craters this wide are the defects")  # fmt: skip
    dl.add_argument("-o", "--out", type=Path, default=Path("out/downlink-eval"))

    demo = sub.add_parser(
        "demo",
        help="the main job: scenarios through the detector, hazard map and recorder as "
        "separate processes over DDS, with one HTML report",
    )
    demo.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    demo.add_argument("--out", type=Path, default=Path("out/demo"))
    demo.add_argument("--scenarios", default="crack_wall,lunar_orbit",
                      help="comma-separated: crack_wall, lunar_orbit, mars_traverse")  # fmt: skip
    return parser


def _run(entries: list[SuiteEntry], args: argparse.Namespace, out: Path) -> int:
    config = EvalConfig(
        threshold_k=args.threshold_k,
        progress=not args.no_progress,
        model_options=_common(args, 256),
        method_options=_method_options(args.option),
    )
    result = run_suite(
        entries,
        args.model or list(BASELINES),
        out,
        settings=args.settings,
        seed=args.seed,
        config=config,
    )
    print(_console_table(result))
    print("wrote:", *(str(p) for p in result.outputs if p.parent == out), sep="\n  ")
    return 0


def _console_table(result) -> str:
    """The headline metrics only: the full table (CSV, Markdown) is too wide for a terminal."""
    from vad_inspection.eval.report import results_table

    table = results_table(result.rows, ("image_auroc", "pixel_auroc", "aupro", "latency_ms"))
    return table.to_text() + "\n(all metrics: results.md / results.csv)"


def _split_options(args: argparse.Namespace) -> dict[str, object]:
    return {} if args.max_train is None else {"max_train": args.max_train}


def _fit(args: argparse.Namespace) -> int:
    from vad_inspection import pipeline
    from vad_inspection.vad.registry import save_model

    options = parse_options(args.method, args.option or ())
    if args.coreset_ratio is not None:
        options["coreset_ratio"] = args.coreset_ratio
    if args.from_topic or args.from_bag:
        frames = _frames_from_topic(args) if args.from_topic else _frames_from_bag(args)
        train, held_out = pipeline.hold_out(frames)
        model, report = pipeline.fit_images(
            args.method, train, held_out, _common(args, args.size),
            threshold_k=args.threshold_k, threshold_quantile=args.threshold_quantile, **options,
        )  # fmt: skip
    else:
        model, report = pipeline.fit(
            args.method,
            open_dataset(args.data),
            _common(args, args.size),
            val_fraction=args.val_fraction,
            threshold_k=args.threshold_k,
            threshold_quantile=args.threshold_quantile,
            max_train=args.max_train,
            **options,
        )
    path = save_model(model, args.out, report.calibration)
    print(
        f"fitted {report.method} on {report.train_images} images in {report.fit_seconds:.1f} s; "
        f"calibrated on {report.val_images} held-out normal images"
    )
    if report.calibration:
        c = report.calibration
        print(f"threshold {c.threshold:.4g} ({c.rule}); wrote {path} ({path.stat().st_size} B)")
    else:
        print(f"no calibration (fewer than 2 held-out images); wrote {path}")
    return 0


def _frames_from_bag(args: argparse.Namespace) -> list:
    from vad_inspection.replay.run import bag_frames

    frames, streams = bag_frames(args.from_bag, args.frames)
    print(
        f"took {len(frames)} of the {streams.frames} frames on {streams.image} in {args.from_bag}"
    )
    return frames


def _frames_from_topic(args: argparse.Namespace) -> list:
    from vad_inspection.nodes.collect import collect_frames
    from vad_inspection.progress import progress_bar
    from vad_inspection.transport import create_bus

    with create_bus(args.transport, "vad_inspection_fit") as bus:
        print(f"waiting for {args.frames} frames on {bus.resolve(args.from_topic)} ...")
        with progress_bar(total=args.frames, desc="frames", unit="frame") as bar:
            got = collect_frames(bus, args.from_topic, args.frames, compressed=args.compressed,
                                 timeout_s=args.timeout, progress=bar)  # fmt: skip
    refused = sum(got.refused.values())
    shape = "x".join(str(v) for v in got.frames[0].shape)
    print(f"took {len(got.frames)} frames ({got.encoding} {shape}); refused {refused}"
          + "".join(f"\n  {n}x {cause}" for cause, n in got.refused.items()))  # fmt: skip
    return got.frames


def _sim(args: argparse.Namespace) -> int:
    import yaml

    from vad_inspection.progress import progress_bar
    from vad_inspection.scenarios import catalog
    from vad_inspection.scenarios.bagfile import write_bag

    overrides = {}
    for pair in args.set or ():
        key, _, text = pair.partition("=")
        overrides[key] = yaml.safe_load(text)
    scan = catalog.load(args.scenario, args.data_root, **overrides)
    with progress_bar(total=scan.frame_count, desc=f"sim {scan.config.name}", unit="frame") as bar:
        written = write_bag(scan, args.out, distro=args.distro, storage=args.storage,
                            compressed=args.compressed or "", depth=not args.no_depth,
                            progress=bar.update)  # fmt: skip
    print(f"wrote {written.bag} ({written.frames} frames, {written.anomalous} anomalous, "
          f"{written.defects} distinct defects with 3-D truth)")  # fmt: skip
    print(f"  truth {written.truth}")
    if written.masks:
        print(f"  masks {written.masks}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    import yaml

    from vad_inspection.progress import progress_bar
    from vad_inspection.replay.html import write_report
    from vad_inspection.replay.run import ReplayConfig, replay

    params = []
    for pair in args.param:
        key, sep, text = pair.partition(":=")
        if not sep:
            raise VadError(f"-p {pair!r}: expected NAME:=VALUE")
        params.append((key, yaml.safe_load(text)))
    config = ReplayConfig(
        bag=args.bag, model=args.model, transport=args.transport, rate=args.rate or 0.0,
        closed_loop=args.rate is None, timeout_s=args.timeout, threshold=args.threshold,
        match_radius_m=args.match_radius, detector_params=tuple(params),
    )  # fmt: skip
    with progress_bar(desc=f"replay {args.bag.name}", unit="frame",
                      enabled=not args.no_progress) as bar:  # fmt: skip

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report, worst, best = replay(config, progress)
    out = args.out or args.bag.with_name(args.bag.name + ".replay")
    json_path, html_path = write_report(out, report, worst, best)
    run, figures = report["run"], report["metrics"]
    latency = run["latency_ms"] or {}
    print(f"{report['verdict']}")
    print(f"  frames scored {run['frames_scored']}/{run['frames_sent']}, missed {run['missed']}, "
          f"latency p50 {latency.get('p50', float('nan')):.1f} ms, "
          f"{run['mean_rate_hz']:.1f} frames/s, CPU {run['cpu_cores']:.2f} cores")  # fmt: skip
    shown = {k: v for k, v in figures.items() if isinstance(v, float) and k != "threshold"}
    print("  " + ", ".join(f"{k} {v:.3f}" for k, v in shown.items()))
    if figures.get("defects_total"):
        print(f"  defects found {figures['defects_found']}/{figures['defects_total']}")
    print(f"  report {html_path}\n  json   {json_path}")
    return 0


def _downlink_eval(args: argparse.Namespace) -> int:
    import time

    from vad_inspection.downlink import report
    from vad_inspection.downlink.streams import bag_stream, scenario_streams

    if not args.scenario and not args.bag:
        raise VadError("give a --scenario or a --bag (with --model) to evaluate")
    if args.bag and args.model is None:
        raise VadError("--bag needs --model: the model file that scores its frames")
    try:
        budgets = sorted({float(b) / 100 for b in args.budgets.split(",") if b.strip()})
    except ValueError:
        raise VadError(f"--budgets {args.budgets!r}: expected percentages like 1,2,5") from None
    if not budgets or not all(0 < b <= 1 for b in budgets):
        raise VadError(f"--budgets {args.budgets!r}: each must lie in (0, 100] %")
    started = time.perf_counter()
    streams = []
    for name in args.scenario:
        print(f"{name}: fitting PaDiM on data that is not the stream, then scoring it", flush=True)
        streams += scenario_streams(name, args.data_root, args.min_crater_m)
    for bag in args.bag:
        print(f"{bag}: scoring with {args.model}", flush=True)
        streams.append(bag_stream(bag, args.model, lambda text: print(text, flush=True)))
    results = {}
    for stream in streams:
        results[stream.name] = report.compare(stream.items, budgets, windows=args.windows)
        print(f"{stream.name}: {stream.info['frames']} frames, every planner at "
              f"{len(budgets)} budgets", flush=True)  # fmt: skip
    seconds = time.perf_counter() - started
    command = "vad-inspection downlink-eval " + " ".join(
        [f"--scenario {n}" for n in args.scenario] + [f"--bag {b}" for b in args.bag]
    )
    preamble = [f"{report.machine()}; {seconds:.0f} s. `{command}`.\n"]
    caveats = ["- Scenario streams: PaDiM on seeded random MobileNetV2 weights (no pretrained "
               "weights), fitted on data that is not the stream: a floor for the detector, and "
               "the planner delivers what the detector ranks high."]  # fmt: skip
    text = report.markdown("Downlink evaluation", preamble, streams, results, caveats, budgets)
    meta = {"machine": report.machine(), "seconds": round(seconds, 1), "budgets": budgets,
            "command": command}  # fmt: skip
    paths = report.write_outputs(args.out, streams, results, text, meta)
    print("\n".join(report.headline(streams, results, 0.05 if 0.05 in budgets else budgets[0])))
    print("wrote:", *map(str, paths), sep="\n  ")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from vad_inspection import pipeline
    from vad_inspection.vad.detector import load_detector

    detector = load_detector(args.model)
    paths = pipeline.expand_paths(args.images)
    results = pipeline.predict_files(detector, paths, args.out, not args.no_progress)
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            print(f"{r.path}: ERROR {r.error}", file=sys.stderr)
        elif r.normalized is None:
            print(f"{r.path}: score {r.score:.4g} (uncalibrated)  {r.overlay}")
        else:
            verdict = "ANOMALOUS" if r.anomalous else "normal"
            print(f"{r.path}: score {r.score:.4g} norm {r.normalized:.3f} {verdict}  {r.overlay}")
    print(f"{len(results) - failed} scored, {failed} failed; overlays in {args.out}")
    return 1 if failed and failed == len(results) else 0


def _eval_files(args: argparse.Namespace) -> int:
    """``eval --model-file``: fitted models scored on other data, nothing refit."""
    from vad_inspection.eval.report import plot_curves, results_table
    from vad_inspection.eval.runner import evaluate_file
    from vad_inspection.eval.suite import TABLE_METRICS
    from vad_inspection.vad.detector import load_detector

    if args.model:
        raise ValueError(
            "--model (fit and evaluate) and --model-file (score a file) exclude each other"
        )
    config = EvalConfig(progress=not args.no_progress)
    detectors = [load_detector(path) for path in args.model_file]  # all files checked first
    args.out.mkdir(parents=True, exist_ok=True)
    rows, written = [], []
    for spec in args.data:
        dataset = open_dataset(spec)
        curves = []
        for detector in detectors:
            outcome = evaluate_file(detector, dataset, config)
            rows.append(outcome.row)
            curves.append(outcome.curve)
        written.append(plot_curves(curves, args.out / f"curves_{dataset.name}.png", dataset.name))
    metrics = tuple(m for m in TABLE_METRICS if any(m in r.metrics for r in rows))
    table = results_table(rows, metrics)
    table.to_csv(args.out / "results.csv")
    (args.out / "results.md").write_text(table.to_markdown() + "\n", encoding="utf-8")
    print(table.to_text())
    print("(setting 0: every image of the dataset, thresholds from the model file)")
    print("wrote:", *map(str, [*written, args.out / "results.csv", args.out / "results.md"]),
          sep="\n  ")  # fmt: skip
    return 0


def _export(args: argparse.Namespace) -> int:
    from vad_inspection.vad.backbones import export_onnx

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(export_onnx(args.backbone, args.weights, args.seed))
    print(f"wrote {args.out} ({args.out.stat().st_size} B): {args.backbone}, {args.weights}")
    return 0


def _eval_job(args: argparse.Namespace) -> int:
    """`vad-inspection eval` without --data: every model under the three settings on the real
    datasets beside us (what `make demo` ran before the nodes existed; now `make eval`)."""
    from vad_inspection.eval.job import DEMO_MODELS, DemoOptions, run_demo

    print(
        "vad-inspection eval: every model under the three evaluation settings on the real\n"
        f"datasets in {args.data_root}, then PatchCore fitted on normal magnetic tiles and its\n"
        "heat maps on defective ones. The VAE, trained from scratch, runs on the CrackForest\n"
        "tiles only."
    )
    options = DemoOptions(
        data_root=args.data_root,
        out=args.out,
        models=tuple(args.model or DEMO_MODELS),
        settings=args.settings,
        max_train=args.max_train or 200,
        seed=args.seed,
        threshold_k=args.threshold_k,
        common=_common(args, 256),
        method_options=_demo_options(args.option),
    )
    result = run_demo(options)
    print(_console_table(result))
    print("wrote:", *(str(p) for p in result.outputs if p.parent == args.out), sep="\n  ")
    return 0


def _launch(args: argparse.Namespace) -> int:
    from vad_inspection.launcher import LaunchOptions, default_run_folder, launch

    options = LaunchOptions(out=args.out or default_run_folder(), loopback=args.loopback,
                            duration_s=args.duration, quiet=args.quiet,
                            foxglove_port=args.foxglove)  # fmt: skip
    return launch(args.arguments, options, progress=not args.quiet)


def _run_node(args: argparse.Namespace) -> int:
    import importlib

    return importlib.import_module(NODES[args.node]).main(args.node_args)


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "run":
        return _run_node(args)
    try:
        if args.command == "launch":
            return _launch(args)
        if args.command == "fit":
            return _fit(args)
        if args.command == "predict":
            return _predict(args)
        if args.command == "export":
            return _export(args)
        if args.command == "sim":
            return _sim(args)
        if args.command == "replay":
            return _replay(args)
        if args.command == "downlink-eval":
            return _downlink_eval(args)
        if args.command == "eval" and not args.data and not args.model_file:
            return _eval_job(args)
        if args.command == "eval" and args.model_file:
            return _eval_files(args)
        if args.command == "eval":
            entries = [
                SuiteEntry(open_dataset(spec), args.size, _split_options(args))
                for spec in args.data
            ]
            return _run(entries, args, args.out)
        if args.command == "demo":
            from vad_inspection.demo.run import DemoConfig, run_demo

            scenarios = tuple(x.strip() for x in args.scenarios.split(",") if x.strip())
            return run_demo(DemoConfig(args.data_root, args.out, scenarios))
    except (
        DatasetError, SplitError, MetricError, ArtifactError, BackboneError, CalibrationError,
        InputError, VadError, BagError, KeyError, ValueError,
    ) as error:  # fmt: skip
        print(f"vad-inspection: {error}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
