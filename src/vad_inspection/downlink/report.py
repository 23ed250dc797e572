"""The downlink comparison on labelled streams: every planner at every budget, then a table, a
plot and JSON. Shared by ``vad-inspection downlink-eval`` and ``benchmarks/downlink.py``."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import (
    BudgetResult,
    StreamItem,
    budget_reaching,
    curve,
    evaluate,
    plot_curves,
    saturation,
)
from .planner import DownlinkPlanner, FifoPlanner, Planner, RandomPlanner, ScoreOnlyPlanner
from .streams import Stream

BUDGETS = tuple(round(0.01 * k, 2) for k in range(1, 21))
TABLE_BUDGETS = (0.01, 0.02, 0.05, 0.1, 0.2)
#: a defects curve short of every defect is saturated only when flat over this much budget: over
#: 1-20 % a curve stuck below 100 % may still climb later (FIFO's does, a defect at a time), so
#: only curves reaching every defect are called saturated
PLATEAU = 1.0
RANDOM_SEEDS = 20
PLANNERS: dict[str, Callable[[], DownlinkPlanner]] = {
    "score_only": ScoreOnlyPlanner,
    "score_only+forms": lambda: ScoreOnlyPlanner(form_rule=True),
    "planner": Planner,
}


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def random_mean(items: Sequence[StreamItem], budgets: Sequence[float]) -> list[BudgetResult]:
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


def compare(items: Sequence[StreamItem], budgets: Sequence[float] = BUDGETS,
            windows: int = 4) -> list[BudgetResult]:  # fmt: skip
    """FIFO, random (mean of seeds), score-only (with and without the form rule) and the planner
    at every budget, one window at the end; and the planner over ``windows`` windows."""
    out = [
        *evaluate(items, {"fifo": FifoPlanner}, budgets),
        *random_mean(items, budgets),
        *evaluate(items, PLANNERS, budgets),
    ]
    if windows > 1:
        out += evaluate(items, {f"planner x{windows} windows": Planner}, budgets, windows=windows)
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def table(results: Sequence[BudgetResult], budgets: Sequence[float]) -> list[str]:
    """Markdown rows: every planner at each of ``budgets``."""
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


def knees(results: Sequence[BudgetResult]) -> dict[str, dict[str, float | None]]:
    """Per planner: where its defects curve saturates, its top, the budget reaching 90 %."""
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


def describe(stream: Stream) -> list[str]:
    """A stream's paragraph: its size and truth, the detector and how it ranks the stream."""
    i = stream.info
    auc = "n/a" if i["image_auroc"] is None else f"{i['image_auroc']:.3f}"
    if "fit_frames" in i:
        detector = (f"PaDiM fitted on {i['fit_frames']} frames (+{i['calibration_frames']} held "
                    f"out for calibration) of {i['fit_on']}")  # fmt: skip
    else:
        detector = f"{i['fit_on']}"
    default = (
        "" if i.get("flagged_at_default") is None
        else f" (at the repository's default threshold, mean + 3 std: "
        f"{i['flagged_at_default']} flagged)"
    )  # fmt: skip
    return [
        f"## {stream.name}\n",
        f"Stream: {i['frames']} frames {tuple(i['frame_shape'])}, {i['stream_bytes']:,} bytes raw; "
        f"{i['anomalous']} anomalous ({100 * i['anomalous'] / i['frames']:.1f} %), "
        f"{i['distinct_defects']} distinct defects; {i['frames_with_defect_pixels']} frames hold "
        f"some defect pixel. Settings: {i.get('overrides') or 'as in sim/'}.",
        f"Detector: {detector}; image AUROC on the stream {auc}; flagged {i['flagged']} frames, "
        f"{i['flagged_anomalous']} of them anomalous{default}.",
        f"Mean form sizes (bytes): {i['mean_bytes']}. Tags: {i['tags_from']} "
        f"({i['tagged_frames']} frames tagged, {i['tags']} tags).\n",
    ]


def headline(streams: Sequence[Stream], results: Mapping[str, Sequence[BudgetResult]],
             budget: float = 0.05) -> list[str]:  # fmt: skip
    """The table at one budget, with each planner's saturation and 90 % point."""
    lines = [
        f"## At a budget of {100 * budget:g} %\n",
        "| stream | planner | defects delivered | anomalous frames delivered | p@10 | p@R | "
        "saturates at | 90 % of defects at |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for stream in streams:
        bends = knees(results[stream.name])
        for r in results[stream.name]:
            if abs(r.budget - budget) > 1e-9:
                continue
            k = bends[r.planner]
            last = f"{100 * max(x.budget for x in results[stream.name]):g} %"
            sat = (f"not by {last} (top {_pct(k['top'])})" if k["saturates_at"] is None
                   else f"{100 * k['saturates_at']:.0f} % ({_pct(k['top'])})")  # fmt: skip
            reach = f"not by {last}" if k["reaches_90pct_at"] is None else (
                f"{100 * k['reaches_90pct_at']:.0f} %")  # fmt: skip
            lines.append(
                f"| {stream.name} | {r.planner} | {_pct(r.defects_delivered)} | "
                f"{_pct(r.anomalous_delivered)} | {_num(r.precision['p@10'])} | "
                f"{_num(r.precision['p@R'])} | {sat} | {reach} |"
            )
    return lines


def machine() -> str:
    return f"{platform.node()} ({os.cpu_count()} cores), Python {platform.python_version()}"


def write_outputs(
    out: Path,
    streams: Sequence[Stream],
    results: Mapping[str, Sequence[BudgetResult]],
    text: str,
    meta: Mapping[str, Any],
    stem: str = "downlink",
) -> list[Path]:
    """``<stem>.md`` (``text``), ``<stem>.json`` (every figure) and ``<stem>.png`` (the curves)."""
    out.mkdir(parents=True, exist_ok=True)
    data = {
        **meta,
        "streams": {
            s.name: {
                "info": s.info,
                "saturation": knees(results[s.name]),
                "results": [r.row() for r in results[s.name]],
            }
            for s in streams
        },
    }
    paths = [out / f"{stem}.md", out / f"{stem}.json", out / f"{stem}.png"]
    paths[0].write_text(text)
    paths[1].write_text(json.dumps(data, indent=1))
    plot_curves({s.name: results[s.name] for s in streams}, paths[2], min_span=PLATEAU)
    return paths


LEGEND = (
    "Budget: a share of the stream's raw bytes, one window at the end of the pass (`planner "
    "xN windows`: N windows, one after each Nth of the pass, each an Nth of the budget). Defects "
    "delivered: distinct defects with at least one frame sent in a form other than metadata. "
    "p@n: anomalous frames among the first n sent (over those sent when fewer); R = the number "
    "of anomalous frames. Planners: `fifo` oldest first, full frames (a plain link); `random` "
    f"full frames in random order (mean of {RANDOM_SEEDS} seeds); `score_only` highest raw score "
    "first, full frames; `score_only+forms` the same order with the planner's form rule; "
    "`planner` value per byte with novelty (tags, signatures) and the form rule.\n"
)


def markdown(
    title: str,
    preamble: Sequence[str],
    streams: Sequence[Stream],
    results: Mapping[str, Sequence[BudgetResult]],
    caveats: Sequence[str] = (),
    budgets: Sequence[float] = TABLE_BUDGETS,
) -> str:
    """The whole report: title, preamble, legend, the 5 % table, each stream's description and
    table at ``budgets``, caveats."""
    lines = [f"# {title}\n", *preamble, LEGEND, *headline(streams, results)]
    jpeg50 = ", ".join(f"{100 * s.info['all_jpeg50']:.1f} % ({s.name})" for s in streams)
    lines.extend((
        "\nSaturates at: the smallest budget from which the defects curve stays at its top (the "
        "top in brackets), given only for curves that reach every defect: one short of it may "
        "still climb beyond the last budget (`not by`, with its top so far). Rings mark the "
        "saturation points on the curves.\n",
        f"Sending every frame at JPEG 50 costs {jpeg50} of the raw stream: above that share any "
        "planner with the form rule (`planner`, `score_only+forms`) delivers every frame in some "
        "form, and what ranking and novelty add shows below it, in the 1 % and 2 % rows (where "
        "the detector ranks poorly, see each stream's image AUROC, the score-driven planners "
        "need a budget that covers the stream in those forms).\n",
    ))  # fmt: skip
    for stream in streams:
        lines += describe(stream)
        lines += table(results[stream.name], budgets)
        lines.append("")
    if caveats:
        lines += ["## Caveats\n", *caveats]
    return "\n".join(lines) + "\n"
