"""The replay report's page: self-contained, escaped, a timeline with one point per scored frame
(thinned for long runs without losing a single anomalous or flagged frame), lossless gallery
images, and what a real browser makes of it (its DOM, and a screenshot showing the warning)."""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import run_chromium

from vad_inspection.replay.html import (
    MAX_POINTS,
    WARN_BACKGROUND,
    GalleryItem,
    nice_ticks,
    render_html,
    write_report,
)

HOSTILE = "<script>alert('x')</script>"
T0 = 1_700_000_000_000_000_000
IDS = ("verdict", "metrics", "timeline", "worst", "best", "categories", "provenance")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


# ---------------------------------------------------------------------------------------------
# a synthetic run


def synthetic_frames(n: int, seed: int = 0, missed: tuple[int, ...] = (40, 41)) -> list[dict]:
    """``n`` frames at 10 Hz, ~10 % truth anomalous (scoring higher), the last three of unknown
    truth, and ``missed`` never scored."""
    rng = np.random.default_rng(seed)
    anomalous = rng.random(n) < 0.1
    scores = np.where(anomalous, 0.35 + 0.6 * rng.random(n), 0.6 * rng.beta(2, 5, n))
    frames = []
    for i in range(n):
        truth: bool | None = bool(anomalous[i]) if i < n - 3 else None
        score = None if i in missed else round(float(scores[i]), 4)
        frames.append({
            "stamp_ns": T0 + i * 100_000_000, "score": score,
            "flagged": score is not None and score >= 0.5, "truth": truth,
            "category": ("crack" if anomalous[i] else "wall") if truth is not None else "",
            "latency_ms": None if score is None else round(float(5 + rng.random()), 3),
        })  # fmt: skip
    return frames


def _by_category(frames: list[dict]) -> list[dict]:
    rows = {}
    for f in frames:
        if f["score"] is None or f["truth"] is None:
            continue
        row = rows.setdefault(f["category"], {"category": f["category"], "frames": 0,
                                              "anomalous": f["truth"], "scores": []})  # fmt: skip
        row["frames"] += 1
        row["scores"].append(f["score"])
    return [
        {"category": r["category"], "frames": r["frames"], "anomalous": r["anomalous"],
         "mean_score": float(np.mean(r["scores"])), "flagged": sum(s >= 0.5 for s in r["scores"])}
        for r in rows.values()
    ]  # fmt: skip


def synthetic_report(n: int = 300, verdict_ok: bool = False) -> dict[str, Any]:
    frames = synthetic_frames(n)
    scored = sum(f["score"] is not None for f in frames)
    return {
        "title": f"Replay of wall_scan with {HOSTILE}",
        "bag": {"path": "/data/bags/wall_scan", "sha256": "ab" * 32, "frames": n,
                "duration_s": (n - 1) / 10, "scenario": "uav_wall",
                "topics": {"/cam/image_raw": "sensor_msgs/msg/Image",
                           "/cam/camera_info": "sensor_msgs/msg/CameraInfo", "/tf": HOSTILE}},
        "model": {"path": "/models/m.vad", "sha256": "cd" * 32, "method": "padim",
                  "weights": "random"},
        "run": {"transport": "local", "mode": "closed loop", "wall_s": 12.5, "frames_sent": n,
                "frames_scored": scored, "missed": n - scored, "mean_rate_hz": scored / 12.5,
                "latency_ms": {"p50": 5.4, "p90": 5.9, "max": 7.2}, "jitter_ms": 0.8,
                "cpu_cores": 1.3, "unanswered": 0},
        "metrics": {"image_auroc": 0.52, "image_auprc": 0.13, "pixel_auroc": None,
                    "aupro": None, "dice": None, "defects_found": 3, "defects_total": 5,
                    "pose_error_m": {"median": 0.042, "p90": 0.11}, "spurious_tags": 1,
                    "threshold": 0.5,
                    "why": {"pixel_auroc": f"no pixel masks {HOSTILE}",
                            "aupro": "no pixel masks in the truth",
                            "dice": "no pixel masks in the truth"}},
        "by_category": _by_category(frames),
        "caveats": ["random backbone weights: figures are a floor", f"caveat {HOSTILE}"],
        "verdict": "image AUROC 0.52: no better than chance on this bag",
        "verdict_ok": verdict_ok,
        "frames": frames,
    }  # fmt: skip


def gallery(count: int, seed: int, truth: bool | None) -> list[GalleryItem]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        image = rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)
        image[:, :8] = (255, 0, 0)  # a pure red band: RGB order survives the round trip
        items.append(GalleryItem(T0 + i * 10**9, 0.9 - 0.1 * i, truth, f"cat {HOSTILE}", image,
                                 caption=f"note {i}"))  # fmt: skip
    return items


# ---------------------------------------------------------------------------------------------
# reading a page back


class Dom(HTMLParser):
    """Every element with its attributes and the ids of its ancestors (enough to ask 'the
    circles inside #timeline' of our page and of the browser's serialisation alike)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str | None]] = []
        self.elements: list[tuple[str, dict[str, str | None], tuple[str, ...]]] = []
        self.feed(text)
        self.close()

    def _record(self, tag: str, attrs: list[tuple[str, str | None]]) -> dict[str, str | None]:
        found = dict(attrs)
        ancestors = tuple(i for _, i in self.stack if i)
        self.elements.append((tag, found, ancestors))
        return found

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = self._record(tag, attrs)
        if tag not in VOID:
            self.stack.append((tag, found.get("id")))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._record(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, -1, -1):
            if self.stack[depth][0] == tag:
                del self.stack[depth:]
                return

    def ids(self) -> set[str]:
        return {a["id"] for _, a, _ in self.elements if a.get("id")}

    def inside(self, element_id: str, tag: str, css: str | None = None) -> list[dict]:
        return [a for t, a, up in self.elements if t == tag and element_id in up
                and (css is None or css in (a.get("class") or "").split())]  # fmt: skip


def points(dom: Dom) -> list[dict]:
    return dom.inside("timeline", "circle", "frame-point")


def decode_png(uri: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    data = np.frombuffer(base64.b64decode(uri[len(prefix) :]), np.uint8)
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------------------------
# the page, without a browser


def test_write_report_writes_the_dict_as_json_and_a_page_with_every_section(
    tmp_path: Path,
) -> None:
    report = synthetic_report()
    json_path, html_path = write_report(tmp_path / "out" / "r", report, gallery(2, 1, True), [])
    assert (json_path.name, html_path.name) == ("report.json", "report.html")
    assert json.loads(json_path.read_text()) == report
    page = html_path.read_text()
    assert set(IDS) <= Dom(page).ids()
    assert "data:image/png;base64," not in json_path.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched


def test_report_text_is_escaped() -> None:
    page = render_html(synthetic_report(), gallery(1, 1, True), gallery(1, 2, False))
    assert "<script" not in page.lower()
    assert page.count("&lt;script&gt;") >= 6  # title (x2), topic, reason (x2), caveat, captions


def test_unmeasurable_metric_shows_na_with_its_reason() -> None:
    page = render_html(synthetic_report(), [], [])
    reason = "no pixel masks &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    assert f'<span class="na" title="{reason}">n/a</span>' in page
    assert "3 of 5" in page and "0.520" in page  # defects found, image AUROC


def test_verdict_is_styled_by_its_outcome() -> None:
    dom = Dom(render_html(synthetic_report(verdict_ok=False), [], []))
    [verdict] = [a for _, a, _ in dom.elements if a.get("id") == "verdict"]
    assert "warn" in verdict["class"].split()
    dom = Dom(render_html(synthetic_report(verdict_ok=True), [], []))
    [verdict] = [a for _, a, _ in dom.elements if a.get("id") == "verdict"]
    assert "ok" in verdict["class"].split()


def test_timeline_has_one_point_per_scored_frame_coloured_by_truth() -> None:
    report = synthetic_report()
    dom = Dom(render_html(report, [], []))
    drawn = points(dom)
    scored = [f for f in report["frames"] if f["score"] is not None]
    assert len(drawn) == len(scored) == 298
    truth = Counter({True: "anomalous", False: "normal", None: "unknown"}[f["truth"]]
                    for f in scored)  # fmt: skip
    assert Counter(p["data-truth"] for p in drawn) == truth and truth["unknown"] == 3
    assert len(dom.inside("timeline", "path", "missed-mark")) == 2
    assert [a for t, a, _ in dom.elements if a.get("id") == "threshold-line"]
    assert "298 of 298 points shown" in render_html(report, [], [])


def test_a_long_run_is_thinned_but_keeps_every_anomalous_and_flagged_frame() -> None:
    report = synthetic_report(20_000)
    page = render_html(report, [], [])
    drawn = points(Dom(page))
    scored = [f for f in report["frames"] if f["score"] is not None]
    assert len(drawn) <= MAX_POINTS + 50
    shown = Counter(p["data-truth"] for p in drawn)
    assert shown["anomalous"] == sum(f["truth"] is True for f in scored)
    flagged = [p for p in drawn if "flagged" in p["class"].split()]
    assert len(flagged) == sum(f["flagged"] for f in scored)
    assert f"{len(drawn)} of {len(scored)} points shown" in page
    assert len(page) < 1_000_000


def test_gallery_images_decode_to_the_given_pixels() -> None:
    worst, best = gallery(3, 1, True), gallery(2, 2, False)
    dom = Dom(render_html(synthetic_report(), worst, best))
    for element_id, items in (("worst", worst), ("best", best)):
        images = dom.inside(element_id, "img")
        assert len(images) == len(items)
        for img, item in zip(images, items, strict=True):
            assert np.array_equal(decode_png(img["src"]), item.image)


def test_wide_gallery_images_are_shrunk_to_keep_the_page_small() -> None:
    image = np.zeros((600, 1200, 3), np.uint8)
    item = GalleryItem(T0, 0.7, None, "", image)
    [img] = Dom(render_html(synthetic_report(), [item], [])).inside("worst", "img")
    assert decode_png(img["src"]).shape == (256, 512, 3)


def test_a_report_without_truth_or_scores_still_renders() -> None:
    report = synthetic_report(5)
    report.update(frames=[], by_category=[], caveats=[], verdict_ok=True)
    report["run"].update(latency_ms=None, jitter_ms=None, frames_scored=0)
    report["metrics"] = {"image_auroc": None, "threshold": 0.5, "why": {"image_auroc": "no truth"}}
    dom = Dom(render_html(report, [], []))
    assert set(IDS) <= dom.ids() and not points(dom)


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0.0, 1.0, 6) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.0, 29.9, 8) == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]


# ---------------------------------------------------------------------------------------------
# the page in a real browser


@pytest.fixture
def page(tmp_path: Path) -> Path:
    _, html_path = write_report(tmp_path / "report", synthetic_report(), gallery(4, 1, True),
                                gallery(3, 2, False))  # fmt: skip
    return html_path


@pytest.mark.slow
def test_browser_parses_the_timeline_and_the_galleries(
    chromium: str, page: Path, tmp_path: Path
) -> None:
    dom = Dom(run_chromium(chromium, tmp_path, "--dump-dom", page.as_uri()).stdout)
    assert set(IDS) <= dom.ids()
    assert [a for t, a, _ in dom.elements if t == "svg" and a.get("id") == "timeline"]
    assert len(points(dom)) == 298
    assert len(dom.inside("worst", "img")) == 4 and len(dom.inside("best", "img")) == 3


@pytest.mark.slow
def test_browser_screenshot_is_not_blank_and_shows_the_warning(
    chromium: str, page: Path, tmp_path: Path
) -> None:
    shot = tmp_path / "page.png"
    run_chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1200,2400",
                 "--hide-scrollbars", page.as_uri())  # fmt: skip
    pixels = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert pixels is not None and pixels.shape[:2] == (2400, 1200)
    assert float(pixels.std()) > 20
    warn = np.array([int(WARN_BACKGROUND[i : i + 2], 16) for i in (5, 3, 1)])  # as BGR
    near = (np.abs(pixels.astype(int) - warn) <= 4).all(axis=2)
    assert near.sum() > 5_000  # the verdict's box, not a stray pixel
