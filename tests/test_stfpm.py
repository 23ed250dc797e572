"""STFPM: the loss and the distance maps by hand, ONNX fidelity, persistence, determinism, resumable
training, early stopping and torch-free inference. Tiny 32 px images, a few epochs."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vad_inspection.vad import artifact
from vad_inspection.vad.preprocess import InputError, InputSpec, to_network_input
from vad_inspection.vad.stfpm import GRAPH_OUTPUTS, STFPM, STFPMConfig

torch = pytest.importorskip("torch")
T = pytest.importorskip("vad_inspection.vad.stfpm_train")

SIZE = 32
#: 16 images, 2 held out, batches of 4: 4 steps per epoch, 32 in all (no early stopping: fewer
#: than the warm-up's 100 steps).
TINY = STFPMConfig(size=(SIZE, SIZE), epochs=8, batch_size=4)


def textured(rng: np.random.Generator, square: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """A striped, noisy RGB image; with ``square`` a bright 10 px square at a random place."""
    image = rng.normal(120, 6, (SIZE, SIZE, 3))
    image[:, ::2] += 50
    y, x = (int(v) for v in rng.integers(4, SIZE - 14, 2))
    if square:
        image[y : y + 10, x : x + 10] = 250
    return np.clip(image, 0, 255).astype(np.uint8), (y, x)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One thread for torch and ONNX Runtime: with tiny images and cores shared with other work,
    two threads made training some 25 times slower (:func:`stfpm_train.threads`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VAD_INSPECTION_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [textured(rng)[0] for _ in range(16)]


@pytest.fixture(scope="module")
def fitted(images: list[np.ndarray]) -> STFPM:
    model = STFPM(TINY)
    model.fit(images)
    return model


@pytest.fixture
def no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training without the ONNX export, for tests that look at the training loop only."""
    monkeypatch.setattr(T, "export_onnx", lambda *_: b"")


# -- the paper's quantities against hand computation -------------------------------------------


def _hand_features() -> tuple[list, list]:
    """Two levels, two images. Image 0, level 0 (2 channels on 2x2 positions): teacher vectors
    (1, 0), (0, 2), (3, 4), (1, 1) and student (0, 1), (0, 5), (-3, -4), (2, 0); level 1 (one
    position): teacher (0, 3), student (4, 0). Image 1: student equal to teacher everywhere."""
    t0 = torch.tensor([[[1.0, 0.0], [3.0, 1.0]], [[0.0, 2.0], [4.0, 1.0]]])  # (C, h, w)
    s0 = torch.tensor([[[0.0, 0.0], [-3.0, 2.0]], [[1.0, 5.0], [-4.0, 0.0]]])
    t1, s1 = torch.tensor([[[0.0]], [[3.0]]]), torch.tensor([[[4.0]], [[0.0]]])
    teacher = [torch.stack([t0, t0 + 1]), torch.stack([t1, t1 + 1])]
    student = [torch.stack([s0, t0 + 1]), torch.stack([s1, t1 + 1])]
    return teacher, student


def test_distance_map_and_loss_by_hand() -> None:
    teacher, student = _hand_features()
    # normalised: t (1,0), (0,1), (.6,.8), (1,1)/sqrt2; s (0,1), (0,1), (-.6,-.8), (1,0)
    # 1/2 ||t - s||^2: 1/2 * 2, 0, 1/2 * 4, 1/2 * (2 - sqrt2)
    omega = [[1.0, 0.0], [2.0, 1.0 - math.sqrt(2) / 2]]
    maps = T.distance_map(teacher[0], student[0])
    assert maps.shape == (2, 1, 2, 2)
    np.testing.assert_allclose(maps[0, 0].numpy(), omega, atol=1e-6)
    np.testing.assert_allclose(maps[1].numpy(), 0.0, atol=1e-6)
    # level 0: the map's mean (4 - sqrt2 / 2) / 4; level 1: 1/2 * ||(0,1) - (1,0)||^2 = 1
    image0 = (4.0 - math.sqrt(2) / 2) / 4 + 1.0
    assert float(T.stfpm_loss(teacher, student)) == pytest.approx(image0 / 2, abs=1e-6)
    assert float(T.stfpm_loss(teacher[:1], student[:1])) == pytest.approx(
        (4.0 - math.sqrt(2) / 2) / 8, abs=1e-6
    )
    assert float(T.stfpm_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="levels"):
        T.stfpm_loss(teacher, student[:1])


def test_anomaly_map_is_the_product_of_the_upsampled_levels() -> None:
    teacher, student = _hand_features()
    # level 1 is 1 everywhere after upsampling, so the product is level 0's map at 2x2
    omega = T.anomaly_map(teacher, student, (2, 2))
    assert omega.shape == (2, 2, 2)
    np.testing.assert_allclose(
        omega[0].numpy(), [[1.0, 0.0], [2.0, 1.0 - math.sqrt(2) / 2]], atol=1e-6
    )
    np.testing.assert_allclose(omega[1].numpy(), 0.0, atol=1e-6)
    # at 4x4 each level is upsampled bilinearly (half-pixel centres), then multiplied
    up = torch.nn.functional.interpolate(
        T.distance_map(teacher[0], student[0]), size=(4, 4), mode="bilinear", align_corners=False
    )
    np.testing.assert_allclose(
        T.anomaly_map(teacher, student, (4, 4))[0].numpy(), up[0, 0].numpy(), atol=1e-6
    )


# -- fitting, ONNX, persistence ----------------------------------------------------------------


def test_onnx_outputs_equal_torch_within_1e_4(images: list[np.ndarray]) -> None:
    data = to_network_input(images[:6], InputSpec(size=(SIZE, SIZE)))
    result = T.train(data, replace(TINY, epochs=1, val_fraction=0.0))
    model = STFPM(TINY)
    model.graph = result.onnx
    batch = np.random.default_rng(7).normal(0.0, 1.0, (3, 3, SIZE, SIZE)).astype(np.float32)
    onnx_out = model.run_graph(batch)
    with torch.no_grad():
        torch_out = T.Scorer(result.teacher, result.student, TINY.size)(torch.from_numpy(batch))
    for name, expected in zip(GRAPH_OUTPUTS, torch_out, strict=True):
        assert onnx_out[name].shape == expected.shape
        np.testing.assert_allclose(onnx_out[name], expected.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(onnx_out["score"], onnx_out["map"].max(axis=(1, 2)), rtol=1e-6)


def test_anomalies_score_above_normal_images(fitted: STFPM) -> None:
    rng = np.random.default_rng(1)
    normal = [textured(rng)[0] for _ in range(6)]
    anomalous = [textured(rng, square=True)[0] for _ in range(6)]
    normal_scores = fitted.predict(normal).scores
    prediction = fitted.predict(anomalous)
    assert prediction.maps.shape == (6, SIZE, SIZE) and prediction.maps.dtype == np.float32
    assert prediction.scores.dtype == np.float32
    np.testing.assert_allclose(prediction.scores, prediction.maps.max(axis=(1, 2)), rtol=1e-6)
    assert prediction.scores.min() > normal_scores.max(), (prediction.scores, normal_scores)
    summary = fitted.summary
    assert summary.epochs_run == 8 and (summary.train_images, summary.val_images) == (14, 2)
    assert [h["epoch"] for h in fitted.history] == list(range(8))
    assert fitted.history[-1]["train_loss"] < fitted.history[0]["train_loss"]


def test_save_load_round_trip(fitted: STFPM, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    test_images = [textured(rng, square=bool(i % 2))[0] for i in range(5)]
    path = artifact.save(fitted.to_artifact(), tmp_path / "stfpm.vad")
    loaded_artifact = artifact.load(path)
    assert loaded_artifact.method == "stfpm" and loaded_artifact.meta["graphs"] == ["stfpm"]
    loaded = STFPM.from_artifact(loaded_artifact)
    assert loaded.config == fitted.config and loaded.input_spec == fitted.input_spec
    assert loaded.summary == fitted.summary
    before, after = fitted.predict(test_images), loaded.predict(test_images)
    np.testing.assert_array_equal(before.scores, after.scores)
    np.testing.assert_array_equal(before.maps, after.maps)


def test_training_is_deterministic_under_a_seed(images: list[np.ndarray], fitted: STFPM) -> None:
    again = STFPM(TINY)
    again.fit(images)
    assert again.graph == fitted.graph and again.history == fitted.history
    test_images = [textured(np.random.default_rng(4), square=True)[0]]
    np.testing.assert_array_equal(again.predict(test_images).maps, fitted.predict(test_images).maps)
    # the student starts from other random weights than the (random) teacher
    teacher, student = T.teacher_network(TINY), T.student_network(TINY)
    first = next(iter(teacher.state_dict()))
    assert not torch.equal(teacher.state_dict()[first], student.state_dict()[first])


def test_resumed_training_equals_uninterrupted(
    images: list[np.ndarray], tmp_path: Path, no_export: None
) -> None:
    data = to_network_input(images[:8], InputSpec(size=(SIZE, SIZE)))
    config = replace(TINY, epochs=3, checkpoint_dir=str(tmp_path / "ckpt"))
    T.train(data, replace(config, epochs=1))  # "interrupted" after one epoch
    assert (tmp_path / "ckpt" / T.CHECKPOINT).is_file()
    resumed = T.train(data, config)
    straight = T.train(data, replace(config, checkpoint_dir=None))
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert resumed.history == straight.history
    for key, value in straight.student.state_dict().items():
        torch.testing.assert_close(value, resumed.student.state_dict()[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="other options"):
        T.train(data, replace(config, lr=0.1))
    with pytest.raises(ValueError, match="other training images"):
        T.train(data[:6], config)


def test_early_stopping_counts_patience_after_the_warm_up(
    images: list[np.ndarray], monkeypatch: pytest.MonkeyPatch, no_export: None
) -> None:
    data = to_network_input(images[:8], InputSpec(size=(SIZE, SIZE)))
    config = replace(TINY, epochs=10, patience=2, val_fraction=0.25)  # 6 + 2 images: 2 steps
    losses = iter([5.0, 6.0, 7.0, 8.0, 4.0, 4.5, 4.2, 1.0, 1.0, 1.0])
    monkeypatch.setattr(T, "evaluate_loss", lambda *_: next(losses))
    monkeypatch.setattr(T, "WARMUP_STEPS", 7)  # epochs 0-2 (2, 4, 6 steps) cannot be bad
    result = T.train(data, config)
    # epochs 1, 2 worse than 0 but in the warm-up; 3 bad (1), 4 best, 5 and 6 bad: stop
    assert result.summary.stopped_early and result.summary.epochs_run == 7
    assert result.summary.best_epoch == 4 and result.summary.best_val_loss == 4.0
    assert len(result.val_index) == 2
    # the teacher is frozen: untouched by training, no gradients
    fresh = T.teacher_network(config).state_dict()
    for key, value in result.teacher.state_dict().items():
        torch.testing.assert_close(value, fresh[key], rtol=0, atol=0)
    assert not any(p.requires_grad for p in result.teacher.parameters())


def test_inference_does_not_import_torch(fitted: STFPM, tmp_path: Path) -> None:
    path = artifact.save(fitted.to_artifact(), tmp_path / "stfpm.vad")
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from vad_inspection.vad import artifact
        from vad_inspection.vad.stfpm import STFPM
        model = STFPM.from_artifact(artifact.load({str(path)!r}))
        images = [np.random.default_rng(0).integers(0, 255, ({SIZE}, {SIZE}, 3), np.uint8)]
        prediction = model.predict(images)
        assert prediction.maps.shape == (1, {SIZE}, {SIZE}), prediction.maps.shape
        assert "torch" not in sys.modules, "inference imported torch"
        print("ok", float(prediction.scores[0]))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")


# -- refusals --------------------------------------------------------------------------------


def test_bad_options_images_and_unfitted_use_are_refused(fitted: STFPM) -> None:
    with pytest.raises(ValueError, match="at least 16 px"):
        STFPMConfig(size=(8, 8))
    with pytest.raises(ValueError, match="batch_size"):
        STFPMConfig(batch_size=1)
    with pytest.raises(ValueError, match="val_fraction"):
        STFPMConfig(val_fraction=1.0)
    with pytest.raises(Exception, match="unknown backbone"):
        STFPMConfig(backbone="vgg")
    with pytest.raises(InputError, match="two normal"):
        STFPM(TINY).fit([np.zeros((SIZE, SIZE, 3), np.uint8)])
    with pytest.raises(RuntimeError, match="not fitted"):
        STFPM(TINY).predict([np.zeros((SIZE, SIZE, 3), np.uint8)])
    with pytest.raises(InputError, match="3-channel"):
        fitted.predict([np.zeros((SIZE, SIZE), np.uint8)])
    assert STFPMConfig.from_dict(TINY.to_dict()) == TINY
