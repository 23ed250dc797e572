"""The three benchmark settings: sizes, ratios, disjointness, determinism, manifests, errors."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from vad_inspection.data.types import ANOMALOUS, NORMAL, Dataset, Sample
from vad_inspection.eval.settings import (
    MANIFEST_FIELDS,
    Split,
    SplitError,
    build_settings,
    build_split,
)


def _pixels() -> np.ndarray:
    return np.zeros((4, 4, 1), dtype=np.uint8)


def _sample(index: int, label: int, split: str | None = None) -> Sample:
    category = "good" if label == NORMAL else "crack"
    return Sample(
        id=f"img{index:04d}",
        label=label,
        category=category,
        path=Path(f"/data/{category}/img{index:04d}.png"),
        load_image=_pixels,
        split=split,
    )


def make_dataset(n_normal: int, n_anomalous: int, name: str = "toy") -> Dataset:
    """Every 4th image anomalous while both labels last, so roles cannot follow the file order."""
    normal, anomalous = [NORMAL] * n_normal, [ANOMALOUS] * n_anomalous
    labels = []
    while normal or anomalous:
        take = anomalous if (len(labels) % 4 == 0 and anomalous) or not normal else normal
        labels.append(take.pop())
    samples = tuple(_sample(i, label) for i, label in enumerate(labels))
    return Dataset(name, Path("/data"), samples, channels=1, has_masks=False)


def make_published(
    train_normal: int, train_anomalous: int, test_normal: int, test_anomalous: int
) -> Dataset:
    groups = [
        (train_normal, NORMAL, "train"),
        (train_anomalous, ANOMALOUS, "train"),
        (test_normal, NORMAL, "test"),
        (test_anomalous, ANOMALOUS, "test"),
    ]
    samples = []
    for count, label, split in groups:
        samples += [_sample(len(samples) + i, label, split) for i in range(count)]
    return Dataset("published", Path("/data"), tuple(samples), channels=1, has_masks=False)


def ids(samples: tuple[Sample, ...]) -> set[str]:
    return {s.id for s in samples}


def by_label(samples: tuple[Sample, ...], label: int) -> set[str]:
    return {s.id for s in samples if s.label == label}


# 1000 normals, 300 anomalies: val 100, n = min(300, 900 // 2) = 300, train 600.
BIG = make_dataset(1000, 300)


def test_the_toy_dataset_mixes_labels() -> None:
    labels = [s.label for s in BIG.samples[:8]]
    assert labels == [ANOMALOUS, NORMAL, NORMAL, NORMAL] * 2
    assert len(BIG.normal) == 1000 and len(BIG.anomalous) == 300


@pytest.mark.parametrize("setting", [1, 2, 3])
def test_same_seed_gives_the_same_split_and_another_seed_a_different_one(setting: int) -> None:
    first = build_split(BIG, setting, seed=7)
    again = build_split(BIG, setting, seed=7)
    other = build_split(BIG, setting, seed=8)
    assert first.manifest() == again.manifest()
    assert ids(first.test) != ids(other.test)
    assert ids(first.val) != ids(other.val)
    assert ids(first.train) != ids(other.train)


@pytest.mark.parametrize("setting", [1, 2, 3])
def test_roles_are_disjoint_and_val_is_only_normal(setting: int) -> None:
    split = build_split(BIG, setting, seed=3)
    train, val, test = ids(split.train), ids(split.val), ids(split.test)
    assert not train & val and not train & test and not val & test
    assert len(train) == len(split.train) and len(test) == len(split.test)
    assert split.val and all(s.label == NORMAL for s in split.val)


def test_val_takes_the_fraction_of_normals_at_least_one_and_none_on_request() -> None:
    assert len(build_split(BIG, 1).val) == 100
    assert len(build_split(BIG, 1, val_fraction=0.25).val) == 250
    assert len(build_split(make_dataset(3, 3), 1).val) == 1  # round(0.3) = 0, raised to 1
    assert len(build_split(make_dataset(2, 3), 1).val) == 0  # fewer than 3 normals: none
    assert build_split(BIG, 1, val_fraction=0.0).val == ()
    assert len(build_split(BIG, 1, max_val=7).val) == 7


def test_setting_1_is_balanced_and_limited_by_anomalies_or_half_the_normals() -> None:
    split = build_split(BIG, 1)
    assert len(by_label(split.test, NORMAL)) == len(by_label(split.test, ANOMALOUS)) == 300
    assert len(split.train) == 1000 - 100 - 300
    assert all(s.label == NORMAL for s in split.train)

    few_normals = build_split(make_dataset(50, 100), 1)  # val 5, 45 left: n = 22
    assert len(by_label(few_normals.test, NORMAL)) == 22
    assert len(by_label(few_normals.test, ANOMALOUS)) == 22
    assert len(few_normals.train) == 45 - 22
    assert any("limited by half of the 45 normals" in note for note in few_normals.notes)


@pytest.mark.parametrize(("ratio", "expected"), [(0.05, 16), (0.2, 75), (0.5, 300)])
def test_setting_2_has_the_anomaly_ratio_computed_from_counts(ratio: float, expected: int) -> None:
    split = build_split(BIG, 2, anomaly_ratio=ratio)
    normal, anomalous = len(by_label(split.test, NORMAL)), len(by_label(split.test, ANOMALOUS))
    assert normal == 300
    assert anomalous == expected == round(300 * ratio / (1 - ratio))
    assert abs(anomalous / (normal + anomalous) - ratio) <= 0.5 / (normal + anomalous)


def test_setting_2_keeps_at_least_one_anomaly() -> None:
    split = build_split(make_dataset(20, 5), 2)  # n = 5, 5 * 0.05 / 0.95 rounds to 0
    assert len(by_label(split.test, ANOMALOUS)) == 1


@pytest.mark.parametrize(("ratio", "expected"), [(0.05, 32), (0.2, 150)])
def test_setting_3_contaminates_train_with_the_ratio(ratio: float, expected: int) -> None:
    split = build_split(BIG, 3, contamination_ratio=ratio)
    normal, anomalous = len(by_label(split.train, NORMAL)), len(by_label(split.train, ANOMALOUS))
    assert normal == 600
    assert anomalous == expected == round(ratio * 600 / (1 - ratio))
    assert abs(anomalous / (normal + anomalous) - ratio) <= 0.5 / (normal + anomalous)


def test_contaminating_anomalies_are_not_in_the_test_set() -> None:
    # Setting 1 tests all 40 anomalies, Setting 2 only 2; Setting 3 needs 17 of the other 38.
    dataset = make_dataset(400, 40)
    for seed in range(5):
        split = build_split(dataset, 3, seed=seed)
        assert by_label(split.train, ANOMALOUS)
        assert not by_label(split.train, ANOMALOUS) & by_label(split.test, ANOMALOUS)


def test_settings_share_normal_test_images_val_and_training_normals() -> None:
    splits = build_settings(BIG, seed=11)
    assert sorted(splits) == [1, 2, 3]
    s1, s2, s3 = splits[1], splits[2], splits[3]
    assert by_label(s2.test, NORMAL) == by_label(s1.test, NORMAL) == by_label(s3.test, NORMAL)
    assert ids(s1.val) == ids(s2.val) == ids(s3.val)
    assert s2.test == s3.test
    assert ids(s1.train) == ids(s2.train) == by_label(s3.train, NORMAL)
    assert by_label(s2.test, ANOMALOUS) < by_label(s1.test, ANOMALOUS)


def test_caps_subsample_without_moving_the_test_set() -> None:
    free = build_split(BIG, 3)
    capped = build_split(BIG, 3, max_train=100)
    assert len(by_label(capped.train, NORMAL)) == 100
    assert len(by_label(capped.train, ANOMALOUS)) == round(0.05 * 100 / 0.95)
    assert by_label(capped.train, NORMAL) < by_label(free.train, NORMAL)
    assert capped.test == free.test and capped.val == free.val
    small_test = build_split(BIG, 1, max_test_normal=50)
    assert len(by_label(small_test.test, NORMAL)) == len(by_label(small_test.test, ANOMALOUS)) == 50
    assert any("max_test_normal=50" in note for note in small_test.notes)


def test_roles_are_listed_in_dataset_order() -> None:
    split = build_split(BIG, 3, seed=5)
    position = {s.id: i for i, s in enumerate(BIG.samples)}
    for role in (split.train, split.val, split.test):
        order = [position[s.id] for s in role]
        assert order == sorted(order)


def test_published_split_is_respected() -> None:
    dataset = make_published(
        train_normal=100, train_anomalous=10, test_normal=30, test_anomalous=60
    )
    splits = build_settings(dataset, respect_published_split=True)
    for split in splits.values():
        assert {s.split for s in split.train} == {"train"}
        assert {s.split for s in split.val} == {"train"}
        assert {s.split for s in split.test} == {"test"}
    s1 = splits[1]
    assert len(by_label(s1.test, NORMAL)) == len(by_label(s1.test, ANOMALOUS)) == 30
    assert len(s1.val) == 10 and len(s1.train) == 90
    assert len(by_label(splits[3].train, ANOMALOUS)) == round(0.05 * 90 / 0.95)
    few_anomalies = make_published(100, 0, test_normal=30, test_anomalous=10)
    s1 = build_split(few_anomalies, 1, respect_published_split=True)
    assert len(by_label(s1.test, NORMAL)) == len(by_label(s1.test, ANOMALOUS)) == 10
    # Without the option, the same data is pooled and the published parts get mixed.
    pooled = build_split(dataset, 1)
    assert {s.split for s in pooled.test} == {"train", "test"}


def test_published_split_without_training_anomalies_has_no_setting_3() -> None:
    mvtec_like = make_published(
        train_normal=100, train_anomalous=0, test_normal=30, test_anomalous=60
    )
    assert build_split(mvtec_like, 2, respect_published_split=True).test
    with pytest.raises(SplitError, match=r"needs 5 contaminating .* only 0 .* settings 1 and 2"):
        build_split(mvtec_like, 3, respect_published_split=True)


def test_setting_3_short_of_anomalies_names_a_max_train_that_works() -> None:
    # Many normals, few anomalies (like Mastcam): val 100, n = 20, m = 1, train 880, k = 46.
    scarce = make_dataset(1000, 20)
    with pytest.raises(SplitError, match=r"needs 46 .* only 19 .*") as error:
        build_split(scarce, 3)
    assert "pass max_train=370 " in str(error.value)
    split = build_split(scarce, 3, max_train=370)
    assert len(by_label(split.train, ANOMALOUS)) == 19
    with pytest.raises(SplitError, match=r"needs 20 .* only 19"):
        build_split(scarce, 3, max_train=371)


def test_published_split_requires_declared_parts() -> None:
    with pytest.raises(SplitError, match=r"none of its 40 samples declares split"):
        build_split(make_dataset(30, 10), 1, respect_published_split=True)


def test_manifest_csv_round_trip(tmp_path: Path) -> None:
    split = build_split(make_dataset(60, 20), 3, seed=2)
    path = split.write_manifest(tmp_path / "sub" / "toy_s3.csv")
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        assert (
            tuple(reader.fieldnames or ())
            == MANIFEST_FIELDS
            == ("id", "role", "label", "category", "path")
        )
        back = list(reader)
    expected = [{k: str(v) for k, v in asdict(row).items()} for row in split.manifest()]
    assert back == expected
    assert len(back) == len(split.train) + len(split.val) + len(split.test)
    roles = [row["role"] for row in back]
    assert roles == ["train"] * len(split.train) + ["val"] * len(split.val) + ["test"] * len(
        split.test
    )


def test_manifest_json_keeps_setting_seed_and_notes(tmp_path: Path) -> None:
    split = build_split(make_dataset(60, 20), 2, seed=4)
    document = json.loads(split.write_manifest(tmp_path / "toy.json").read_text("utf-8"))
    assert (document["setting"], document["seed"]) == (2, 4)
    assert document["notes"] == list(split.notes)
    assert document["rows"] == [asdict(row) for row in split.manifest()]


def test_summary_counts_roles_and_labels() -> None:
    summary = build_split(BIG, 2).summary()
    assert "\n" not in summary
    assert "setting 2 (seed 0)" in summary
    assert "train 600 (600 normal, 0 anomalous)" in summary
    assert "val 100 (100 normal, 0 anomalous)" in summary
    assert "test 316 (300 normal, 16 anomalous, 5.1% anomalous)" in summary


@pytest.mark.parametrize(
    ("dataset", "setting", "options", "message"),
    [
        (BIG, 4, {}, r"unknown setting 4; the settings are 1 \(balanced"),
        (make_dataset(0, 5), 1, {}, r"no normal samples \(0 of 5\)"),
        (make_dataset(5, 0), 1, {}, r"no anomalous samples \(0 of 5\)"),
        (make_dataset(1, 5), 1, {}, r"too few normal images: 1 normals, 0 held out .* leaves 1"),
        (make_dataset(100, 2), 3, {}, r"needs 5 contaminating anomalies .* only 1 anomalies"),
        (make_dataset(20, 5), 2, {"anomaly_ratio": 0.9}, r"needs 45 anomalous test images"),
        (BIG, 1, {"anomaly_ratio": 1.0}, r"anomaly_ratio must be in \(0, 1\); got 1.0"),
        (BIG, 1, {"max_train": 0}, r"max_train must be at least 1"),
    ],
)
def test_errors_name_the_counts(
    dataset: Dataset, setting: int, options: dict[str, object], message: str
) -> None:
    with pytest.raises(SplitError, match=message):
        build_split(dataset, setting, **options)  # type: ignore[arg-type]


def test_duplicate_ids_are_refused() -> None:
    twice = BIG.subset([*BIG.samples, BIG.samples[3]])
    with pytest.raises(SplitError, match=r"1 ids repeat, e.g. 'img0003'"):
        build_split(twice, 1)


def test_split_is_a_frozen_value() -> None:
    split = build_split(make_dataset(30, 10), 1)
    assert isinstance(split, Split)
    with pytest.raises(AttributeError):
        split.seed = 1  # type: ignore[misc]
