"""The three evaluation settings of the planetary anomaly-detection benchmark, as seeded splits.

The benchmark compares detectors under three test conditions, from easiest to most realistic:

* **Setting 1** -- balanced test set: as many anomalous as normal test images.
* **Setting 2** -- the same normal test images, with anomalies only ``anomaly_ratio`` (5 %) of
  the test set, as on a robot where almost every frame is normal.
* **Setting 3** -- Setting 2, plus anomalies making up ``contamination_ratio`` (5 %) of the
  training set, because nobody can guarantee that a field-collected "normal" set is clean.

How a split is built (deterministic given the dataset's sample order, the seed and the options):

1. Normals and anomalies are each shuffled once with ``numpy.random.default_rng(seed)``. Every
   setting draws from these same permutations, so for one seed the three settings share their
   validation and normal test images and differ only where the definition above says they do.
2. Validation: the first ``round(val_fraction * normals)`` shuffled normals (at least 1 when there
   are >= 3 normals and ``val_fraction > 0``; ``val_fraction=0`` gives none), optionally capped by
   ``max_val``. They are only normal: models calibrate thresholds on them, which a robot can do
   too, whereas a threshold tuned on labelled anomalies could not be set in the field.
3. Setting 1 test: ``n = min(anomalies, half of the normals left after validation,
   max_test_normal)`` normals and the first ``n`` shuffled anomalies. Taking at most half keeps a
   training set at least as large as the test set. The remaining normals train (capped by
   ``max_train``; the rest are left unused).
4. Setting 2 test: the same ``n`` normals and the first ``m = round(n * r / (1 - r))`` shuffled
   anomalies (``r = anomaly_ratio``, ``m >= 1``), so anomalies are ``r`` of the test set.
5. Setting 3: Setting 2's validation and test sets; its training set is Setting 2's plus the next
   ``k = round(c * T / (1 - c))`` shuffled anomalies (``T`` training normals,
   ``c = contamination_ratio``, ``k >= 1``), none of which is in the test set, so they are ``c``
   of the contaminated training set. When fewer than ``k`` anomalies are left, :class:`SplitError`
   is raised rather than contaminating less than asked: a weaker Setting 3 reported under the same
   name would not be comparable. Lowering ``max_train`` lowers ``k``; the error names the largest
   ``max_train`` that works (sets with many normals and few anomalies, like Mastcam, need one).

With ``respect_published_split=True`` (for sets such as MVTec AD that publish a train/test
partition in ``Sample.split``), training and validation images come only from ``"train"``, test
images only from ``"test"`` (``n`` is then ``min(test anomalies, test normals, max_test_normal)``)
and Setting 3's contaminating anomalies only from ``"train"``; a set whose published training
part holds no anomalies (MVTec) therefore has no Setting 3 in that mode, and says so.

Within each role, samples are listed in dataset order (the shuffle chooses, it does not reorder),
so manifests of two seeds diff cleanly. Every split carries ``notes`` saying how its sizes were
decided, and :meth:`Split.write_manifest` records which file went where.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from vad_inspection.data.types import ANOMALOUS, NORMAL, Dataset, Sample

__all__ = [
    "MANIFEST_FIELDS",
    "ROLES",
    "SETTINGS",
    "ManifestRow",
    "Split",
    "SplitError",
    "build_settings",
    "build_split",
]

SETTINGS: tuple[int, ...] = (1, 2, 3)
_SETTING_NAMES = {
    1: "balanced test set",
    2: "test set with few anomalies",
    3: "setting 2 with a contaminated training set",
}
ROLES: tuple[str, ...] = ("train", "val", "test")


class SplitError(ValueError):
    """A split cannot be built as asked; the message names the counts that prevent it."""


@dataclass(frozen=True)
class ManifestRow:
    """One line of a split manifest: which sample plays which role."""

    id: str
    role: str
    label: int
    category: str
    path: str


MANIFEST_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ManifestRow))


@dataclass(frozen=True)
class Split:
    """The images of one setting: train (fit), val (normal only, calibrate), test (measure)."""

    setting: int
    seed: int
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    test: tuple[Sample, ...]
    notes: tuple[str, ...] = ()

    def manifest(self) -> list[ManifestRow]:
        """Every sample with its role, train then val then test, each in dataset order."""
        return [
            ManifestRow(s.id, role, s.label, s.category, str(s.path))
            for role in ROLES
            for s in getattr(self, role)
        ]

    def write_manifest(self, path: Path | str) -> Path:
        """Write the manifest as CSV, or as JSON (with setting, seed and notes) for ``.json``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [asdict(row) for row in self.manifest()]
        if path.suffix.lower() == ".json":
            document = {"setting": self.setting, "seed": self.seed, "notes": list(self.notes)}
            path.write_text(json.dumps({**document, "rows": rows}, indent=2) + "\n", "utf-8")
            return path
        with path.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        return path

    def summary(self) -> str:
        """One log line: counts per role and label, and the anomaly share where there is one."""
        parts = []
        for role in ROLES:
            samples = getattr(self, role)
            anomalous = sum(s.label == ANOMALOUS for s in samples)
            share = f", {anomalous / len(samples):.1%} anomalous" if anomalous else ""
            parts.append(
                f"{role} {len(samples)} ({len(samples) - anomalous} normal, "
                f"{anomalous} anomalous{share})"
            )
        return f"setting {self.setting} (seed {self.seed}): " + "; ".join(parts)


@dataclass(frozen=True)
class _Options:
    anomaly_ratio: float
    contamination_ratio: float
    val_fraction: float
    max_train: int | None
    max_val: int | None
    max_test_normal: int | None
    respect_published_split: bool

    def __post_init__(self) -> None:
        for name in ("anomaly_ratio", "contamination_ratio"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise SplitError(f"{name} must be in (0, 1); got {value}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise SplitError(f"val_fraction must be in [0, 1); got {self.val_fraction}")
        for name in ("max_train", "max_test_normal"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SplitError(f"{name} must be at least 1 (or None for no cap); got {value}")
        if self.max_val is not None and self.max_val < 0:
            raise SplitError(f"max_val must be at least 0 (or None for no cap); got {self.max_val}")


@dataclass(frozen=True)
class _Plan:
    """What all settings of one seed share; indices into the dataset, pools in draw order."""

    val: tuple[int, ...]
    test_normal: tuple[int, ...]
    train_normal: tuple[int, ...]
    test_anomalies: tuple[int, ...]
    train_anomalies: tuple[int, ...]
    notes: tuple[str, ...]


def build_split(
    dataset: Dataset,
    setting: int,
    *,
    seed: int = 0,
    anomaly_ratio: float = 0.05,
    contamination_ratio: float = 0.05,
    val_fraction: float = 0.1,
    max_train: int | None = None,
    max_val: int | None = None,
    max_test_normal: int | None = None,
    respect_published_split: bool = False,
) -> Split:
    """The train/val/test split of ``dataset`` for benchmark ``setting`` 1, 2 or 3.

    See the module docstring for the rules; raises :class:`SplitError` when they cannot be met.
    """
    if setting not in SETTINGS:
        known = ", ".join(f"{k} ({name})" for k, name in _SETTING_NAMES.items())
        raise SplitError(f"unknown setting {setting!r}; the settings are {known}")
    options = _Options(
        anomaly_ratio,
        contamination_ratio,
        val_fraction,
        max_train,
        max_val,
        max_test_normal,
        respect_published_split,
    )
    plan = _plan(dataset, seed, options)
    notes = list(plan.notes)
    n = len(plan.test_normal)

    m = n if setting == 1 else _count_for_share(n, anomaly_ratio)
    if m > len(plan.test_anomalies):
        raise SplitError(
            f"{dataset.name}: setting {setting} needs {m} anomalous test images "
            f"({anomaly_ratio:.1%} of a test set with {n} normals) but only "
            f"{len(plan.test_anomalies)} are available; lower anomaly_ratio"
        )
    test_anomalies = plan.test_anomalies[:m]
    notes.append(f"test: {n} normal + {m} anomalous ({m / (n + m):.1%} anomalous)")

    train = plan.train_normal
    if setting == 3:
        contamination = _contamination(dataset.name, plan, test_anomalies, contamination_ratio)
        train += contamination
        notes.append(
            f"train contaminated with {len(contamination)} anomalies not in the test set "
            f"({len(contamination) / len(train):.1%} of {len(train)}; "
            f"target {contamination_ratio:.1%})"
        )
    return Split(
        setting=setting,
        seed=seed,
        train=_samples(dataset, train),
        val=_samples(dataset, plan.val),
        test=_samples(dataset, plan.test_normal + test_anomalies),
        notes=tuple(notes),
    )


def build_settings(
    dataset: Dataset, settings: Iterable[int] = SETTINGS, **options: Any
) -> dict[int, Split]:
    """:func:`build_split` for each of ``settings`` with the same seed and options."""
    return {setting: build_split(dataset, setting, **options) for setting in settings}


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


def _plan(dataset: Dataset, seed: int, options: _Options) -> _Plan:
    labels = _checked_labels(dataset)
    rng = np.random.default_rng(seed)
    if options.respect_published_split:
        return _published_plan(dataset, labels, rng, options)
    return _pooled_plan(dataset, labels, rng, options)


def _checked_labels(dataset: Dataset) -> np.ndarray:
    """Labels as an array, after checking what every split relies on: ids, labels, both classes."""
    ids = [s.id for s in dataset.samples]
    if len(set(ids)) != len(ids):
        duplicates = sorted(i for i, count in Counter(ids).items() if count > 1)
        raise SplitError(
            f"{dataset.name}: sample ids must be unique for manifests to mean anything; "
            f"{len(duplicates)} ids repeat, e.g. {duplicates[0]!r}"
        )
    labels = np.array([s.label for s in dataset.samples], dtype=np.int64)
    unknown = np.flatnonzero((labels != NORMAL) & (labels != ANOMALOUS))
    if unknown.size:
        raise SplitError(
            f"{dataset.name}: labels must be {NORMAL} (normal) or {ANOMALOUS} (anomalous); "
            f"{unknown.size} samples are not, e.g. {dataset.samples[unknown[0]].id!r}"
        )
    n_normal = int((labels == NORMAL).sum())
    n_anomalous = len(labels) - n_normal
    if n_normal == 0:
        raise SplitError(
            f"{dataset.name}: no normal samples (0 of {len(labels)}); every setting trains and "
            "tests on normal images"
        )
    if n_anomalous == 0:
        raise SplitError(
            f"{dataset.name}: no anomalous samples (0 of {len(labels)}); every setting needs "
            "anomalies in its test set"
        )
    return labels


def _pooled_plan(
    dataset: Dataset, labels: np.ndarray, rng: np.random.Generator, options: _Options
) -> _Plan:
    """Draw val, test and train from one pool of normals and one pool of anomalies."""
    normals = _shuffled(labels == NORMAL, rng)
    anomalies = _shuffled(labels == ANOMALOUS, rng)
    val, rest, notes = _take_val(normals, options)
    n = min(len(anomalies), len(rest) // 2, options.max_test_normal or len(rest))
    if n < 1:
        raise SplitError(
            f"{dataset.name}: too few normal images: {len(normals)} normals, {len(val)} held out "
            f"for validation, leaves {len(rest)}; need at least 2 (one to train, one to test)"
        )
    normals_left = f"half of the {len(rest)} normals left after validation"
    notes.append(_test_size_note(n, len(anomalies), normals_left, options.max_test_normal))
    train, train_note = _capped_train(rest[n:], options.max_train)
    return _Plan(val, rest[:n], train, anomalies, anomalies, (*notes, train_note))


def _published_plan(
    dataset: Dataset, labels: np.ndarray, rng: np.random.Generator, options: _Options
) -> _Plan:
    """Train and val from the published ``"train"`` part, test from the ``"test"`` part."""
    part = np.array([s.split for s in dataset.samples], dtype=object)
    is_train, is_test = part == "train", part == "test"
    ignored = len(labels) - int(is_train.sum() + is_test.sum())
    if ignored == len(labels):
        raise SplitError(
            f"{dataset.name}: respect_published_split=True but none of its {len(labels)} samples "
            "declares split 'train' or 'test'"
        )
    train_normals = _shuffled(is_train & (labels == NORMAL), rng)
    test_normals = _shuffled(is_test & (labels == NORMAL), rng)
    train_anomalies = _shuffled(is_train & (labels == ANOMALOUS), rng)
    test_anomalies = _shuffled(is_test & (labels == ANOMALOUS), rng)
    counts = (
        f"published train: {len(train_normals)} normal + {len(train_anomalies)} anomalous, "
        f"test: {len(test_normals)} normal + {len(test_anomalies)} anomalous"
    )
    val, rest, notes = _take_val(train_normals, options)
    if not rest or not test_normals or not test_anomalies:
        raise SplitError(
            f"{dataset.name}: too few images for the published split ({counts}; {len(val)} "
            "training normals held out for validation); need at least one training normal, "
            "one test normal and one test anomaly"
        )
    n = min(len(test_anomalies), len(test_normals), options.max_test_normal or len(test_normals))
    notes.insert(0, counts + (f"; {ignored} samples with another split ignored" if ignored else ""))
    test_part = f"the {len(test_normals)} published test normals"
    notes.append(_test_size_note(n, len(test_anomalies), test_part, options.max_test_normal))
    train, train_note = _capped_train(rest, options.max_train)
    return _Plan(
        val, test_normals[:n], train, test_anomalies, train_anomalies, (*notes, train_note)
    )


def _shuffled(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(i) for i in rng.permutation(np.flatnonzero(mask)))


def _take_val(
    normals: tuple[int, ...], options: _Options
) -> tuple[tuple[int, ...], tuple[int, ...], list[str]]:
    """Split off the validation normals; returns (val, rest, notes)."""
    count = round(options.val_fraction * len(normals))
    if options.val_fraction > 0 and len(normals) >= 3:
        count = max(1, count)
    if options.max_val is not None:
        count = min(count, options.max_val)
    note = f"val: {count} of {len(normals)} normals (val_fraction {options.val_fraction:g})"
    return normals[:count], normals[count:], [note]


def _test_size_note(n: int, anomalies: int, normal_limit: str, cap: int | None) -> str:
    """Say which count limited ``n`` (Setting 1's balanced size), so small test sets explain
    themselves."""
    if cap is not None and n == cap:
        reason = f"max_test_normal={cap}"
    elif n == anomalies:
        reason = f"the {anomalies} available anomalies"
    else:
        reason = normal_limit
    return f"normal test images: {n}, limited by {reason}"


def _capped_train(normals: tuple[int, ...], cap: int | None) -> tuple[tuple[int, ...], str]:
    if cap is None or len(normals) <= cap:
        return normals, f"train: {len(normals)} normals"
    return normals[:cap], f"train: {cap} of {len(normals)} normals (max_train={cap})"


def _count_for_share(others: int, ratio: float) -> int:
    """How many items make up ``ratio`` of a set that also holds ``others`` items (at least 1)."""
    return max(1, round(others * ratio / (1.0 - ratio)))


def _contamination(
    name: str, plan: _Plan, test_anomalies: Sequence[int], ratio: float
) -> tuple[int, ...]:
    """The anomalies mixed into Setting 3's training set: next in draw order, none in test."""
    in_test = set(test_anomalies)
    candidates = [i for i in plan.train_anomalies if i not in in_test]
    k = _count_for_share(len(plan.train_normal), ratio)
    if k > len(candidates):
        available = len(candidates)
        fix = (
            f"pass max_train={_largest_train(available, ratio)} (the most training normals "
            f"{available} anomalies contaminate at {ratio:.1%}) or a lower contamination_ratio"
            if available
            else "no anomaly is left for training, so run settings 1 and 2 only"
        )
        raise SplitError(
            f"{name}: setting 3 needs {k} contaminating anomalies ({ratio:.1%} of a training set "
            f"of {len(plan.train_normal)} normals + {k}) but only {available} anomalies "
            f"outside the test set can go to training ({len(in_test)} are in the test set); " + fix
        )
    return tuple(candidates[:k])


def _largest_train(anomalies: int, ratio: float) -> int:
    """The most training normals that ``anomalies`` (>= 1) can be ``ratio`` of, once rounded."""
    normals = int((anomalies + 0.5) * (1.0 - ratio) / ratio) + 1
    while _count_for_share(normals, ratio) > anomalies:
        normals -= 1
    return normals


def _samples(dataset: Dataset, indices: Iterable[int]) -> tuple[Sample, ...]:
    return tuple(dataset.samples[i] for i in sorted(indices))
