"""Defect tags: the same defect seen again keeps its name; two defects never share one."""

from __future__ import annotations

import pytest

from vad_inspection.vad.tags import TagBook, box_iou


def test_sightings_within_the_radius_keep_the_tag_and_refine_its_position() -> None:
    book = TagBook(radius_m=0.1)
    first = book.observe(1, 0.7, (10, 10, 5, 5), (1.00, 2.00, 0.0), "map")
    again = book.observe(2, 0.9, (40, 12, 5, 5), (1.04, 2.02, 0.0), "map")  # other viewpoint
    other = book.observe(3, 0.6, (10, 10, 5, 5), (1.30, 2.00, 0.0), "map")  # 0.3 m away
    assert first.tag == again.tag == "D0001" and other.tag == "D0002"
    assert again.sightings == 2 and again.best_score == 0.9 and again.last_score == 0.9
    assert again.first_seen_ns == 1 and again.last_seen_ns == 2
    assert again.position == pytest.approx((1.02, 2.01, 0.0))  # running mean of sightings
    assert [t.tag for t in book.tags()] == ["D0001", "D0002"]


def test_two_regions_of_one_frame_are_two_defects_even_when_close() -> None:
    book = TagBook(radius_m=0.5)
    a = book.observe(1, 0.7, (0, 0, 5, 5), (0.0, 0.0, 0.0), "map")
    b = book.observe(1, 0.7, (9, 0, 5, 5), (0.1, 0.0, 0.0), "map", taken=frozenset({a.tag}))
    assert a.tag != b.tag


def test_without_3d_sightings_associate_by_image_overlap() -> None:
    book = TagBook(min_iou=0.3)
    a = book.observe(1, 0.8, (100, 100, 20, 20))
    moved = book.observe(2, 0.8, (104, 102, 20, 20))  # a slow camera
    far = book.observe(3, 0.8, (300, 100, 20, 20))
    assert moved.tag == a.tag and far.tag != a.tag and moved.position is None
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0


def test_positions_in_another_frame_are_not_compared() -> None:
    book = TagBook(radius_m=1.0)
    a = book.observe(1, 0.7, (0, 0, 5, 5), (0.0, 0.0, 0.0), "map")
    b = book.observe(2, 0.7, (0, 0, 5, 5), (0.0, 0.0, 0.0), "odom")
    assert a.tag != b.tag


def test_a_sighting_cut_by_the_border_barely_moves_the_position() -> None:
    book = TagBook(radius_m=0.1)
    cut = book.observe(1, 0.9, (0, 10, 5, 5), (0.04, 0.0, 0.0), "map", weight=0.05)
    assert cut.position == (0.04, 0.0, 0.0)  # the only estimate there is, at first
    whole = book.observe(2, 0.9, (50, 10, 9, 9), (0.0, 0.0, 0.0), "map")
    assert whole.tag == cut.tag and whole.position[0] == pytest.approx(0.04 * 0.05 / 1.05)
    again = book.observe(3, 0.9, (52, 10, 9, 9), (0.002, 0.0, 0.0), "map")
    assert again.position_weight == pytest.approx(2.05) and again.sightings == 3
