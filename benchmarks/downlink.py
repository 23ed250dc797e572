"""Downlink prioritisation on real scenario streams: what reaches the ground within a budget.

    python benchmarks/downlink.py                   # mars_traverse (two lengths), lunar_orbit,
                                                    # crack_wall; budgets 1-20 %: ~2-4 min
    python benchmarks/downlink.py --scenarios mars_traverse

Per scenario: a PaDiM detector (MobileNetV2, seeded random weights, 128 px) fitted on normal
frames that are not the test stream (each scenario's ``fit`` below says which), calibrated on a
fifth of them held out (``pipeline.hold_out``); every frame of the stream scored through
``Detector.__call__`` (the node's per-frame path); each frame made a candidate with its real
encoded sizes (``forms_for``: raw, JPEG 90 / 50, PNG crops of the detector's regions, metadata),
its signature, and, where the platform knows its pose and depth (orbit, wall), the tag the
detector node's tracker (``TagBook``) would give its strongest region. Then every planner at
budgets of 1-20 % of the stream's raw bytes, one window at the end of the pass (and the planner
also over four windows spread over the pass). Writes ``benchmarks/results/downlink.{md,json,png}``.

Nothing is tuned on the test streams: the planner's constants are its defaults, fixed before this
benchmark was run; the trackers' radii come from the scenes' scale (half the smallest counted
crater; the node's default 0.15 m on the wall).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vad_inspection.data import open_dataset  # noqa: E402
from vad_inspection.downlink.evaluate import (  # noqa: E402
    BudgetResult,
    StreamItem,
    budget_reaching,
    curve,
    evaluate,
    plot_curves,
    saturation,
    stream_bytes,
)
from vad_inspection.downlink.planner import (  # noqa: E402
    Candidate,
    DownlinkPlanner,
    FifoPlanner,
    Planner,
    RandomPlanner,
    ScoreOnlyPlanner,
    forms_for,
    signature,
)
from vad_inspection.eval.metrics import auroc  # noqa: E402
from vad_inspection.geometry import GeometryError  # noqa: E402
from vad_inspection.geometry.locate import point_from_depth  # noqa: E402
from vad_inspection.pipeline import fit_images, hold_out  # noqa: E402
from vad_inspection.scenarios import Scenario, View, catalog  # noqa: E402
from vad_inspection.vad.calibration import DEFAULT_K, from_normal_scores  # noqa: E402
from vad_inspection.vad.detector import Detector, FrameResult, detector_for_model  # noqa: E402
from vad_inspection.vad.registry import CommonOptions  # noqa: E402
from vad_inspection.vad.tags import TagBook  # noqa: E402

BUDGETS = tuple(round(0.01 * k, 2) for k in range(1, 21))
TABLE_BUDGETS = (0.01, 0.02, 0.05, 0.1, 0.2)
MAX_FIT = 200  # frames to fit on (plus the held-out fifth)
MAX_REGIONS = 3  # crops per frame: the strongest regions
MIN_REGION_PX = 32  # smaller regions are speckle, not worth a crop
#: the detector's operating point for a prioritiser: flag about 5 % of normal frames (the share of
#: anomalies the issue expects; a false alarm costs bytes, not a missed defect). Chosen before the
#: run, from the issue, not from the streams.
FLAG_QUANTILE = 0.95
#: a defects curve short of every defect is saturated only when flat over this much budget: over
#: 1-20 % a curve stuck below 100 % may still climb later (FIFO's does, a defect at a time), so
#: only curves reaching every defect are called saturated
PLATEAU = 1.0
RANDOM_SEEDS = 20
PLANNERS: dict[str, Callable[[], DownlinkPlanner]] = {
    "fifo": FifoPlanner,
    "score_only": ScoreOnlyPlanner,
    "score_only+forms": lambda: ScoreOnlyPlanner(form_rule=True),
    "planner": Planner,
}


@dataclass
class Stream:
    """One scored scenario stream with its description."""

    name: str
    items: list[StreamItem]
    info: dict[str, Any] = field(default_factory=dict)


def _spread(items: Sequence[Any], count: int) -> list[Any]:
    """At most ``count`` of ``items`` spread evenly over them (a pass, not its start)."""
    if len(items) <= count:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def _fit(frames: Sequence[np.ndarray], seed: int = 0) -> tuple[Detector, dict[str, Any]]:
    """PaDiM (MobileNetV2, seeded random weights, 128 px) on ``frames``, calibrated on a fifth:
    the threshold at :data:`FLAG_QUANTILE` of the held-out scores; the repository's default
    threshold (mean + 3 std) is kept too, to say how many frames it would flag."""
    train, held = hold_out(list(frames), seed)
    common = CommonOptions(backbone="mobilenet_v2", seed=seed, size=128)
    start = time.perf_counter()
    model, report = fit_images("padim", train, held, common, threshold_quantile=FLAG_QUANTILE)
    detector = detector_for_model(model, report.calibration, min_region_px=MIN_REGION_PX)
    default = from_normal_scores(model.predict(list(held)).scores, DEFAULT_K)
    return detector, {"fit_frames": len(train), "calibration_frames": len(held),
                      "default_threshold": default.threshold,
                      "fit_seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def _msl_ground_train(data_root: Path, size: int) -> list[np.ndarray]:
    """The train split's ground frames (other sols than the traverse's), as the stream sizes
    them."""
    dataset = open_dataset(f"msl_surface:{data_root}/msl_surface")
    ground = [s for s in dataset.samples if s.split == "train" and s.category == "ground"]
    out = []
    for sample in _spread(ground, MAX_FIT + MAX_FIT // 4):
        image = sample.image()
        image = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        out.append(cv2.resize(image[:, :, :3], (size, size), interpolation=cv2.INTER_AREA))
    return out


def _msl_target(view: View) -> tuple[str, ...]:
    """One target per imaging sequence: sol, instrument and sequence number of the product id
    (``0270MH000253...``); frames of one sequence show one drill hole or DRT spot."""
    if not view.truth.anomalous:
        return ()
    name = Path(view.source).name
    return (name[:12] if name[:4].isdigit() else name,)


def _clean_frames(scan: Scenario) -> list[np.ndarray]:
    """Frames of a pass holding no defect pixel at all."""
    return [v.image for v in scan.views() if not v.truth.anomalous]


def _tagger(radius_m: float) -> Callable[[Scenario, View, FrameResult], str]:
    """The detector node's tracker on the strongest region: its position from the frame's depth
    and pose (what the robot knows), named by a :class:`TagBook` kept over the stream."""
    book = TagBook(radius_m=radius_m)

    def tag(scan: Scenario, view: View, result: FrameResult) -> str:
        if not result.regions or view.depth_m is None:
            return ""
        region = result.regions[0]
        x, y, w, h = region.bbox
        mask = np.zeros(view.image.shape[:2], bool)
        mask[y : y + h, x : x + w] = region.mask
        try:
            found = point_from_depth(scan.camera, view.depth_m, mask)
        except GeometryError:
            return ""
        world = view.world_from_base @ scan.base_from_optical() @ np.append(found.point, 1.0)
        position = (float(world[0]), float(world[1]), float(world[2]))
        return book.observe(view.stamp_ns, region.peak, region.bbox, position, "map").tag

    return tag


def _score(
    name: str,
    scan: Scenario,
    detector: Detector,
    truth: Callable[[View], tuple[bool, tuple[str, ...]]],
    tagger: Callable[[Scenario, View, FrameResult], str] | None,
    default_threshold: float,
) -> Stream:
    items: list[StreamItem] = []
    start = time.perf_counter()
    pixels = 0
    shape: list[int] = []
    for seq, view in enumerate(scan.views()):
        result = detector(view.image, view.encoding)
        boxes = [r.bbox for r in result.regions[:MAX_REGIONS]]
        candidate = Candidate(
            seq=seq, stamp_ns=view.stamp_ns, score=result.score,
            tag=tagger(scan, view, result) if tagger else "", signature=signature(view.image),
            priority="normal", forms=forms_for(view.image, boxes, raw_bytes=view.image.nbytes),
            flagged=bool(result.anomalous),
        )  # fmt: skip
        anomalous, defects = truth(view)
        pixels += bool(view.truth.anomalous)
        shape = list(view.image.shape)
        items.append(StreamItem(candidate, anomalous, defects))
    seconds = time.perf_counter() - start
    labels = np.array([i.anomalous_truth for i in items])
    scores = np.array([i.candidate.score for i in items])
    flagged = np.array([i.candidate.flagged for i in items])
    forms = [i.candidate.forms for i in items]
    info = {
        "frames": len(items), "anomalous": int(labels.sum()),
        "frames_with_defect_pixels": pixels,
        "distinct_defects": len({d for i in items for d in i.defect_ids}),
        "stream_bytes": stream_bytes(items), "frame_shape": shape,
        "all_jpeg50": sum(f["jpeg50"] for f in forms) / stream_bytes(items),
        "flagged": int(flagged.sum()), "flagged_anomalous": int((flagged & labels).sum()),
        "flagged_at_default": int((scores >= default_threshold).sum()),
        "image_auroc": float(auroc(labels, scores)) if 0 < labels.sum() < len(labels) else None,
        "tagged_frames": sum(bool(i.candidate.tag) for i in items),
        "tags": len({i.candidate.tag for i in items if i.candidate.tag}),
        "mean_bytes": {k: round(float(np.mean([f[k] for f in forms if k in f])))
                       for k in ("full", "jpeg90", "jpeg50", "crop", "meta")
                       if any(k in f for f in forms)},
        "score_seconds": round(seconds, 1),
    }  # fmt: skip
    return Stream(name, items, info)


def mars(data_root: Path, variants: Sequence[tuple[str, dict[str, Any]]]) -> list[Stream]:
    """Curiosity's held-out sols; PaDiM fitted on train-split ground frames (other sols)."""
    detector, fit = _fit(_msl_ground_train(data_root, 256))
    fit["fit_on"] = "msl_surface train split, ground class (sols not in the traverse), 256 px"
    streams = []
    for label, overrides in variants:
        scan = catalog.load("mars_traverse", data_root, **overrides)
        stream = _score(label, scan, detector, lambda v: (v.truth.anomalous, _msl_target(v)),
                        None, fit["default_threshold"])  # fmt: skip
        stream.info |= {"overrides": overrides, **fit, "tags_from": "none (no 3-D position)",
                        "classes": scan.summary()["classes"]}  # fmt: skip
        streams.append(stream)
    return streams


def _shows_defect(view: View) -> tuple[bool, tuple[str, ...]]:
    """Anomalous: a counted defect's centre is in view; the defects: those."""
    ids = tuple(d.id for d in view.truth.defects)
    return bool(ids), ids


def lunar(data_root: Path, min_crater_m: float) -> Stream:
    """The orbit pass over the test strips; PaDiM fitted on a clean pass over the train strips."""
    clean = catalog.load("lunar_orbit", data_root, split="train", min_crater_m=min_crater_m)
    detector, fit = _fit(_spread(_clean_frames(clean), MAX_FIT + MAX_FIT // 4))
    fit["fit_on"] = (f"a clean pass: lunar_orbit over the train-split strips (other sites), the "
                     f"frames with no pixel of a crater >= {min_crater_m:g} m")  # fmt: skip
    scan = catalog.load("lunar_orbit", data_root, min_crater_m=min_crater_m)
    stream = _score(
        "lunar_orbit",
        scan,
        detector,
        _shows_defect,
        _tagger(min_crater_m / 2),
        fit["default_threshold"],
    )
    stream.info |= {
        "overrides": {"min_crater_m": min_crater_m},
        **fit,
        "tags_from": f"TagBook over depth + pose, radius {min_crater_m / 2:g} m",
    }
    return stream  # fmt: skip


def wall(data_root: Path) -> Stream:
    """The UAV along the cracked wall; PaDiM fitted on a clean pass along another wall laid with
    CrackForest's uncracked tiles only (another seed)."""
    clean = catalog.load("crack_wall", data_root, anomalous_fraction=0.0, seed=1)
    scan = catalog.load("crack_wall", data_root)
    shared = {n for row in clean.mosaic.cells for n in row} & {
        n for row in scan.mosaic.cells for n in row
    }
    detector, fit = _fit(_spread(_clean_frames(clean), MAX_FIT + MAX_FIT // 4))
    fit["fit_on"] = (
        f"a clean pass along a wall of uncracked CrackForest tiles (seed 1); "
        f"{len(shared)} of its 48 tiles also lie, uncracked, on the test wall"
    )
    stream = _score(
        "crack_wall", scan, detector, _shows_defect, _tagger(0.15), fit["default_threshold"]
    )
    stream.info |= {**fit, "tags_from": "TagBook over depth + pose, radius 0.15 m"}
    return stream  # fmt: skip


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _random_mean(items: Sequence[StreamItem], budgets: Sequence[float]) -> list[BudgetResult]:
    """``random`` over :data:`RANDOM_SEEDS` seeds, each figure the mean over them (one seed's
    luck would decide a stream with a handful of defects)."""
    runs = [evaluate(items, {"random": lambda s=seed: RandomPlanner(s)}, budgets)
            for seed in range(RANDOM_SEEDS)]  # fmt: skip
    out = []
    for k, first in enumerate(runs[0]):
        same = [run[k] for run in runs]
        out.append(replace(
            first, planner=f"random ({RANDOM_SEEDS} seeds, mean)",
            bytes_used=round(np.mean([r.bytes_used for r in same])),
            frames_sent=round(np.mean([r.frames_sent for r in same])),
            anomalous_delivered=_mean([r.anomalous_delivered for r in same]),
            defects_delivered=_mean([r.defects_delivered for r in same]),
            precision={key: _mean([r.precision[key] for r in same]) for key in first.precision},
            choices=(),
        ))  # fmt: skip
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _table(results: Sequence[BudgetResult], budgets: Sequence[float]) -> list[str]:
    lines = [
        "| planner | budget | defects delivered | anomalous frames delivered | p@10 | p@20 | "
        "p@R | frames sent (+ meta) | bytes used |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        if not any(abs(r.budget - b) < 1e-9 for b in budgets):
            continue
        p = r.precision
        lines.append(
            f"| {r.planner} | {100 * r.budget:.0f} % | {_pct(r.defects_delivered)} | "
            f"{_pct(r.anomalous_delivered)} | {_num(p['p@10'])} | {_num(p['p@20'])} | "
            f"{_num(p['p@R'])} | {r.frames_sent} (+{r.meta_sent}) | {r.bytes_used:,} |"
        )
    return lines


def _knees(results: Sequence[BudgetResult]) -> dict[str, dict[str, float | None]]:
    out = {}
    for name in dict.fromkeys(r.planner for r in results):
        knee = saturation(results, name, min_span=PLATEAU)
        figures = [d for _, d in curve(results, name)]
        out[name] = {
            "saturates_at": None if knee is None else knee[0],
            "top": max(figures) if figures else None,
            "reaches_90pct_at": budget_reaching(results, name, 0.9),
        }
    return out


def _describe(stream: Stream) -> list[str]:
    i = stream.info
    auc = "n/a" if i["image_auroc"] is None else f"{i['image_auroc']:.3f}"
    return [
        f"## {stream.name}\n",
        f"Stream: {i['frames']} frames {tuple(i['frame_shape'])}, {i['stream_bytes']:,} bytes raw; "
        f"{i['anomalous']} anomalous ({100 * i['anomalous'] / i['frames']:.1f} %), "
        f"{i['distinct_defects']} distinct defects; {i['frames_with_defect_pixels']} frames hold "
        f"some defect pixel. Settings: {i.get('overrides') or 'as in sim/'}.",
        f"Detector: PaDiM fitted on {i['fit_frames']} frames (+{i['calibration_frames']} held out "
        f"for calibration) of {i['fit_on']}; image AUROC on the stream {auc}; flagged "
        f"{i['flagged']} frames, {i['flagged_anomalous']} of them anomalous (at the "
        f"repository's default threshold, mean + 3 std: {i['flagged_at_default']} flagged).",
        f"Mean form sizes (bytes): {i['mean_bytes']}. Tags: {i['tags_from']} "
        f"({i['tagged_frames']} frames tagged, {i['tags']} tags).\n",
    ]


def report(streams: Sequence[Stream], results: dict[str, list[BudgetResult]],
           meta: dict[str, Any]) -> str:  # fmt: skip
    lines = [
        "# Downlink prioritisation benchmark\n",
        f"{meta['machine']}, Python {meta['python']}; whole run {meta['seconds']:.0f} s. "
        "`python benchmarks/downlink.py`.\n",
        "Budget: a share of the stream's raw bytes, one window at the end of the pass (`planner "
        "x4 windows`: four windows, one after each quarter of the pass, each a quarter of the "
        "budget). Defects delivered: distinct defects with at least one frame sent in a form "
        "other than metadata. p@n: anomalous frames among the first n sent (over those sent when "
        "fewer); R = the number of anomalous frames. Planners: `fifo` oldest first, full frames "
        "(a plain link); `random` full frames in random order (mean of 20 seeds); `score_only` "
        "highest raw "
        "score first, full frames; `score_only+forms` the same order with the planner's form "
        "rule; `planner` value per byte with novelty (tags, signatures) and the form rule.\n",
        "## At a budget of 5 %\n",
        "| scenario | planner | defects delivered | anomalous frames delivered | p@10 | p@R | "
        "saturates at | 90 % of defects at |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for stream in streams:
        knees = _knees(results[stream.name])
        for r in results[stream.name]:
            if abs(r.budget - 0.05) > 1e-9:
                continue
            k = knees[r.planner]
            sat = (f"not by 20 % (top {_pct(k['top'])})" if k["saturates_at"] is None
                   else f"{100 * k['saturates_at']:.0f} % ({_pct(k['top'])})")  # fmt: skip
            reach = "not by 20 %" if k["reaches_90pct_at"] is None else (
                f"{100 * k['reaches_90pct_at']:.0f} %")  # fmt: skip
            lines.append(
                f"| {stream.name} | {r.planner} | {_pct(r.defects_delivered)} | "
                f"{_pct(r.anomalous_delivered)} | {_num(r.precision['p@10'])} | "
                f"{_num(r.precision['p@R'])} | {sat} | {reach} |"
            )
    lines.extend((
        "\nSaturates at: the smallest budget (of 1-20 %, in steps of 1 %) from which the defects "
        "curve stays at its top (the top in brackets), given only for curves that reach every "
        "defect: one short of it may still climb beyond 20 % (`not by 20 %`, with its top so "
        "far). Curves: `downlink.png` (rings mark the saturation points).\n",
        "Sending every frame at JPEG 50 costs "
        + ", ".join(f"{100 * s.info['all_jpeg50']:.1f} % ({s.name})" for s in streams)
        + " of the raw stream: above that share any planner with the form rule (`planner`, "
        "`score_only+forms`) delivers every frame in some form, so the 5 % figures of those "
        "streams come from the forms, and what ranking and novelty add shows below it, in the "
        "1 % and 2 % rows of the tables (where the detector ranks poorly, see each stream's image "
        "AUROC, the score-driven planners need a budget that covers the stream in those forms)."
        "\n",
    ))  # fmt: skip
    for stream in streams:
        lines += _describe(stream)
        lines += _table(results[stream.name], TABLE_BUDGETS)
        lines.append("")
    lines += [
        "## Caveats\n",
        "- PaDiM on seeded random MobileNetV2 weights (no pretrained weights here): the detector "
        "is a floor, and the planner can only deliver what the detector ranks high; with a "
        "better detector every score-driven row improves.",
        "- Fitted on data that is not the test stream (see each scenario); calibrated on a "
        "held-out fifth of it. Nothing was tuned on the test streams: the planner's constants "
        "are its defaults (set before the run), the trackers' radii follow from the scenes' "
        "scale. The Mars stream's distinct defects are imaging sequences (sol, instrument, "
        "sequence number of the product id): the data names no target across frames.",
        "- Orbit and wall: a frame is anomalous when a counted defect's centre is in view (what "
        "a defect delivered requires); frames holding only an edge of a defect centred elsewhere "
        "are normal here, so the anomalous share differs from the share holding defect pixels "
        "(both given above). The lunar pass counts craters >= the set `min_crater_m`.",
        "- The detector's threshold is the 95th percentile of its held-out normal frames' scores "
        "(a prioritiser's operating point, chosen from the issue's 5 % before the run); each "
        "scenario says how many frames the repository's default (mean + 3 std) would flag. "
        "The planner's duplicate distance (0.1, cosine, 8x8 thumbnails) was checked, not "
        "tuned, on data outside the test streams: consecutive frames of a clean wall pass lie "
        "0.02-0.04 apart, frames of one Mars train-split drill sequence 0-0.02, different "
        "sequences mostly > 0.14 (5th percentile), half-overlapping orbit frames about 1.",
        "- Small counts: a handful of distinct defects per stream, so one defect moves the "
        "defects figure by 8-25 points; read the curves, not single cells.",
        "- Budgets are raw bytes: the JPEG and PNG sizes are OpenCV's encodings of the frames, "
        "metadata a fixed record (256 bytes + 16 per box).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared/data")
    parser.add_argument(
        "--scenarios",
        default="mars_traverse,lunar_orbit,crack_wall",
        help="comma-separated: mars_traverse, lunar_orbit, crack_wall",
    )
    parser.add_argument(
        "--min-crater-m",
        type=float,
        default=80.0,
        help="lunar_orbit: craters this wide are the defects",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args()  # fmt: skip
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    started = time.perf_counter()
    streams: list[Stream] = []
    if "mars_traverse" in wanted:
        streams += mars(args.data_root, [
            ("mars_traverse", {}),
            ("mars_traverse (200 frames)", {"frames": 200, "novelty_fraction": 0.05,
                                            "clutter_fraction": 0.55}),
        ])  # fmt: skip
    if "lunar_orbit" in wanted:
        streams.append(lunar(args.data_root, args.min_crater_m))
    if "crack_wall" in wanted:
        streams.append(wall(args.data_root))
    results: dict[str, list[BudgetResult]] = {}
    plan_start = time.perf_counter()
    for stream in streams:
        results[stream.name] = [
            *evaluate(stream.items, {"fifo": FifoPlanner}, BUDGETS),
            *_random_mean(stream.items, BUDGETS),
            *evaluate(stream.items, {k: v for k, v in PLANNERS.items() if k != "fifo"}, BUDGETS),
            *evaluate(stream.items, {"planner x4 windows": Planner}, BUDGETS, windows=4),
        ]
        print(f"{stream.name}: {stream.info['frames']} frames, planned", flush=True)
    plan_seconds = time.perf_counter() - plan_start
    meta = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "python": platform.python_version(),
        "seconds": time.perf_counter() - started,
        "planning_seconds": round(plan_seconds, 1),
        "budgets": list(BUDGETS),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    data = {
        **meta,
        "streams": {
            s.name: {
                "info": s.info,
                "saturation": _knees(results[s.name]),
                "results": [r.row() for r in results[s.name]],
            }
            for s in streams
        },
    }
    (args.out / "downlink.json").write_text(json.dumps(data, indent=1))
    plot_curves({s.name: results[s.name] for s in streams}, args.out / "downlink.png",
                min_span=PLATEAU)  # fmt: skip
    text = report(streams, results, meta)
    (args.out / "downlink.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
