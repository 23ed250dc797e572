"""The results table and ROC / PR figure, laid out as the benchmark papers show them.

A table has one row per (dataset, model) and one column per (setting, metric), settings side by
side ("S1 image_auroc", ..., "S2 image_auroc", ...), so the effect of fewer anomalies (Setting 2)
and of a contaminated training set (Setting 3) is read along a row. The best value of each column
is bolded in Markdown, compared only between models of the same dataset (comparing AUROCs across
datasets means nothing). Higher is better except for costs, recognised by their unit suffix.

The figure is drawn with matplotlib's Agg canvas directly (no pyplot, no global backend switch),
so it works on robots and CI machines without a display and does not disturb a caller's pyplot.
Curves and areas come from :mod:`vad_inspection.eval.metrics`, the same code as the table values.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "COST_DECIMALS",
    "Column",
    "Curve",
    "ReportError",
    "ResultRow",
    "Table",
    "curves_figure",
    "format_value",
    "lower_is_better",
    "plot_curves",
    "results_table",
]

# Cost metrics by unit suffix (lower is better) and the decimals they are shown with; every other
# metric is a score in [0, 1], higher is better, shown with 3 decimals.
COST_DECIMALS: Mapping[str, int] = {"_ms": 1, "_s": 1, "_mb": 1, "_bytes": 0}
SCORE_DECIMALS = 3
MISSING = "-"


class ReportError(ValueError):
    """The rows or curves given cannot be laid out (the message says which and why)."""


@dataclass(frozen=True)
class ResultRow:
    """The metrics of one model on one dataset under one setting."""

    model: str
    dataset: str
    setting: int
    metrics: Mapping[str, float]


@dataclass(frozen=True, eq=False)
class Curve:
    """Test labels (1 = anomalous) and image scores of one model under one setting."""

    model: str
    setting: int
    labels: np.ndarray
    scores: np.ndarray


def _cost_suffix(metric: str) -> str | None:
    return next((suffix for suffix in COST_DECIMALS if metric.endswith(suffix)), None)


def lower_is_better(metric: str) -> bool:
    """True for costs (time, memory, size), named by their unit: ``_ms``, ``_s``, ``_mb``..."""
    return _cost_suffix(metric) is not None


def format_value(metric: str, value: float | None) -> str:
    """A metric as the tables show it: 3 decimals for scores, 1 for times and memory, "-" if
    missing or not a number."""
    if value is None or not math.isfinite(value):
        return MISSING
    suffix = _cost_suffix(metric)
    decimals = SCORE_DECIMALS if suffix is None else COST_DECIMALS[suffix]
    return f"{value:.{decimals}f}"


@dataclass(frozen=True)
class Column:
    """A value column: one metric under one setting."""

    setting: int
    metric: str

    @property
    def name(self) -> str:
        return f"S{self.setting} {self.metric}"


@dataclass(frozen=True)
class Table:
    """Results laid out for reading: ``index`` holds (dataset, model), ``values`` one row each."""

    columns: tuple[Column, ...]
    index: tuple[tuple[str, str], ...]
    values: tuple[tuple[float | None, ...], ...]

    KEYS = ("dataset", "model")

    @property
    def header(self) -> tuple[str, ...]:
        return (*self.KEYS, *(c.name for c in self.columns))

    def cells(self) -> list[list[str]]:
        """Formatted values, row by row, without the key columns."""
        return [
            [format_value(c.metric, v) for c, v in zip(self.columns, row, strict=True)]
            for row in self.values
        ]

    def best(self) -> set[tuple[int, int]]:
        """(row, column) of each column's best value among the models of one dataset.

        Values are compared as displayed, so models that tie to the shown decimals are all
        marked; a dataset with a single value in a column marks nothing (no comparison made).
        """
        cells = self.cells()
        marked: set[tuple[int, int]] = set()
        for dataset in dict.fromkeys(d for d, _ in self.index):
            rows = [i for i, (d, _) in enumerate(self.index) if d == dataset]
            for j, column in enumerate(self.columns):
                shown = {i: float(cells[i][j]) for i in rows if cells[i][j] != MISSING}
                if len(shown) < 2:
                    continue
                pick = min if lower_is_better(column.metric) else max
                target = pick(shown.values())
                marked |= {(i, j) for i, value in shown.items() if value == target}
        return marked

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table, numbers right-aligned, best values bold."""
        best = self.best()
        lines = [
            _markdown_line(self.header),
            _markdown_line(["---"] * len(self.KEYS) + ["---:"] * len(self.columns)),
        ]
        for i, (keys, row) in enumerate(zip(self.index, self.cells(), strict=True)):
            shown = [f"**{v}**" if (i, j) in best else v for j, v in enumerate(row)]
            lines.append(_markdown_line([*keys, *shown]))
        return "\n".join(lines)

    def to_csv(self, path: Path | str) -> Path:
        """Write the table as CSV at full precision (empty cell for missing), for analysis."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(self.header)
            writer.writerows(
                [*keys, *("" if v is None or v != v else repr(float(v)) for v in row)]
                for keys, row in zip(self.index, self.values, strict=True)
            )
        return path

    def to_text(self) -> str:
        """An aligned plain-text table for the console: keys left, numbers right."""
        rows = [list(self.header)] + [
            [*keys, *row] for keys, row in zip(self.index, self.cells(), strict=True)
        ]
        widths = [max(len(row[j]) for row in rows) for j in range(len(self.header))]
        n_keys = len(self.KEYS)

        def line(row: Sequence[str]) -> str:
            return "  ".join(
                cell.ljust(w) if j < n_keys else cell.rjust(w)
                for j, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([line(rows[0]), rule, *(line(row) for row in rows[1:])])


def _markdown_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def results_table(rows: Sequence[ResultRow], metrics: Sequence[str] | None = None) -> Table:
    """Lay ``rows`` out with one line per (dataset, model) and a column per (setting, metric).

    Settings are sorted; metrics keep the order given (default: the order they first appear in
    ``rows``); rows keep the order their (dataset, model) first appears. A metric a row does not
    have is shown as "-". Two rows for the same (dataset, model, setting) are an error rather
    than one silently hiding the other.
    """
    if not rows:
        raise ReportError("no result rows to tabulate")
    if metrics is None:
        metrics = list(dict.fromkeys(name for row in rows for name in row.metrics))
    by_key: dict[tuple[str, str, int], Mapping[str, float]] = {}
    for row in rows:
        key = (row.dataset, row.model, row.setting)
        if key in by_key:
            raise ReportError(
                f"two result rows for model {row.model!r} on {row.dataset!r} setting {row.setting}"
            )
        by_key[key] = row.metrics
    columns = tuple(
        Column(setting, metric)
        for setting in sorted({row.setting for row in rows})
        for metric in metrics
    )
    index = tuple(dict.fromkeys((row.dataset, row.model) for row in rows))
    values = tuple(
        tuple(by_key.get((*keys, c.setting), {}).get(c.metric) for c in columns) for keys in index
    )
    return Table(columns=columns, index=index, values=values)


def curves_figure(curves: Sequence[Curve], title: str) -> Figure:
    """Per setting (column), a ROC panel (top row) and a PR panel (bottom row), a line per model.

    Legends give each model's AUROC / AP; dashed lines show chance (the diagonal for ROC, the
    anomaly rate for PR). A model whose curve is undefined (one class only) is listed as "n/a".
    The figure sits on an Agg canvas, so it can be saved without a display.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ReportError(f"no curves to plot for {title!r}")
    settings = sorted({c.setting for c in curves})
    colors = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(c.model for c in curves))}
    figure = Figure(figsize=(4.5 * len(settings), 8.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, len(settings), squeeze=False)
    for j, setting in enumerate(settings):
        group = [c for c in curves if c.setting == setting]
        _roc_panel(axes[0, j], group, colors, f"Setting {setting}: ROC")
        _pr_panel(axes[1, j], group, colors, f"Setting {setting}: PR")
    figure.suptitle(title)
    return figure


def plot_curves(curves: Sequence[Curve], path: Path | str, title: str) -> Path:
    """Write :func:`curves_figure` as one PNG at ``path`` (parent folders created)."""
    figure = curves_figure(curves, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _roc_panel(ax: Axes, curves: Sequence[Curve], colors: Mapping[str, str], title: str) -> None:
    from vad_inspection.eval.metrics import MetricError, auroc, roc_curve

    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance (0.500)")
    for c in curves:
        try:
            fpr, tpr, _ = roc_curve(c.labels, c.scores)
            label = f"{c.model} (AUROC {auroc(c.labels, c.scores):.3f})"
        except MetricError:
            ax.plot([], [], color=colors[c.model], label=f"{c.model} (n/a)")
            continue
        ax.plot(fpr, tpr, color=colors[c.model], linewidth=1.5, label=label)
    _finish(ax, title, "false positive rate", "true positive rate")


def _pr_panel(ax: Axes, curves: Sequence[Curve], colors: Mapping[str, str], title: str) -> None:
    from vad_inspection.eval.metrics import MetricError, auc_pr, pr_curve

    rate = float(np.mean(curves[0].labels)) if np.size(curves[0].labels) else 0.0
    ax.axhline(rate, linestyle="--", color="0.6", linewidth=1, label=f"chance ({rate:.3f})")
    for c in curves:
        try:
            precision, recall, _ = pr_curve(c.labels, c.scores)
            label = f"{c.model} (AP {auc_pr(c.labels, c.scores):.3f})"
        except MetricError:
            ax.plot([], [], color=colors[c.model], label=f"{c.model} (n/a)")
            continue
        ax.plot(
            recall,
            precision,
            color=colors[c.model],
            linewidth=1.5,
            drawstyle="steps-post",
            label=label,
        )
    _finish(ax, title, "recall", "precision")


def _finish(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02))
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")  # low-prevalence PR curves hug the bottom
