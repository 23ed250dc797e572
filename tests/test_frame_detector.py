"""The per-frame path (`vad.detector`): conversion, decisions, regions, runtime threshold, files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scenes import scene, scenes

from vad_inspection.errors import FrameError, SetupError
from vad_inspection.vad.base import Prediction
from vad_inspection.vad.calibration import Calibration, from_normal_scores
from vad_inspection.vad.detector import (
    PostProcessor,
    convert_channels,
    detector_for_model,
    load_detector,
    raw_value,
    regions,
)
from vad_inspection.vad.registry import CommonOptions, create_model, save_model

SIZE = 64


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAD_INSPECTION_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def gray_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PatchCore fitted on gray stripe scenes (with progress bars on, as a user might)."""
    images, _, _ = scenes(0, SIZE, 30)
    gray = [im.mean(axis=2).astype(np.uint8) for im in images]
    common = CommonOptions(size=SIZE, progress=True)
    model = create_model("patchcore", common, coreset_ratio=0.1)
    model.fit(gray[:20])
    calibration = from_normal_scores(model.predict(gray[20:]).scores, k=3.0)  # 10 held out
    return save_model(model, tmp_path_factory.mktemp("m") / "gray.vad", calibration)


def test_colour_frames_feed_a_gray_model_and_bgr_is_reordered() -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200  # pure red
    gray = convert_channels(rgb, 1, "rgb8")
    assert gray.shape == (4, 4, 1) and int(gray[0, 0, 0]) == round(0.299 * 200)
    as_bgr = convert_channels(rgb[..., ::-1], 1, "bgr8")  # the same red, sent as bgr8
    assert np.array_equal(as_bgr, gray)
    assert np.array_equal(convert_channels(rgb[..., ::-1], 3, "bgr8"), rgb)
    rgba = np.dstack([rgb, np.full((4, 4), 255, np.uint8)])
    assert np.array_equal(convert_channels(rgba, 3, "rgba8"), rgb)
    mono16 = np.full((4, 4), 40000, np.uint16)
    replicated = convert_channels(mono16, 3, "mono16")
    assert replicated.shape == (4, 4, 3) and replicated.dtype == np.uint16
    with pytest.raises(FrameError, match="6-channel image cannot feed a model fitted on 3"):
        convert_channels(np.zeros((4, 4, 6), np.uint8), 3)


def test_threshold_is_on_the_normalised_scale_and_moves_decisions() -> None:
    calibration = Calibration(threshold=10.0, low=0.0, high=20.0, rule="test", samples=5)
    post = PostProcessor(calibration)
    assert post.image_threshold == 10.0
    assert raw_value(calibration, 0.75) == pytest.approx(15.0)
    assert calibration.normalize(np.array([raw_value(calibration, 0.3)]))[0] == pytest.approx(0.3)
    scores = np.array([9.0, 12.0, 16.0])
    assert post.anomalous(scores).tolist() == [False, True, True]
    post.threshold = 0.75
    assert post.anomalous(scores).tolist() == [False, False, True]
    with pytest.raises(SetupError, match="outside"):
        post.threshold = 1.0


def test_maps_are_brought_to_the_frame_and_regions_measured() -> None:
    maps = np.zeros((1, 16, 16), np.float32)
    maps[0, 4:8, 8:12] = 30.0  # one square defect, model grid 16 x 16
    prediction = Prediction(np.array([30.0], np.float32), maps)
    post = PostProcessor(Calibration(10.0, 0.0, 20.0, "test", 5))
    [frame] = post.frames(prediction, [(64, 128)])  # a frame 4 x 8 times larger
    assert frame.heat.shape == (64, 128) and frame.mask.shape == (64, 128)
    assert frame.anomalous is True and frame.normalized == 1.0
    [region] = frame.regions
    x, y, w, h = region.bbox
    assert 8 * 8 - 8 <= x <= 8 * 8 and 4 * 4 - 4 <= y <= 4 * 4  # within one model cell
    assert region.centroid == pytest.approx((10 * 8, 6 * 4), abs=4)
    assert region.area == int(frame.mask.sum()) and region.mask.shape == (h, w)
    assert region.peak == pytest.approx(1.0)


def test_regions_drop_speckle_and_sort_by_peak() -> None:
    mask = np.zeros((20, 20), bool)
    heat = np.zeros((20, 20), np.float32)
    mask[1:3, 1:3], heat[1:3, 1:3] = True, 0.6  # 4 px
    mask[10:15, 10:15], heat[10:15, 10:15] = True, 0.9  # 25 px
    mask[0, 19], heat[0, 19] = True, 1.0  # 1 px speckle
    found = regions(mask, heat, min_area=4)
    assert [r.area for r in found] == [25, 4]
    assert [r.peak for r in found] == pytest.approx([0.9, 0.6])


def test_a_loaded_model_is_quiet_and_scores_colour_frames_of_any_size(
    gray_model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    detector = load_detector(gray_model_file)
    assert detector.channels == 1 and detector.size == (SIZE, SIZE)
    assert detector.model.config.progress is False
    rng = np.random.default_rng(7)
    clean, _ = scene(rng, SIZE, defect=False)
    broken, truth = scene(rng, SIZE, defect=True)
    normal = detector(clean, "rgb8")  # a colour camera on a gray model
    defect = detector(broken[..., ::-1].copy(), "bgr8")
    assert "it/s" not in capsys.readouterr().err  # no progress bar per frame
    larger = detector(cv2.resize(broken, (96, 80), interpolation=cv2.INTER_LINEAR), "rgb8")
    assert larger.heat.shape == (80, 96) and larger.mask.shape == (80, 96)  # the frame's size
    assert defect.normalized > normal.normalized
    assert defect.anomalous and not normal.anomalous
    assert defect.regions and (defect.mask & truth).sum() > 0.5 * truth.sum()
    strict = detector.with_threshold(0.99)
    assert strict.threshold == 0.99 and detector.threshold == 0.5
    assert strict(broken).mask.sum() < defect.mask.sum()


def test_bad_frames_are_frame_errors(gray_model_file: Path) -> None:
    detector = load_detector(gray_model_file)
    with pytest.raises(FrameError, match="empty"):
        detector(np.zeros((0, 5), np.uint8))
    with pytest.raises(FrameError, match="NaN"):
        detector(np.full((32, 32), np.nan, np.float32))
    with pytest.raises(FrameError, match="6-channel"):
        detector(np.zeros((32, 32, 6), np.uint8))


def test_missing_or_foreign_model_files_are_setup_errors(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="does not exist"):
        load_detector(tmp_path / "nope.vad")
    (tmp_path / "junk.vad").write_bytes(b"not a zip")
    with pytest.raises(SetupError, match="not a vad_inspection model"):
        load_detector(tmp_path / "junk.vad")


def test_in_memory_models_get_the_same_detector_as_their_file(gray_model_file: Path) -> None:
    from_file = load_detector(gray_model_file)
    same = detector_for_model(from_file.model, from_file.post.calibration)
    frame = np.random.default_rng(3).integers(0, 255, (70, 50), dtype=np.uint8)
    a, b = from_file(frame), same(frame)
    assert a.score == b.score and np.array_equal(a.heat, b.heat)
    assert same.channels == 1
