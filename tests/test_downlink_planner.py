"""The downlink planner and its baselines on hand-made candidates whose best plan is known, and the
evaluation's figures on a tiny stream worked out by hand."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from vad_inspection.downlink.evaluate import (
    StreamItem,
    budget_reaching,
    evaluate,
    plot_curves,
    run_planner,
    saturation,
    stream_bytes,
)
from vad_inspection.downlink.planner import (
    FIDELITY,
    Candidate,
    Choice,
    FifoPlanner,
    Planner,
    RandomPlanner,
    ScoreOnlyPlanner,
    Window,
    forms_for,
    oversized,
    signature,
)

FORMS = {"full": 10_000, "jpeg90": 3_000, "jpeg50": 1_000, "crop": 400, "crop+jpeg50": 1_400,
         "meta": 100}  # fmt: skip
TWO = {"jpeg90": 1_000, "jpeg50": 500}  # a duplicate may still go as jpeg50


def cand(
    seq: int,
    score: float,
    forms: Mapping[str, int] | None = None,
    *,
    flagged: bool = True,
    tag: str = "",
    sig: np.ndarray | None = None,
    priority: str = "normal",
    stamp_ns: int | None = None,
) -> Candidate:
    return Candidate(
        seq=seq, stamp_ns=seq if stamp_ns is None else stamp_ns, score=score, tag=tag,
        signature=sig, priority=priority, forms=dict(forms or {"jpeg90": 1_000}), flagged=flagged,
    )  # fmt: skip


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, np.float64)
    return v / np.linalg.norm(v)


def seqs(plan: list[Choice]) -> list[int]:
    return [c.seq for c in plan]


# --- the planner ------------------------------------------------------------------------------


def test_plan_orders_by_value_per_byte_and_credits_the_value_rule() -> None:
    candidates = [
        cand(0, 3.0, {"jpeg90": 1_000}),  # interest 1.0, 0.95 / 1000 per byte
        cand(1, 2.0, {"jpeg90": 100}),  # interest 5/6: the most per byte
        cand(2, 1.0, {"jpeg90": 5_000}),  # interest 2/3: the least
    ]
    plan = Planner().plan(candidates, Window(start_ns=2, bytes=10_000))
    assert seqs(plan) == [1, 0, 2]
    assert [c.form for c in plan] == ["jpeg90"] * 3
    # ages of 0-2 ns against an hour's scale change the value by < 1e-12
    assert [c.value for c in plan] == pytest.approx([5 / 6 * 0.95, 0.95, 2 / 3 * 0.95])


def test_a_flagged_frame_outranks_a_passed_one_and_ranks_decide_within_each() -> None:
    candidates = [cand(0, 9.0, FORMS, flagged=False), cand(1, 1.0, FORMS), cand(2, 2.0, FORMS)]
    plan = Planner().plan(candidates, Window(2, 10_000))
    assert [(c.seq, c.form) for c in plan] == [(2, "crop+jpeg50"), (1, "crop+jpeg50"), (0, "crop")]


def test_a_tag_is_counted_once_in_a_window_and_across_windows() -> None:
    candidates = [cand(0, 3.0, TWO, tag="d1"), cand(1, 2.5, TWO, tag="d1"),
                  cand(2, 1.0, TWO, tag="d2")]  # fmt: skip
    plan = Planner().plan(candidates, Window(2, 2_000))
    assert seqs(plan) == [0, 2]  # the second frame of d1 gives way to the new d2
    assert ScoreOnlyPlanner(form_rule=True).plan(candidates, Window(2, 2_000)) != plan

    planner = Planner()
    assert seqs(planner.plan(candidates, Window(2, 1_000))) == [0]
    assert seqs(planner.plan(candidates, Window(3, 1_000))) == [2]  # 0 is not offered again
    assert planner.sent_tags == {"d1", "d2"}


def test_a_near_duplicate_signature_gives_way_to_a_new_view() -> None:
    base = unit(1, 0, 0, 0)
    near = unit(1, 0.2, 0, 0)  # cosine distance 0.02 < 0.1
    far = unit(1, 0.5, 0, 0)  # cosine distance 0.106 > 0.1: a new view
    candidates = [cand(0, 3.0, TWO, sig=base), cand(1, 2.0, TWO, sig=near),
                  cand(2, 1.0, TWO, sig=far)]  # fmt: skip
    assert seqs(Planner().plan(candidates, Window(2, 2_000))) == [0, 2]
    plan = Planner().plan(candidates[:2], Window(2, 2_000))  # room for both
    assert [(c.seq, c.form) for c in plan] == [(0, "jpeg90"), (1, "jpeg50")]


def test_a_duplicate_of_a_defect_goes_in_a_routine_form() -> None:
    candidates = [cand(0, 3.0, FORMS, tag="d1"), cand(1, 2.0, FORMS, tag="d1")]
    plan = Planner().plan(candidates, Window(2, 100_000))
    assert [(c.seq, c.form) for c in plan] == [(0, "crop+jpeg50"), (1, "crop")]


def test_expedited_goes_before_normal_before_bulk_whatever_the_value() -> None:
    candidates = [
        cand(0, 9.0, FORMS, priority="bulk"),
        cand(1, 5.0, FORMS, priority="normal"),
        cand(2, 0.1, FORMS, flagged=False, priority="expedited"),
        cand(3, 4.0, FORMS, priority="expedited"),
    ]
    plan = Planner().plan(candidates, Window(3, 10_000))
    assert seqs(plan) == [3, 2, 1, 0]


def test_older_frames_win_among_equals() -> None:
    hour = 3_600_000_000_000
    candidates = [cand(0, 1.0, tag="a", stamp_ns=hour), cand(1, 1.0, tag="b", stamp_ns=0)]
    plan = Planner().plan(candidates, Window(hour, 1_000))
    assert seqs(plan) == [1]
    assert plan[0].value == pytest.approx(0.875 * 0.95 * 1.1)  # tied ranks, full age bonus


def test_the_form_rule_by_value() -> None:
    flagged, routine = cand(0, 2.0, FORMS), cand(1, 1.0, FORMS, flagged=False)
    no_crop = {k: v for k, v in FORMS.items() if "crop" not in k}
    plain = cand(2, 0.5, no_crop, flagged=False)
    plan = Planner().plan([flagged, routine, plain], Window(2, 100_000))
    assert {c.seq: c.form for c in plan} == {0: "crop+jpeg50", 1: "crop", 2: "jpeg50"}
    # too little room for a high-fidelity form: the flagged frame goes in the best that fits
    assert [(c.seq, c.form) for c in Planner().plan([flagged], Window(2, 1_200))] == [(0, "crop")]
    # only metadata fits
    assert [(c.seq, c.form) for c in Planner().plan([routine], Window(2, 150))] == [(1, "meta")]


def test_metadata_sent_once_then_only_upgrades() -> None:
    planner = Planner()
    frame = cand(0, 1.0, FORMS, flagged=False)
    assert [c.form for c in planner.plan([frame], Window(1, 150))] == ["meta"]
    assert planner.plan([frame], Window(2, 150)) == []  # not the same record again
    assert [c.form for c in planner.plan([frame], Window(3, 1_000))] == ["crop"]
    assert planner.delivered == {0} and planner.meta_sent == {0}


@pytest.mark.parametrize("budget", [0, 99, 1_000, 2_345, 7_777, 50_000])
def test_no_planner_exceeds_the_window(budget: int) -> None:
    rng = np.random.default_rng(3)
    candidates = []
    for i in range(40):
        full = int(rng.integers(500, 8_000))
        forms = {"full": full, "jpeg90": full // 4, "jpeg50": full // 10, "meta": 100}
        if rng.random() < 0.5:
            forms |= {"crop": 150, "crop+jpeg50": 150 + full // 10}
        candidates.append(cand(i, float(rng.normal()), forms, flagged=bool(rng.random() < 0.3),
                               tag=f"t{i % 7}" if i % 3 == 0 else "",
                               sig=rng.normal(size=16)))  # fmt: skip
    window = Window(40, budget)
    for planner in (Planner(), FifoPlanner(), RandomPlanner(1), ScoreOnlyPlanner(),
                    ScoreOnlyPlanner(form_rule=True)):  # fmt: skip
        plan = planner.plan(candidates, window)
        assert sum(c.bytes for c in plan) <= budget, planner.name
        assert len(set(seqs(plan))) == len(plan), planner.name
        by_seq = {c.seq: c for c in candidates}
        assert all(by_seq[c.seq].forms[c.form] == c.bytes for c in plan), planner.name


def test_an_item_larger_than_the_window_is_never_chosen() -> None:
    big = cand(0, 9.0, {"full": 5_000}, stamp_ns=0)
    small = [cand(i, 1.0, {"full": 400, "jpeg90": 300}, stamp_ns=i) for i in (1, 2)]
    window = Window(2, 1_000)
    assert oversized([big, *small], window) == [0]
    for planner in (Planner(), FifoPlanner(), RandomPlanner(0), ScoreOnlyPlanner(),
                    ScoreOnlyPlanner(form_rule=True)):  # fmt: skip
        plan = planner.plan([big, *small], window)
        assert 0 not in seqs(plan) and plan, planner.name
    assert seqs(FifoPlanner().plan([big, *small], window)) == [1, 2]  # skipped, not blocking


# --- the baselines ----------------------------------------------------------------------------


def test_fifo_sends_the_oldest_full_frames_until_one_does_not_fit() -> None:
    candidates = [cand(2, 9.0, {"full": 100, "jpeg50": 10}, stamp_ns=30),
                  cand(0, 0.0, {"full": 300, "jpeg50": 10}, stamp_ns=10),
                  cand(1, 0.0, {"full": 500, "jpeg50": 10}, stamp_ns=20)]  # fmt: skip
    plan = FifoPlanner().plan(candidates, Window(30, 700))
    assert [(c.seq, c.form, c.bytes) for c in plan] == [(0, "full", 300)]  # 500 blocks the 100
    planner = FifoPlanner()
    assert seqs(planner.plan(candidates, Window(30, 900))) == [0, 1, 2]
    assert planner.plan(candidates, Window(40, 900)) == []  # all sent already


def test_random_is_repeatable_from_its_seed_and_fills_the_window() -> None:
    candidates = [cand(i, 0.0, {"full": 100}) for i in range(20)]
    a = RandomPlanner(5).plan(candidates, Window(20, 1_000))
    b = RandomPlanner(5).plan(list(reversed(candidates)), Window(20, 1_000))
    assert a == b and len(a) == 10 and {c.form for c in a} == {"full"}
    assert seqs(a) != sorted(seqs(a))
    assert seqs(RandomPlanner(6).plan(candidates, Window(20, 1_000))) != seqs(a)


def test_score_only_ranks_by_score_ignoring_novelty() -> None:
    candidates = [cand(0, 3.0, {"full": 600, "jpeg90": 200}, tag="d"),
                  cand(1, 2.0, {"full": 600, "jpeg90": 200}, tag="d"),
                  cand(2, 1.0, {"full": 300, "jpeg90": 100}, tag="e")]  # fmt: skip
    full = ScoreOnlyPlanner().plan(candidates, Window(2, 1_000))
    assert [(c.seq, c.form) for c in full] == [(0, "full"), (2, "full")]  # 1 does not fit
    ruled = ScoreOnlyPlanner(form_rule=True).plan(candidates, Window(2, 1_000))
    assert [(c.seq, c.form) for c in ruled] == [(0, "jpeg90"), (1, "jpeg90"), (2, "jpeg90")]
    assert seqs(Planner().plan(candidates, Window(2, 400))) == [2, 0]  # novelty: d once


def test_plans_are_deterministic_and_independent_of_input_order() -> None:
    rng = np.random.default_rng(0)
    candidates = [cand(i, float(rng.integers(0, 5)), FORMS, flagged=bool(i % 4 == 0),
                       tag=f"d{i % 5}" if i % 2 else "", sig=rng.normal(size=8))
                  for i in range(30)]  # fmt: skip
    window = Window(30, 12_345)
    first = Planner().plan(candidates, window)
    assert Planner().plan(candidates, window) == first
    assert Planner().plan(list(reversed(candidates)), window) == first
    assert ScoreOnlyPlanner().plan(candidates, window) == ScoreOnlyPlanner().plan(
        list(reversed(candidates)), window
    )


# --- forms and signatures ---------------------------------------------------------------------


def test_forms_are_real_encoded_sizes() -> None:
    rng = np.random.default_rng(0)
    image = cv2_blur(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    forms = forms_for(image, [(10, 20, 16, 12)])
    assert forms["full"] == image.nbytes
    assert forms["full"] > forms["jpeg90"] > forms["jpeg50"] > 0
    assert forms["crop+jpeg50"] == forms["crop"] + forms["jpeg50"]
    assert forms["meta"] == 256 + 16
    assert set(forms) <= set(FIDELITY)
    bare = forms_for(image[:, :, 0], [], raw_bytes=12_345)
    assert bare["full"] == 12_345 and "crop" not in bare and bare["meta"] == 256
    six = forms_for(np.repeat(image[:, :, :1], 6, axis=2), [])
    assert six["jpeg50"] == pytest.approx(6 * bare["jpeg50"])  # a band per plane


def cv2_blur(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(image, (5, 5), 1.5)


def test_signature_is_a_unit_thumbnail_blind_to_exposure() -> None:
    rng = np.random.default_rng(1)
    image = cv2_blur(rng.integers(0, 200, (64, 64), dtype=np.uint8))
    a = signature(image)
    b = signature((image.astype(np.float32) * 1.2 + 10).clip(0, 255).astype(np.uint8))
    assert a.shape == (64,) and np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert 1.0 - float(a @ b) < 0.01
    other = signature(cv2_blur(rng.integers(0, 200, (64, 64), dtype=np.uint8)))
    assert 1.0 - float(a @ other) > 0.1
    assert not signature(np.full((32, 32, 3), 7, np.uint8)).any()


# --- evaluation -------------------------------------------------------------------------------


def tiny_stream() -> list[StreamItem]:
    """Five 1000-byte frames: 1, 2, 3 anomalous, 1 and 2 showing defect a, 3 showing b."""
    rows = [(0, 0.1, False, ()), (1, 0.7, True, ("a",)), (2, 0.8, True, ("a",)),
            (3, 0.9, True, ("b",)), (4, 0.2, False, ())]  # fmt: skip
    return [
        StreamItem(cand(seq, score, {"full": 1_000}, flagged=score > 0.5, tag=ids[0] if ids
                        else ""), truth, ids)
        for seq, score, truth, ids in rows
    ]  # fmt: skip


def test_evaluate_figures_on_a_tiny_stream_by_hand() -> None:
    stream = tiny_stream()
    assert stream_bytes(stream) == 5_000
    results = evaluate(stream, {"fifo": FifoPlanner, "score": ScoreOnlyPlanner,
                                "planner": Planner}, budgets=(0.4, 1.0))  # fmt: skip
    got = {(r.planner, r.budget): r for r in results}
    fifo = got["fifo", 0.4]  # sends 0, 1
    assert (fifo.budget_bytes, fifo.bytes_used, fifo.frames_sent) == (2_000, 2_000, 2)
    assert fifo.anomalous_delivered == pytest.approx(1 / 3)
    assert fifo.defects_delivered == pytest.approx(1 / 2)
    assert fifo.precision == {"p@10": 0.5, "p@20": 0.5, "p@R": 0.5}
    score = got["score", 0.4]  # sends 3, 2
    assert [c.seq for c in score.choices] == [3, 2]
    assert (score.anomalous_delivered, score.defects_delivered) == (pytest.approx(2 / 3), 1.0)
    assert score.precision["p@R"] == 1.0
    planner = got["planner", 0.4]  # 3 (b), then 2 (a), by score: both new
    assert [c.seq for c in planner.choices] == [3, 2] and planner.defects_delivered == 1.0
    everything = got["fifo", 1.0]
    assert everything.frames_sent == 5 and everything.defects_delivered == 1.0
    assert everything.precision["p@R"] == pytest.approx(2 / 3)  # 0, 1, 2 first
    assert everything.precision["p@10"] == pytest.approx(3 / 5)
    # with only full frames on offer, the planner's form rule sends neither the passed frames
    # nor the second frame of a (a duplicate is routine): capped at jpeg50, they have no form
    assert [c.seq for c in got["planner", 1.0].choices] == [3, 2]


def test_evaluate_over_several_windows_offers_only_what_is_stored() -> None:
    stream = tiny_stream()[:4]  # 4000 bytes
    result = run_planner(stream, ScoreOnlyPlanner(), 0.5, windows=2)  # two 1000-byte windows
    assert [c.seq for c in result.choices] == [1, 3]  # 1 of {0, 1}; then the best of {0, 2, 3}
    fifo = run_planner(stream, FifoPlanner(), 0.5, windows=2)
    assert [c.seq for c in fifo.choices] == [0, 1]
    assert fifo.oversized == 0


def test_saturation_and_the_budget_reaching_a_target() -> None:
    stream = tiny_stream()
    results = evaluate(stream, {"fifo": FifoPlanner, "score": ScoreOnlyPlanner},
                       budgets=(0.2, 0.4, 0.6, 0.8, 1.0))  # fmt: skip
    # fifo: 0 | 0,1 (a) | +2 | +3 (b) | all  -> 0, .5, .5, 1, 1
    assert saturation(results, "fifo") == (0.8, 1.0)
    assert budget_reaching(results, "fifo", 0.9) == 0.8
    assert saturation(results, "score") == (0.4, 1.0)  # 3 (b), then 2 (a)
    assert budget_reaching(results, "score", 0.5) == 0.2
    assert saturation(results, "nobody") is None
    zero = evaluate(stream, {"fifo": FifoPlanner}, budgets=(0.2,))
    assert saturation(zero, "fifo") is None  # nothing delivered: not a plateau
    short = evaluate(stream, {"fifo": FifoPlanner}, budgets=(0.2, 0.4, 0.6))  # 0, .5, .5
    assert saturation(short, "fifo") == (0.4, 0.5)
    assert saturation(short, "fifo", min_span=0.3) is None  # .5 held over 0.2 only: climbing
    assert saturation(results, "fifo", min_span=0.3) == (0.8, 1.0)  # everything: saturated


def test_plot_curves_writes_a_png(tmp_path: Path) -> None:
    results = evaluate(tiny_stream(), {"fifo": FifoPlanner, "planner": Planner},
                       budgets=(0.2, 0.6, 1.0))  # fmt: skip
    path = plot_curves({"tiny": results, "again": results}, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
