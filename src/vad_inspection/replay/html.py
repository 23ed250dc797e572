"""The replay report as one HTML page a person can open anywhere, mail or archive with the run.

Everything is inline (CSS, PNG images as data URIs, the timeline as SVG drawn here), so the page
needs no network, no server and no JavaScript, and it shows the same thing in a year. Every piece
of text that comes from the report is escaped: bag paths, topic names and categories come from
files somebody else wrote.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

MAX_POINTS = 5000  # circles in the timeline: beyond this the page gets heavy to open and scroll
THUMB_MAX_WIDTH = 512  # gallery PNGs wider than this are shrunk (twice the shown width, for HiDPI)
THUMB_WIDTH = 256  # shown width of a gallery image, px
WARN_BACKGROUND = "#ffe0e0"  # the failed verdict's background: the browser test looks for it

COLOURS = {"anomalous": "#d62728", "normal": "#4f81bd", "unknown": "#000000"}
MISSED_COLOUR = "#e07b00"

# the timeline's drawing area inside its viewBox (px)
SVG_WIDTH, SVG_HEIGHT = 1000, 300
LEFT, RIGHT, TOP, BOTTOM = 60, 96, 16, 46


@dataclass(frozen=True)
class GalleryItem:
    """One frame shown in a gallery, with what the reader needs to judge it at a glance."""

    stamp_ns: int
    score: float
    truth: bool | None
    category: str
    image: np.ndarray  # (H, W, 3) uint8 RGB overlay (frame with heat map)
    caption: str = ""


# ---------------------------------------------------------------------------------------------
# small text helpers


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float | int, digits: int = 3) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def _na(reason: str | None) -> str:
    """Unmeasurable, not zero: the reason is shown small and as a tooltip, so nobody reads a gap
    as a failure (or a success)."""
    if not reason:
        return '<span class="na">n/a</span>'
    return (
        f'<span class="na" title="{_e(reason)}">n/a</span> <small class="why">{_e(reason)}</small>'
    )


def _value(value: Any, reason: str | None = None, digits: int = 3, unit: str = "") -> str:
    if value is None:
        return _na(reason)
    if isinstance(value, (int, float)):
        return _e(_number(value, digits)) + (f" {_e(unit)}" if unit else "")
    return _e(value)


def _truth_name(truth: bool | None) -> str:
    return "unknown" if truth is None else ("anomalous" if truth else "normal")


# ---------------------------------------------------------------------------------------------
# the headline table

# metric key -> label, digits (the metrics the reader looks for first, in this order)
METRIC_ROWS: dict[str, tuple[str, int]] = {
    "image_auroc": ("image AUROC", 3),
    "image_auprc": ("image AUC-PR", 3),
    "pixel_auroc": ("pixel AUROC", 3),
    "aupro": ("AUPRO (FPR ≤ 0.3)", 3),
    "dice": ("Dice at the threshold", 3),
}
HANDLED_METRICS = {*METRIC_ROWS, "defects_found", "defects_total", "pose_error_m", "why"}


def _defects_cell(metrics: Mapping[str, Any], why: Mapping[str, str]) -> str:
    found, total = metrics.get("defects_found"), metrics.get("defects_total")
    if found is None or total is None:
        return _na(why.get("defects_found") or why.get("defects_total"))
    return f"{_number(int(found))} of {_number(int(total))}"


def _pose_cell(metrics: Mapping[str, Any], why: Mapping[str, str]) -> str:
    pose = metrics.get("pose_error_m")
    if not pose:
        return _na(why.get("pose_error_m") or why.get("defects_found"))
    return f"median {_number(pose['median'], 3)} m, p90 {_number(pose['p90'], 3)} m"


def _metric_rows(metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    why: Mapping[str, str] = metrics.get("why") or {}
    rows = [
        (label, _value(metrics.get(key), why.get(key), digits))
        for key, (label, digits) in METRIC_ROWS.items()
    ]
    rows.append(("defects found (3-D)", _defects_cell(metrics, why)))
    rows.append(("defect position error", _pose_cell(metrics, why)))
    # figures added to the report later still show, under their own names
    rows += [
        (key.replace("_", " "), _value(value, why.get(key)))
        for key, value in metrics.items()
        if key not in HANDLED_METRICS and (value is None or isinstance(value, (int, float, str)))
    ]
    return rows


def _latency_cell(latency: Mapping[str, float] | None) -> str:
    if not latency:
        return _na("no frame was scored")
    return " / ".join(_number(latency[k], 1) for k in ("p50", "p90", "max")) + " ms"


def _run_rows(run: Mapping[str, Any]) -> list[tuple[str, str]]:
    scored, sent = run.get("frames_scored"), run.get("frames_sent")
    return [
        ("frames scored / sent", f"{_value(scored)} / {_value(sent)}"),
        ("missed", _value(run.get("missed"))),
        ("latency p50 / p90 / max", _latency_cell(run.get("latency_ms"))),
        ("jitter", _value(run.get("jitter_ms"), "fewer than three scores", 1, "ms")),
        ("CPU", _value(run.get("cpu_cores"), None, 2, "cores")),
        ("mean rate", _value(run.get("mean_rate_hz"), None, 1, "frames/s")),
        ("wall time", _value(run.get("wall_s"), None, 1, "s")),
        ("transport, mode", f"{_e(run.get('transport', '?'))}, {_e(run.get('mode', '?'))}"),
    ]


def _table_rows(rows: Iterable[tuple[str, str]]) -> str:
    return "".join(f'<tr><th scope="row">{_e(k)}</th><td>{v}</td></tr>' for k, v in rows)


def _headline(report: Mapping[str, Any]) -> str:
    """Detection figures beside the run's, row by row: both fit on the first screen."""
    metrics = report.get("metrics") or {}
    threshold = metrics.get("threshold")
    detection = _metric_rows(metrics)
    run = _run_rows(report.get("run") or {})
    blank = ("", "")
    rows = "".join(
        f'<tr><th scope="row">{_e(a)}</th><td>{b}</td>'
        f'<th scope="row" class="second">{_e(c)}</th><td>{d}</td></tr>'
        for (a, b), (c, d) in itertools.zip_longest(detection, run, fillvalue=blank)
    )
    note = f" (threshold {_e(_number(threshold, 2))})" if threshold is not None else ""
    return (
        '<table id="metrics" class="figures"><thead><tr>'
        f'<th colspan="2">detection{note}</th><th colspan="2" class="second">run</th>'
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _caveats(caveats: Sequence[str]) -> str:
    if not caveats:
        return ""
    items = "".join(f"<li>{_e(c)}</li>" for c in caveats)
    return f'<div id="caveats" class="caveats"><strong>Caveats</strong><ul>{items}</ul></div>'


def _verdict(report: Mapping[str, Any]) -> str:
    ok = bool(report.get("verdict_ok", True))
    kind, word = ("ok", "Verdict") if ok else ("warn", "Warning")
    return (
        f'<div id="verdict" class="verdict {kind}" role="status">'
        f'<span class="label">{word}</span> {_e(report.get("verdict", ""))}</div>'
    )


# ---------------------------------------------------------------------------------------------
# the score timeline


@dataclass(frozen=True)
class _Point:
    t_s: float
    score: float
    truth: str  # anomalous | normal | unknown
    flagged: bool


def _points(frames: Sequence[Mapping[str, Any]], t0: int, threshold: float) -> list[_Point]:
    points = []
    for f in frames:
        score = f.get("score")
        if score is None or not math.isfinite(score):
            continue
        flagged = f.get("flagged")
        flagged = bool(score >= threshold) if flagged is None else bool(flagged)
        points.append(
            _Point((f["stamp_ns"] - t0) / 1e9, score, _truth_name(f.get("truth")), flagged)
        )
    return points


def _thin(points: Sequence[_Point], limit: int = MAX_POINTS) -> list[_Point]:
    """At most ``limit`` points (when possible): every truth-anomalous and every flagged frame
    stays, since those are what the reader checks; the rest are taken evenly in time, so the
    cloud keeps its shape."""
    if len(points) <= limit:
        return list(points)
    kept = [i for i, p in enumerate(points) if p.truth == "anomalous" or p.flagged]
    rest = [i for i, p in enumerate(points) if not (p.truth == "anomalous" or p.flagged)]
    room = max(0, limit - len(kept))
    if room < len(rest):
        picks = np.unique(np.linspace(0, len(rest) - 1, room).round().astype(int)) if room else []
        rest = [rest[i] for i in picks]
    return [points[i] for i in sorted([*kept, *rest])]


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten), the first <= ``lo``, the last >=
    ``hi``: a reader reads 0.2 and 5 s at a glance, not 0.1873 and 4.61 s."""
    span = hi - lo if hi > lo else 1.0
    raw = span / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))
    start = math.floor(lo / step + 1e-9) * step
    intervals = max(1, math.ceil((hi - start) / step - 1e-9))
    return [round(start + i * step, 12) for i in range(intervals + 1)]


def _tick_label(value: float, step: float) -> str:
    digits = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    return f"{value:.{digits}f}"


class _Scale:
    """Data to viewBox coordinates, for one axis."""

    def __init__(self, lo: float, hi: float, start: float, end: float) -> None:
        self.lo, self.hi, self.start, self.end = lo, hi, start, end

    def __call__(self, value: float) -> float:
        value = min(max(value, self.lo), self.hi)
        return self.start + (value - self.lo) / (self.hi - self.lo) * (self.end - self.start)


def _axes(x: _Scale, y: _Scale, xticks: list[float], yticks: list[float]) -> list[str]:
    bottom, top = y.start, y.end
    left, right = x.start, x.end
    out = [
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
        'fill="#fafafa" stroke="#999"/>'
    ]
    xstep = xticks[1] - xticks[0] if len(xticks) > 1 else 1.0
    ystep = yticks[1] - yticks[0] if len(yticks) > 1 else 1.0
    for value in xticks:
        px = x(value)
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{bottom}" y2="{bottom + 5}" '
                   'stroke="#666"/>')  # fmt: skip
        out.append(f'<text x="{px:.1f}" y="{bottom + 18}" text-anchor="middle">'
                   f"{_tick_label(value, xstep)}</text>")  # fmt: skip
    for value in yticks:
        py = y(value)
        out.append(f'<line x1="{left}" x2="{right}" y1="{py:.1f}" y2="{py:.1f}" stroke="#e6e6e6"/>')
        out.append(f'<text x="{left - 8}" y="{py + 4:.1f}" text-anchor="end">'
                   f"{_tick_label(value, ystep)}</text>")  # fmt: skip
    middle = (left + right) / 2
    out.append(f'<text x="{middle}" y="{SVG_HEIGHT - 6}" text-anchor="middle" class="axis-label">'
               "time since the first frame (s)</text>")  # fmt: skip
    out.append(f'<text transform="translate(16 {(top + bottom) / 2}) rotate(-90)" '
               'text-anchor="middle" class="axis-label">score (normalised)</text>')  # fmt: skip
    return out


def _circle(point: _Point, x: _Scale, y: _Scale, radius: float) -> str:
    css = "frame-point flagged" if point.flagged else "frame-point"
    tip = ""
    if point.flagged or point.truth == "anomalous":  # the points worth identifying, titled
        tip = f"<title>{point.t_s:.2f} s, score {point.score:.3f}, {point.truth}</title>"
    return (
        f'<circle class="{css}" data-truth="{point.truth}" cx="{x(point.t_s):.1f}" '
        f'cy="{y(point.score):.1f}" r="{radius}" fill="{COLOURS[point.truth]}">{tip}</circle>'
    )


def _missed_marks(times: Sequence[float], x: _Scale, axis_y: float) -> list[str]:
    return [
        f'<path class="missed-mark" d="M{x(t):.1f} {axis_y - 9}v12" stroke="{MISSED_COLOUR}" '
        'stroke-width="2.5"/>'
        for t in times
    ]


def _threshold_line(threshold: float, x: _Scale, y: _Scale) -> list[str]:
    py = y(threshold)
    return [
        f'<line id="threshold-line" x1="{x.start}" x2="{x.end}" y1="{py:.1f}" y2="{py:.1f}" '
        'stroke="#333" stroke-width="1.5" stroke-dasharray="7 5"/>',
        f'<text x="{x.end + 8}" y="{py - 3:.1f}" class="threshold-label">threshold</text>',
        f'<text x="{x.end + 8}" y="{py + 12:.1f}" class="threshold-label">'
        f"{_number(threshold, 2)}</text>",
    ]


def _y_range(points: Sequence[_Point], threshold: float) -> tuple[float, float]:
    """0..1 (the detector's normalised scale), widened only when a score falls outside it."""
    scores = [p.score for p in points]
    lo = min([0.0, threshold, *scores])
    hi = max([1.0, threshold, *scores])
    ticks = nice_ticks(lo, hi, 6)
    return ticks[0], ticks[-1]


def timeline_svg(frames: Sequence[Mapping[str, Any]], threshold: float) -> tuple[str, str]:
    """The score of every frame over time, and a note saying how many points are drawn.

    Normal points go first so the anomalous ones sit on top where both overlap."""
    if not frames:
        return '<svg id="timeline" class="timeline" viewBox="0 0 10 10"></svg>', "no frames"
    t0 = min(int(f["stamp_ns"]) for f in frames)
    points = _points(frames, t0, threshold)
    shown = _thin(points)
    missed = [(f["stamp_ns"] - t0) / 1e9 for f in frames if f.get("score") is None]
    duration = max((f["stamp_ns"] - t0) / 1e9 for f in frames)
    xticks = nice_ticks(0.0, max(duration, 1e-3), 8)
    ylo, yhi = _y_range(points, threshold)
    x = _Scale(0.0, xticks[-1], LEFT, SVG_WIDTH - RIGHT)
    y = _Scale(ylo, yhi, SVG_HEIGHT - BOTTOM, TOP)
    radius = 3.0 if len(shown) <= 500 else 2.0
    order = {"normal": 0, "unknown": 1, "anomalous": 2}
    body = [
        *_axes(x, y, xticks, nice_ticks(ylo, yhi, 6)),
        *_threshold_line(threshold, x, y),
        *(_circle(p, x, y, radius) for p in sorted(shown, key=lambda p: order[p.truth])),
        *_missed_marks(missed, x, y.start),
    ]
    note = f"{len(shown)} of {len(points)} points shown"
    if len(shown) < len(points):
        note += (
            " (every truth-anomalous and every flagged frame; the others evenly thinned, so "
            "they look sparser than they are)"
        )
    if missed:
        note += f"; {len(missed)} missed frame{'s' if len(missed) != 1 else ''} marked on the axis"
    svg = (
        f'<svg id="timeline" class="timeline" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {SVG_WIDTH} {SVG_HEIGHT}" role="img" '
        f'aria-label="score of each frame over time">{"".join(body)}</svg>'
    )
    return svg, note


def _legend() -> str:
    swatch = '<span class="dot" style="background:{}"></span>{}'
    items = [swatch.format(COLOURS[k], f"truth {k}") for k in ("anomalous", "normal", "unknown")]
    items.append(f'<span class="tick" style="background:{MISSED_COLOUR}"></span>missed frame')
    items.append('<span class="dash"></span>decision threshold')
    return '<p class="legend">' + "".join(f"<span>{i}</span>" for i in items) + "</p>"


# ---------------------------------------------------------------------------------------------
# the per-category table and the galleries


def _percent(fraction: float) -> str:
    """One decimal below 10 %, so that 1 frame in 263 does not read as "0 %"."""
    value = 100 * fraction
    return f"{value:.1f} %" if 0 < value < 10 else f"{value:.0f} %"


def _categories(rows: Sequence[Mapping[str, Any]]) -> str:
    head = (
        "<thead><tr><th>category</th><th>truth</th><th>frames</th><th>mean score</th>"
        "<th>flagged</th></tr></thead>"
    )
    body = []
    for r in rows:
        frames, flagged = int(r.get("frames", 0)), int(r.get("flagged", 0))
        share = f" ({_percent(flagged / frames)})" if frames else ""
        truth = _truth_name(r.get("anomalous"))
        body.append(
            f'<tr class="{truth}"><td>{_e(r.get("category", ""))}</td><td>{truth}</td>'
            f'<td class="num">{_number(frames)}</td>'
            f'<td class="num">{_value(r.get("mean_score"))}</td>'
            f'<td class="num">{_number(flagged)}{share}</td></tr>'
        )
    if not body:
        body.append('<tr><td colspan="5" class="na">no frame with a known category</td></tr>')
    return f'<table id="categories" class="grid">{head}<tbody>{"".join(body)}</tbody></table>'


def png_data_uri(image: np.ndarray) -> str:
    """The RGB image as an inline PNG (lossless: the page shows exactly the overlay's pixels)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"gallery images are (H, W, 3) uint8 RGB; got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    if width > THUMB_MAX_WIDTH:
        size = (THUMB_MAX_WIDTH, max(1, round(height * THUMB_MAX_WIDTH / width)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding of a gallery image failed")
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def _caption(item: GalleryItem, t0: int | None, threshold: float | None) -> str:
    when = f"{(item.stamp_ns - t0) / 1e9:.2f} s" if t0 is not None else f"stamp {item.stamp_ns}"
    flag = " · flagged" if threshold is not None and item.score >= threshold else ""
    category = f" · {_e(item.category)}" if item.category else ""
    extra = f"<br>{_e(item.caption)}" if item.caption else ""
    return (f"{when} · score <b>{_number(item.score, 3)}</b>{flag}<br>"
            f"truth {_truth_name(item.truth)}{category}{extra}")  # fmt: skip


def _gallery(
    element_id: str, items: Sequence[GalleryItem], t0: int | None, threshold: float | None
) -> str:
    figures = []
    for item in items:
        alt = f"frame at stamp {item.stamp_ns}, score {item.score:.3f}"
        figures.append(
            f'<figure class="{_truth_name(item.truth)}">'
            f'<img src="{png_data_uri(item.image)}" width="{THUMB_WIDTH}" alt="{_e(alt)}">'
            f"<figcaption>{_caption(item, t0, threshold)}</figcaption></figure>"
        )
    if not figures:
        figures.append('<p class="na">no scored frame</p>')
    return f'<div id="{element_id}" class="gallery">{"".join(figures)}</div>'


# ---------------------------------------------------------------------------------------------
# provenance


def _key_values(values: Mapping[str, Any], skip: set[str], formats: Mapping[str, Callable]) -> str:
    rows = []
    for key, value in values.items():
        if key in skip:
            continue
        shown = formats[key](value) if key in formats else _value(value)
        rows.append((key.replace("_", " "), shown))
    return _table_rows(rows)


def _topics(topics: Mapping[str, str]) -> str:
    rows = "".join(
        f"<tr><td>{_code(k)}</td><td>{_code(v)}</td></tr>" for k, v in sorted(topics.items())
    )
    head = "<thead><tr><th>topic</th><th>type</th></tr></thead>"
    return f'<table class="grid topics">{head}<tbody>{rows}</tbody></table>'


def _code(value: Any) -> str:
    return f"<code>{_e(value)}</code>"


def _seconds(value: Any) -> str:
    return _value(value, None, 2, "s")


def _provenance(report: Mapping[str, Any]) -> str:
    bag, model = report.get("bag") or {}, report.get("model") or {}
    formats = {"path": _code, "sha256": _code, "duration_s": _seconds}
    return (
        '<section id="provenance"><h2>Provenance</h2>'
        '<div class="columns"><div><h3>bag</h3><table class="kv">'
        f"{_key_values(bag, {'topics'}, formats)}</table></div>"
        '<div><h3>model</h3><table class="kv">'
        f"{_key_values(model, set(), formats)}</table></div></div>"
        f"<h3>topics</h3>{_topics(bag.get('topics') or {})}</section>"
    )


# ---------------------------------------------------------------------------------------------
# the page

CSS = f"""
body {{ font: 14px/1.45 "DejaVu Sans", system-ui, sans-serif; color: #222; background: #fff;
  margin: 0; }}
main {{ max-width: 1100px; margin: 0 auto; padding: 20px 24px 48px; }}
h1 {{ font-size: 22px; margin: 4px 0 4px; word-break: break-word; }}
h2 {{ font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 3px; }}
h3 {{ font-size: 14px; margin: 12px 0 4px; color: #555; }}
.sub {{ color: #666; margin: 0 0 14px; }}
.verdict {{ font-size: 18px; padding: 12px 16px; border-radius: 4px; margin: 10px 0; }}
.verdict .label {{ font-weight: bold; margin-right: 6px; }}
.verdict.warn {{ background: {WARN_BACKGROUND}; border-left: 8px solid #c62828; color: #7a0000; }}
.verdict.ok {{ background: #e3f4e3; border-left: 8px solid #2e7d32; color: #1b4d1e; }}
.caveats {{ background: #fff4cc; border-left: 8px solid #e0a800; padding: 8px 16px;
  border-radius: 4px; margin: 10px 0; }}
.caveats ul {{ margin: 4px 0 0; padding-left: 20px; }}
table {{ border-collapse: collapse; }}
.figures th, .figures td {{ text-align: left; padding: 4px 14px 4px 0; vertical-align: top;
  border-bottom: 1px solid #eee; }}
.figures th[scope=row] {{ font-weight: normal; color: #444; }}
.figures .second {{ padding-left: 36px; }}
.figures thead th {{ font-size: 12px; text-transform: uppercase; letter-spacing: .05em;
  color: #777; border-bottom: 1px solid #ccc; }}
.figures td {{ font-variant-numeric: tabular-nums; }}
.grid th, .grid td {{ padding: 4px 12px; border: 1px solid #ddd; text-align: left; }}
.grid thead th {{ background: #f3f3f3; }}
.grid td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.grid tr.anomalous td:first-child {{ border-left: 4px solid {COLOURS["anomalous"]}; }}
.grid tr.normal td:first-child {{ border-left: 4px solid {COLOURS["normal"]}; }}
.na {{ color: #888; font-style: italic; cursor: help; }}
small.why {{ color: #888; }}
.timeline {{ width: 100%; height: auto; display: block; font-size: 12px; }}
.timeline text {{ fill: #444; }}
.timeline .axis-label {{ fill: #222; font-size: 13px; }}
.timeline .threshold-label {{ fill: #222; font-weight: bold; }}
.timeline .frame-point {{ fill-opacity: .75; }}
.timeline .frame-point[data-truth=anomalous] {{ fill-opacity: .9; }}
.legend {{ color: #444; margin: 4px 0; }}
.legend > span {{ margin-right: 18px; white-space: nowrap; }}
.legend .dot {{ display: inline-block; width: 10px; height: 10px; border-radius: 50%;
  margin-right: 5px; vertical-align: -1px; }}
.legend .tick {{ display: inline-block; width: 3px; height: 10px; margin-right: 5px; }}
.legend .dash {{ display: inline-block; width: 22px; border-top: 2px dashed #333;
  margin-right: 5px; vertical-align: 3px; }}
.note {{ color: #666; font-size: 12px; margin: 2px 0; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 14px; }}
.gallery figure {{ margin: 0; width: {THUMB_WIDTH}px; border-top: 4px solid #ccc; }}
.gallery figure.anomalous {{ border-top-color: {COLOURS["anomalous"]}; }}
.gallery figure.normal {{ border-top-color: {COLOURS["normal"]}; }}
.gallery img {{ width: {THUMB_WIDTH}px; height: auto; display: block; background: #eee; }}
.gallery figcaption {{ font-size: 12px; color: #333; padding: 3px 0; word-break: break-word; }}
.columns {{ display: flex; flex-wrap: wrap; gap: 32px; }}
.columns > div {{ flex: 1 1 420px; min-width: 0; }}
.kv th, .kv td {{ text-align: left; padding: 2px 12px 2px 0; vertical-align: top; }}
.kv th {{ font-weight: normal; color: #555; white-space: nowrap; }}
code {{ font: 12px "DejaVu Sans Mono", monospace; word-break: break-all; }}
"""


def _subtitle(report: Mapping[str, Any]) -> str:
    bag, model, run = report.get("bag") or {}, report.get("model") or {}, report.get("run") or {}
    parts = [
        f"{_number(int(bag['frames']))} frames" if bag.get("frames") is not None else None,
        f"{_number(float(bag['duration_s']), 1)} s of bag" if bag.get("duration_s") else None,
        f"model {model['method']}" if model.get("method") else None,
        f"{run['transport']} transport" if run.get("transport") else None,
        run.get("mode"),
    ]
    return " · ".join(_e(p) for p in parts if p)


def render_html(
    report: dict[str, Any], worst: Sequence[GalleryItem], best: Sequence[GalleryItem]
) -> str:
    """The report as one self-contained page, verdict first: the reader decides from the top
    screen whether to trust the run, and scrolls for the evidence."""
    title = str(report.get("title", "Replay report"))
    return "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>",
        f'<h1 id="title">{_e(title)}</h1><p class="sub">{_subtitle(report)}</p>',
        report_sections(report, worst, best),
        "</main></body></html>\n",
    ])  # fmt: skip


def report_sections(
    report: dict[str, Any], worst: Sequence[GalleryItem], best: Sequence[GalleryItem],
    level: int = 2,
) -> str:  # fmt: skip
    """The report's body (verdict, caveats, figures, timeline, categories, galleries,
    provenance) with section headings at ``level``, for a page of several reports."""
    metrics = report.get("metrics") or {}
    threshold = metrics.get("threshold")
    frames = report.get("frames") or []
    svg, note = timeline_svg(frames, 0.5 if threshold is None else float(threshold))
    stamps = [int(f["stamp_ns"]) for f in frames] or [i.stamp_ns for i in [*worst, *best]]
    t0 = min(stamps) if stamps else None
    h = f"h{level}"
    body = "".join([
        _verdict(report),
        _caveats(report.get("caveats") or []),
        f"<{h}>Figures</{h}>", _headline(report),
        f"<{h}>Score timeline</{h}>", svg, _legend(),
        f'<p class="note" id="timeline-note">{_e(note)}</p>',
        f"<{h}>By category</{h}>", _categories(report.get("by_category") or []),
        f"<{h}>Highest scores</{h}>", _gallery("worst", worst, t0, threshold),
        f"<{h}>Lowest scores</{h}>", _gallery("best", best, t0, threshold),
        _provenance(report),
    ])  # fmt: skip
    return body if level == 2 else body.replace("<h2>", f"<{h}>").replace("</h2>", f"</{h}>")


def write_report(
    out_dir: Path, report: dict[str, Any], worst: Sequence[GalleryItem], best: Sequence[GalleryItem]
) -> tuple[Path, Path]:
    """``report.json`` (the figures, for scripts and diffs; no images) and ``report.html`` (for
    people) in ``out_dir``; returns their paths, JSON first."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    text = json.dumps(report, indent=1)  # before writing anything: a report must be JSON-able
    page = render_html(report, worst, best)
    json_path.write_text(text + "\n", encoding="utf-8")
    html_path.write_text(page, encoding="utf-8")
    return json_path, html_path
