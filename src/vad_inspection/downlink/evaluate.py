"""How much of what matters a planner gets down, at budgets given as shares of the stream's bytes.

A labelled stream (each candidate with its truth: anomalous or not, the distinct defects it shows)
is stored in full and then sent through one window per budget at its end (a pass, then a contact),
or through several windows spread over it (``windows`` > 1: after each part of the pass, a window
of an equal share of the budget, offering everything stored and not yet sent). Per planner and
budget:

- ``defects_delivered``: the fraction of the stream's distinct defects of which at least one frame
  was sent in a form that shows it (any form but ``meta``): the issue's headline figure;
- ``anomalous_delivered``: the fraction of anomalous frames sent in such a form;
- precision among the first n frames sent (again not counting ``meta``), for n = 10, 20 and the
  number of anomalous frames in the stream (``p@R``): the figure planetary novelty ranking reports
  (DORA); over the frames actually sent when fewer than n were;
- bytes used, frames sent, metadata records sent.

:func:`saturation` says from which budget on the defects curve stays at its top, and
:func:`plot_curves` draws the curves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .planner import FULL, META, Candidate, Choice, DownlinkPlanner, Window, oversized

DEFAULT_BUDGETS = (0.01, 0.02, 0.05, 0.1, 0.2)
PRECISION_AT = (10, 20)


@dataclass(frozen=True)
class StreamItem:
    """A candidate with its truth: anomalous or not, and the ids of the distinct defects it shows
    (several frames may show one defect; a defect counts delivered once any of them is sent)."""

    candidate: Candidate
    anomalous_truth: bool
    defect_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class BudgetResult:
    """One planner at one budget. Fractions are None where the stream has nothing to count;
    ``precision`` is keyed ``p@10``, ``p@20``, ``p@R`` (None when nothing was sent)."""

    planner: str
    budget: float
    budget_bytes: int
    bytes_used: int
    frames_sent: int
    meta_sent: int
    anomalous_delivered: float | None
    defects_delivered: float | None
    precision: Mapping[str, float | None]
    oversized: int
    choices: tuple[Choice, ...] = field(default=(), repr=False, compare=False)

    def row(self) -> dict[str, object]:
        """The figures as JSON-able data (without the plan itself)."""
        return {
            "planner": self.planner, "budget": self.budget, "budget_bytes": self.budget_bytes,
            "bytes_used": self.bytes_used, "frames_sent": self.frames_sent,
            "meta_sent": self.meta_sent, "anomalous_delivered": self.anomalous_delivered,
            "defects_delivered": self.defects_delivered, "precision": dict(self.precision),
            "oversized": self.oversized,
        }  # fmt: skip


def stream_bytes(stream: Sequence[StreamItem]) -> int:
    """The stream's size: the sum of its frames' ``full`` forms (what a budget is a share of)."""
    return sum(int(item.candidate.forms[FULL]) for item in stream)


def _windows(stream: Sequence[StreamItem], total: int, count: int) -> list[tuple[int, Window]]:
    """``count`` windows: (items stored by then, the window), the budget shared equally (the last
    takes the rounding's remainder), each opening at the last stamp of its part of the stream."""
    n = len(stream)
    count = max(1, min(count, n)) if n else 1
    ends = [round(n * (k + 1) / count) for k in range(count)]
    share = total // count
    out = []
    for k, end in enumerate(ends):
        size = total - share * (count - 1) if k == count - 1 else share
        start = stream[end - 1].candidate.stamp_ns if end else 0
        out.append((end, Window(start, size)))
    return out


def _precision(truth: Sequence[bool], n: int) -> float | None:
    first = truth[:n]
    return sum(first) / len(first) if first else None


def run_planner(
    stream: Sequence[StreamItem],
    planner: DownlinkPlanner,
    budget: float,
    windows: int = 1,
    precision_at: Sequence[int] = PRECISION_AT,
) -> BudgetResult:
    """One planner (fresh: it keeps state) through the stream at one budget."""
    ordered = sorted(stream, key=lambda item: (item.candidate.stamp_ns, item.candidate.seq))
    by_seq = {item.candidate.seq: item for item in ordered}
    if len(by_seq) != len(ordered):
        raise ValueError("stream items must have distinct sequence numbers")
    total = round(budget * stream_bytes(ordered))
    choices: list[Choice] = []
    delivered: set[int] = set()
    never: set[int] = set()
    for end, window in _windows(ordered, total, windows):
        offered = [i.candidate for i in ordered[:end] if i.candidate.seq not in delivered]
        never.update(oversized(offered, window))
        plan = planner.plan(offered, window)
        used = sum(c.bytes for c in plan)
        if used > window.bytes:
            raise RuntimeError(f"{planner.name} planned {used} bytes into a {window.bytes} window")
        choices += plan
        delivered.update(c.seq for c in plan if c.form != META)
    shown = [c for c in choices if c.form != META]
    anomalous = [i for i in ordered if i.anomalous_truth]
    defects = {d for i in ordered for d in i.defect_ids}
    got = {d for c in shown for d in by_seq[c.seq].defect_ids}
    truth = [by_seq[c.seq].anomalous_truth for c in shown]
    precision = {f"p@{n}": _precision(truth, n) for n in precision_at}
    precision["p@R"] = _precision(truth, len(anomalous)) if anomalous else None
    return BudgetResult(
        planner=planner.name,
        budget=budget,
        budget_bytes=total,
        bytes_used=sum(c.bytes for c in choices),
        frames_sent=len(shown),
        meta_sent=len(choices) - len(shown),
        anomalous_delivered=(
            sum(by_seq[c.seq].anomalous_truth for c in shown) / len(anomalous)
            if anomalous
            else None
        ),
        defects_delivered=len(got & defects) / len(defects) if defects else None,
        precision=precision,
        oversized=len(never - delivered),
        choices=tuple(choices),
    )


def evaluate(
    stream: Sequence[StreamItem],
    planners: Mapping[str, Callable[[], DownlinkPlanner]],
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    windows: int = 1,
    precision_at: Sequence[int] = PRECISION_AT,
) -> list[BudgetResult]:
    """Every planner at every budget; ``planners`` maps a name to a factory, called once per
    budget (a planner remembers what it sent). Results are named by the mapping's keys."""
    out = []
    for name, make in planners.items():
        for budget in budgets:
            result = run_planner(stream, make(), budget, windows, precision_at)
            out.append(replace(result, planner=name))
    return out


def curve(results: Sequence[BudgetResult], planner: str) -> list[tuple[float, float]]:
    """(budget, defects delivered) of one planner, by budget (budgets without a figure left out)."""
    points = [(r.budget, r.defects_delivered) for r in results if r.planner == planner]
    return sorted((b, d) for b, d in points if d is not None)


def saturation(
    results: Sequence[BudgetResult], planner: str, min_span: float = 0.0, tolerance: float = 1e-9
) -> tuple[float, float] | None:
    """Where the planner's defects curve saturates: the smallest budget from which every larger
    budget delivers within ``tolerance`` of the curve's top, and that top. None when there are no
    figures, when nothing is delivered, or when the top falls short of every defect and holds
    for less than ``min_span`` of budget before the last one (a curve still climbing in steps
    of one defect is not saturated)."""
    points = curve(results, planner)
    if not points:
        return None
    top = max(d for _, d in points)
    start = len(points) - 1
    while start > 0 and points[start - 1][1] >= top - tolerance:
        start -= 1
    if top <= tolerance:
        return None
    if top < 1.0 - tolerance and points[-1][0] - points[start][0] < min_span - tolerance:
        return None
    return points[start][0], top


def budget_reaching(results: Sequence[BudgetResult], planner: str, target: float = 0.9
                    ) -> float | None:  # fmt: skip
    """The smallest budget at which the planner delivers at least ``target`` of the defects."""
    hits = [b for b, d in curve(results, planner) if d >= target]
    return min(hits) if hits else None


def plot_curves(
    results: Sequence[BudgetResult] | Mapping[str, Sequence[BudgetResult]],
    path: Path | str,
    title: str = "Distinct defects delivered",
    min_span: float = 0.0,
) -> Path:
    """Defects delivered against budget, a line per planner, each curve's saturation marked with
    a ring (:func:`saturation` with ``min_span``); a mapping draws one panel per stream (its keys
    the panel titles). PNG at ``path``,
    drawn on matplotlib's Agg canvas (no display, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = dict(results) if isinstance(results, Mapping) else {title: results}
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    figure = Figure(figsize=(5.5 * cols, 4.2 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, (name, group) in zip(axes, panels.items(), strict=False):
        planners = list(dict.fromkeys(r.planner for r in group))
        for k, planner in enumerate(planners):
            points = curve(group, planner)
            if not points:
                continue
            colour = f"C{k % 10}"
            ax.plot([100 * b for b, _ in points], [100 * d for _, d in points], "-o",
                    color=colour, markersize=3, label=planner)  # fmt: skip
            knee = saturation(group, planner, min_span)
            if knee is not None:
                ax.plot([100 * knee[0]], [100 * knee[1]], "o", markersize=11,
                        markerfacecolor="none", markeredgecolor=colour)  # fmt: skip
        ax.set_xlabel("budget (% of the stream's bytes)")
        ax.set_ylabel("distinct defects delivered (%)")
        ax.set_ylim(-3, 103)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
