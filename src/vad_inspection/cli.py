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
from vad_inspection.eval.runner import EvalConfig
from vad_inspection.eval.suite import SuiteEntry, run_suite
from vad_inspection.vad.registry import BASELINES, MODELS

# What `vad-inspection demo` evaluates: the real datasets shipped beside the project, each at the
# resolution its images are meant to be scored at.
DEMO_DATASETS: tuple[tuple[str, int], ...] = (
    ("magnetic_tile:{root}/magnetic_tile", 256),
    ("crackforest:{root}/crackforest?tile=64", 64),
)


def _settings(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"settings must be like 1,2,3; got {text!r}") from None
    if not values or any(v not in (1, 2, 3) for v in values):
        raise argparse.ArgumentTypeError(f"settings are 1, 2 and 3; got {text!r}")
    return values


def _add_eval_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        choices=sorted(MODELS),
        help="model to evaluate (repeat for several; default: the baselines)",
    )
    parser.add_argument("--settings", type=_settings, default=(1, 2, 3), help="e.g. 1,2,3")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split builder")
    parser.add_argument("--threshold-k", type=float, default=1.0, help="mean + k*std calibration")
    parser.add_argument("--max-train", type=int, default=None, help="cap on training images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vad-inspection", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("eval", help="compare models on datasets under the three settings")
    ev.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="SPEC",
        help="dataset spec kind:path[?key=value&...], e.g. crackforest:data/crackforest?tile=64",
    )
    ev.add_argument("--size", type=int, default=256, help="input size the images are scored at")
    ev.add_argument("-o", "--out", type=Path, default=Path("out/eval"), help="output folder")
    _add_eval_options(ev)

    demo = sub.add_parser("demo", help="the main job: evaluate on the real datasets beside us")
    demo.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    demo.add_argument("--out", type=Path, default=Path("out/demo"))
    _add_eval_options(demo)
    return parser


def _run(entries: list[SuiteEntry], args: argparse.Namespace, out: Path) -> int:
    config = EvalConfig(threshold_k=args.threshold_k, progress=not args.no_progress)
    result = run_suite(
        entries,
        args.model or list(BASELINES),
        out,
        settings=args.settings,
        seed=args.seed,
        config=config,
    )
    print(result.table.to_text())
    print("wrote:", *(str(p) for p in result.outputs if p.parent == out), sep="\n  ")
    return 0


def _split_options(args: argparse.Namespace) -> dict[str, object]:
    return {} if args.max_train is None else {"max_train": args.max_train}


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "eval":
            entries = [
                SuiteEntry(open_dataset(spec), args.size, _split_options(args))
                for spec in args.data
            ]
            return _run(entries, args, args.out)
        if args.command == "demo":
            print(
                "vad-inspection demo: the detector, recorder and replay nodes are not built yet;\n"
                "this runs the best end-to-end job that exists: the evaluation harness on the real\n"
                f"datasets in {args.data_root} (models: {', '.join(args.model or BASELINES)})."
            )
            entries = [
                SuiteEntry(open_dataset(spec.format(root=args.data_root)), size,
                           _split_options(args))
                for spec, size in DEMO_DATASETS
            ]
            return _run(entries, args, args.out)
    except DatasetError as error:
        print(f"vad-inspection: {error}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
