"""The demo's one HTML page: per scenario, whether detection works (in words), the hazard grid over
the terrain with its scores, the landing sites against random ones, what the recorder sent, then
the scenario's replay report (timeline, galleries, provenance). Self-contained like the replay
report (inline CSS and images), plus ``demo.json`` with every figure."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..replay.html import CSS, report_sections
from .run import CHANCE, ScenarioResult, verdict

EXTRA_CSS = """
.scenario { border-top: 3px solid #333; margin-top: 36px; }
.hazard img { max-width: 100%; height: auto; image-rendering: pixelated; border: 1px solid #ccc; }
.summary td, .summary th { padding: 4px 12px; border: 1px solid #ddd; text-align: left; }
.summary td.num { text-align: right; font-variant-numeric: tabular-nums; }
.chance { background: #ffe0e0; }
.works { background: #e3f4e3; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _summary(results: Sequence[ScenarioResult]) -> str:
    rows = []
    for r in results:
        m, h, rec = r.report["metrics"], r.hazard, r.recorder
        best = max(v for v in (m.get("image_auroc"), m.get("pixel_auroc"), 0.0) if v is not None)
        kind = "works" if best >= CHANCE else "chance"
        cells = h.get("cells", {})
        rows.append(
            f'<tr class="{kind}" data-scenario="{_e(r.recipe.name)}">'
            f'<td><a href="#{_e(r.recipe.name)}">{_e(r.recipe.name)}</a></td>'
            f'<td class="num image-auroc">{_f(m.get("image_auroc"))}</td>'
            f'<td class="num pixel-auroc">{_f(m.get("pixel_auroc"))}</td>'
            f"<td>{_e(verdict(r))}</td>"
            f'<td class="num">{_f(cells.get("precision"))} / {_f(cells.get("recall"))}</td>'
            f'<td class="num">{_pct(h.get("top5_clear"))} vs {_pct(h.get("random_clear"))}</td>'
            f'<td class="num">{_pct(rec.get("defects_delivered"))}</td></tr>'
        )
    head = ("<thead><tr><th>scenario</th><th>image AUROC</th><th>pixel AUROC</th><th>detection"
            "</th><th>hazard cells precision / recall</th><th>top-5 sites clear vs random</th>"
            "<th>defects downlinked</th></tr></thead>")  # fmt: skip
    return f'<table id="summary" class="summary">{head}<tbody>{"".join(rows)}</tbody></table>'


def _hazard_section(r: ScenarioResult) -> str:
    h = r.hazard
    if "error" in h:
        return f"<p>{_e(h['error'])}</p>"
    cells = h["cells"]
    sites = "".join(
        f'<tr class="{"clear" if s["clear"] else "hit"}"><td class="num">{k + 1}</td>'
        f'<td class="num">{s["x"]:.2f}</td><td class="num">{s["y"]:.2f}</td>'
        f'<td class="num">{s["z"]:.2f}</td><td>{"clear" if s["clear"] else "a defect inside"}</td>'
        "</tr>"
        for k, s in enumerate(h["sites"])
    )  # fmt: skip
    picture = r.images.get("hazard")
    return "".join([
        '<div class="hazard">',
        _image(picture, f"hazard grid of {r.recipe.name}") if picture else "",
        '<p class="note">Terrain as the camera saw it (grey), hazard cells in red (by '
        "probability), unknown ground dimmed, true defects outlined in yellow, landing sites "
        "ranked, green when clear, magenta when a true defect lies inside the footprint.</p>",
        "</div>",
        '<table class="summary hazard-figures"><tbody>',
        f"<tr><th>cells known</th><td>{h['cells_known']} of {h['cells_total']} "
        f"({h['resolution_m']:g} m cells), from {h.get('maps_placed')} anomaly maps placed of "
        f"{h.get('frames')} frames (best effort over DDS, as a camera's images travel: a map "
        "lost in transit is evidence lost, so runs differ a little)</td></tr>",
        f"<tr><th>anomalous cells (grid &ge; 50) against the projected truth</th><td>precision "
        f"{_f(cells['precision'])}, recall {_f(cells['recall'])}, F1 {_f(cells['f1'])} "
        f"({cells['hits']} of {cells['predicted']} predicted, {cells['true']} true; "
        f"{cells['unknown_truth']} true cells still unknown)</td></tr>",
        f"<tr><th>landing sites (footprint {h['footprint_m']:g} m) clear of every true defect"
        f"</th><td>top 5: {_pct(h['top5_clear'])}; {h['random_sites']} random sites on known "
        f"ground: {_pct(h['random_clear'])}</td></tr>",
        "</tbody></table>",
        '<table class="summary sites"><thead><tr><th>#</th><th>x</th><th>y</th><th>z</th>'
        f"<th>truth</th></tr></thead><tbody>{sites}</tbody></table>",
    ])  # fmt: skip


def _recorder_section(r: ScenarioResult) -> str:
    rec = r.recorder
    forms = ", ".join(f"{k}: {v}" for k, v in sorted(rec.get("forms", {}).items()))
    return "".join([
        '<table class="summary recorder"><tbody>',
        f"<tr><th>window</th><td>{100 * r.recipe.budget:.0f} % of the pass's raw bytes, asked "
        f"for at the end of the pass: {_e(rec['reply'])}</td></tr>",
        f"<tr><th>items sent</th><td>{rec['items']} ({_e(forms)})</td></tr>",
        f"<tr><th>distinct defects delivered</th><td>{_pct(rec['defects_delivered'])} of "
        f"{rec['distinct_defects']}</td></tr>",
        f"<tr><th>anomalous frames delivered</th><td>{_pct(rec['anomalous_delivered'])} of "
        f"{rec['anomalous_frames']} (of {rec['frames']} frames)</td></tr>",
        "</tbody></table>",
    ])  # fmt: skip


def render_page(results: Sequence[ScenarioResult], seconds: float) -> str:
    sections = []
    for r in results:
        fit = r.report.get("fit", {})
        sections.append("".join([
            f'<section class="scenario" id="{_e(r.recipe.name)}">',
            f"<h2>{_e(r.recipe.title)}</h2>",
            f'<p class="sub">Model: {_e(fit.get("method"))} fitted in {fit.get("seconds")} s on '
            f'{fit.get("frames")} frames of {_e(fit.get("on"))} (+{fit.get("calibration")} to '
            f"calibrate). Detection: <strong>{_e(verdict(r))}</strong>.</p>",
            "<h3>Hazard grid and landing sites</h3>", _hazard_section(r),
            "<h3>What the recorder sent</h3>", _recorder_section(r),
            report_sections(r.report, r.worst, r.best, level=3),
            "</section>",
        ]))  # fmt: skip
    return "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>vad_inspection demo</title><style>{CSS}{EXTRA_CSS}</style></head><body><main>",
        '<h1 id="title">vad_inspection demo</h1>',
        f'<p class="sub">{len(results)} scenarios, each through the player, detector, hazard map '
        f"and recorder as separate processes over DDS; {seconds:.0f} s in all. Models use seeded "
        "random backbone weights (no pretrained weights here) or are trained from scratch.</p>",
        _summary(results),
        *sections,
        "</main></body></html>\n",
    ])  # fmt: skip


def write_page(out: Path, results: Sequence[ScenarioResult], seconds: float) -> Path:
    data = {
        r.recipe.name: {"metrics": r.report["metrics"], "fit": r.report.get("fit"),
                        "hazard": r.hazard, "recorder": r.recorder, "seconds": r.seconds,
                        "verdict": verdict(r)}
        for r in results
    }  # fmt: skip
    (out / "demo.json").write_text(json.dumps({"seconds": seconds, "scenarios": data}, indent=1,
                                              default=str))  # fmt: skip
    page = out / "report.html"
    page.write_text(render_page(results, seconds), encoding="utf-8")
    return page
