"""A whole comparison: several models, datasets and settings, written out as the papers show it.

Produces, in one output folder: ``results.csv`` and ``results.md`` (one row per model and dataset,
columns per setting and metric), ``curves_<dataset>.png`` (ROC and PR per setting), and the split
manifests ``splits/<dataset>_s<k>.csv`` so anyone can see which file went where.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from vad_inspection.data.types import Dataset
from vad_inspection.eval.report import Curve, ResultRow, Table, plot_curves, results_table
from vad_inspection.eval.runner import EvalConfig, evaluate
from vad_inspection.eval.settings import build_settings

TABLE_METRICS: tuple[str, ...] = (
    "image_auroc",
    "image_auc_pr",
    "image_f1",
    "image_f1_cal",
    "pixel_auroc",
    "aupro",
    "dice",
    "latency_ms",
)


@dataclass(frozen=True)
class SuiteEntry:
    """One dataset of a comparison, with the input size its images are scored at.

    ``extra_models`` run on this dataset only, after the suite's own: a model worth running where
    it is cheap (a VAE on 64 px tiles) need not be paid for on every dataset.
    """

    dataset: Dataset
    size: int
    split_options: dict[str, object] = field(default_factory=dict)
    extra_models: tuple[str, ...] = ()


@dataclass(frozen=True)
class SuiteResult:
    rows: tuple[ResultRow, ...]
    table: Table
    outputs: tuple[Path, ...]


def run_suite(
    entries: Sequence[SuiteEntry],
    models: Sequence[str],
    out_dir: Path,
    *,
    settings: Sequence[int] = (1, 2, 3),
    seed: int = 0,
    config: EvalConfig | None = None,
    log=print,
) -> SuiteResult:
    """Evaluate every model on every dataset under every setting and write the report."""
    config = config or EvalConfig()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "splits").mkdir(exist_ok=True)
    rows: list[ResultRow] = []
    outputs: list[Path] = []
    for entry in entries:
        name = entry.dataset.name
        splits = build_settings(entry.dataset, settings, seed=seed, **entry.split_options)
        curves: list[Curve] = []
        for setting, split in splits.items():
            manifest = out_dir / "splits" / f"{name}_s{setting}.csv"
            split.write_manifest(manifest)
            outputs.append(manifest)
            log(f"[{name}] setting {setting}: {split.summary()}")
            for model in (*models, *(m for m in entry.extra_models if m not in models)):
                run_config = replace(config, size=entry.size)
                outcome = evaluate(model, name, split, run_config)
                rows.append(outcome.row)
                curves.append(outcome.curve)
                auroc = outcome.row.metrics["image_auroc"]
                log(f"[{name}] setting {setting} {model}: image AUROC {auroc:.3f}")
        plot = out_dir / f"curves_{name}.png"
        plot_curves(curves, plot, title=f"{name}: ROC and PR per setting")
        outputs.append(plot)
    table = results_table(rows, TABLE_METRICS)
    csv_path, md_path = out_dir / "results.csv", out_dir / "results.md"
    table.to_csv(csv_path)
    md_path.write_text(table.to_markdown() + "\n", encoding="utf-8")
    outputs += [csv_path, md_path]
    return SuiteResult(rows=tuple(rows), table=table, outputs=tuple(outputs))
