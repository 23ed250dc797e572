"""The results table (Markdown, CSV, console) and the ROC / PR figure."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from vad_inspection.eval.metrics import auc_pr, auroc
from vad_inspection.eval.report import (
    Curve,
    ReportError,
    ResultRow,
    Table,
    curves_figure,
    format_value,
    lower_is_better,
    plot_curves,
    results_table,
)

METRICS = ("image_auroc", "pixel_auroc", "latency_ms")
ROWS = (
    ResultRow(
        "padim", "tiles", 1, {"image_auroc": 0.9123, "pixel_auroc": 0.95, "latency_ms": 12.34}
    ),
    ResultRow("darkest", "tiles", 1, {"image_auroc": 0.7001, "latency_ms": 1.26}),
    ResultRow(
        "padim", "tiles", 2, {"image_auroc": 0.8811, "pixel_auroc": 0.94, "latency_ms": 12.1}
    ),
    ResultRow("darkest", "tiles", 2, {"image_auroc": 0.7502, "latency_ms": 1.3}),
)


def table() -> Table:
    return results_table(ROWS, METRICS)


def test_columns_are_settings_then_metrics_in_the_given_order() -> None:
    t = table()
    assert t.header == (
        "dataset",
        "model",
        "S1 image_auroc",
        "S1 pixel_auroc",
        "S1 latency_ms",
        "S2 image_auroc",
        "S2 pixel_auroc",
        "S2 latency_ms",
    )
    assert t.index == (("tiles", "padim"), ("tiles", "darkest"))
    assert t.cells()[0] == ["0.912", "0.950", "12.3", "0.881", "0.940", "12.1"]
    assert t.cells()[1] == ["0.700", "-", "1.3", "0.750", "-", "1.3"]


def test_markdown_bolds_the_best_of_each_column_and_shows_missing_as_dash() -> None:
    lines = table().to_markdown().splitlines()
    assert lines[0] == (
        "| dataset | model | S1 image_auroc | S1 pixel_auroc | S1 latency_ms "
        "| S2 image_auroc | S2 pixel_auroc | S2 latency_ms |"
    )
    assert lines[1] == "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    # Higher AUROC wins, lower latency wins; a lone pixel value is not "best" of anything; the
    # S2 latencies tie at the shown decimal (1.3) and are both bold.
    assert lines[2] == "| tiles | padim | **0.912** | 0.950 | 12.3 | **0.881** | 0.940 | 12.1 |"
    assert lines[3] == "| tiles | darkest | 0.700 | - | **1.3** | 0.750 | - | **1.3** |"
    assert len(lines) == 4


def test_best_is_chosen_within_each_dataset() -> None:
    rows = [
        ResultRow("a", "easy", 1, {"image_auroc": 0.99}),
        ResultRow("b", "easy", 1, {"image_auroc": 0.98}),
        ResultRow("a", "hard", 1, {"image_auroc": 0.61}),
        ResultRow("b", "hard", 1, {"image_auroc": 0.72}),
    ]
    lines = results_table(rows).to_markdown().splitlines()[2:]
    assert lines == [
        "| easy | a | **0.990** |",
        "| easy | b | 0.980 |",
        "| hard | a | 0.610 |",
        "| hard | b | **0.720** |",
    ]


def test_default_metrics_follow_first_appearance_and_missing_cells_are_dashes() -> None:
    rows = [
        ResultRow("a", "d", 2, {"image_f1": 0.5, "fit_s": 3.21}),
        ResultRow("b", "d", 1, {"aupro": 0.25}),
    ]
    t = results_table(rows)
    assert t.header[2:] == (
        "S1 image_f1",
        "S1 fit_s",
        "S1 aupro",
        "S2 image_f1",
        "S2 fit_s",
        "S2 aupro",
    )
    assert t.cells() == [["-", "-", "-", "0.500", "3.2", "-"], ["-", "-", "0.250", "-", "-", "-"]]


def test_csv_reads_back_at_full_precision(tmp_path: Path) -> None:
    path = table().to_csv(tmp_path / "out" / "results.csv")
    with path.open(newline="", encoding="utf-8") as stream:
        back = list(csv.reader(stream))
    assert back[0] == list(table().header)
    assert back[1] == ["tiles", "padim", "0.9123", "0.95", "12.34", "0.8811", "0.94", "12.1"]
    assert back[2] == ["tiles", "darkest", "0.7001", "", "1.26", "0.7502", "", "1.3"]
    assert len(back) == 3


def test_text_table_is_aligned() -> None:
    lines = table().to_text().splitlines()
    assert lines[0].split() == [
        "dataset", "model", "S1", "image_auroc", "S1", "pixel_auroc", "S1", "latency_ms",
        "S2", "image_auroc", "S2", "pixel_auroc", "S2", "latency_ms",
    ]  # fmt: skip
    assert set(lines[1]) == {"-", " "}
    assert lines[3].split() == ["tiles", "darkest", "0.700", "-", "1.3", "0.750", "-", "1.3"]
    assert len({len(line) for line in lines}) == 1  # numbers right-aligned to one edge
    assert "**" not in table().to_text()
    first_value = lines[0].index("S1 image_auroc") + len("S1 image_auroc")
    assert lines[2][:first_value].endswith("0.912") and lines[3][:first_value].endswith("0.700")


def test_cost_metrics_are_lower_is_better_with_one_decimal() -> None:
    for name in ("latency_ms", "fit_s", "peak_mb", "model_bytes"):
        assert lower_is_better(name), name
    for name in ("image_auroc", "image_auc_pr", "dice", "iou", "aupro", "image_acc_cal"):
        assert not lower_is_better(name), name
    assert format_value("fit_s", 12.345) == "12.3"
    assert format_value("model_bytes", 2048.4) == "2048"
    assert format_value("dice", 0.12345) == "0.123"
    assert format_value("dice", None) == format_value("dice", float("nan")) == "-"


def test_table_refuses_duplicate_and_empty_rows() -> None:
    with pytest.raises(
        ReportError, match=r"two result rows for model 'padim' on 'tiles' setting 1"
    ):
        results_table([*ROWS, ROWS[0]])
    with pytest.raises(ReportError, match="no result rows"):
        results_table([])


def _curves(settings: tuple[int, ...]) -> list[Curve]:
    rng = np.random.default_rng(0)
    curves = []
    for setting in settings:
        labels = np.array([0] * 60 + [1] * (60 if setting == 1 else 4))
        for model, separation in (("good", 2.0), ("weak", 0.3)):
            scores = rng.normal(size=labels.size) + separation * labels
            curves.append(Curve(model, setting, labels, scores))
    return curves


def test_plot_writes_a_non_blank_png_with_a_column_per_setting(tmp_path: Path) -> None:
    three = plot_curves(_curves((1, 2, 3)), tmp_path / "figs" / "curves.png", title="tiles")
    one = plot_curves(_curves((2,)), tmp_path / "one.png", title="tiles S2")
    assert three.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(three)
    assert image.size > 0 and float(image[..., :3].std()) > 0
    single = matplotlib.image.imread(one)
    assert image.shape[0] == single.shape[0]  # two rows of panels either way
    assert image.shape[1] == pytest.approx(3 * single.shape[1], rel=0.02)


def test_figure_has_a_roc_and_a_pr_panel_per_setting_with_areas_in_legends() -> None:
    curves = _curves((3, 1))
    figure = curves_figure(curves, title="tiles")
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["Setting 1: ROC", "Setting 3: ROC", "Setting 1: PR", "Setting 3: PR"]
    roc_legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    pr_legend = [t.get_text() for t in figure.axes[3].get_legend().get_texts()]
    good_s1, weak_s3 = curves[2], curves[1]
    assert (good_s1.model, good_s1.setting, weak_s3.model, weak_s3.setting) == (
        "good",
        1,
        "weak",
        3,
    )
    assert roc_legend == [
        "chance (0.500)",
        f"good (AUROC {auroc(good_s1.labels, good_s1.scores):.3f})",
        f"weak (AUROC {auroc(curves[3].labels, curves[3].scores):.3f})",
    ]
    assert pr_legend[0] == f"chance ({4 / 64:.3f})"
    assert pr_legend[2] == f"weak (AP {auc_pr(weak_s3.labels, weak_s3.scores):.3f})"


def test_plot_survives_a_curve_without_anomalies(tmp_path: Path) -> None:
    curves = [*_curves((1,)), Curve("blind", 1, np.zeros(10, dtype=int), np.arange(10.0))]
    image = matplotlib.image.imread(plot_curves(curves, tmp_path / "c.png", title="t"))
    assert float(image[..., :3].std()) > 0


def test_plot_refuses_no_curves(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no curves"):
        plot_curves([], tmp_path / "none.png", title="empty")
    assert not (tmp_path / "none.png").exists()
