"""RD4AD: the cosine-distance maps, the loss and the anomaly map by hand, the student's shapes,
ONNX fidelity, persistence, determinism, resumable training, early stopping and torch-free
inference. Tiny 32 px images, a few epochs."""

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
from vad_inspection.vad.ops import gaussian_blur
from vad_inspection.vad.preprocess import InputError, InputSpec, to_network_input
from vad_inspection.vad.rd4ad import GRAPH_OUTPUTS, RD4AD, RD4ADConfig

torch = pytest.importorskip("torch")
T = pytest.importorskip("vad_inspection.vad.rd4ad_train")

SIZE = 32
#: 16 images, 2 held out, batches of 4: 4 steps per epoch, 32 in all (no early stopping: fewer
#: than the warm-up's 50 steps).
TINY = RD4ADConfig(size=(SIZE, SIZE), epochs=8, batch_size=4)


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
    """One thread for torch and ONNX Runtime (cores shared with other work:
    :func:`stfpm_train.threads`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VAD_INSPECTION_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [textured(rng)[0] for _ in range(16)]


@pytest.fixture(scope="module")
def fitted(images: list[np.ndarray]) -> RD4AD:
    model = RD4AD(TINY)
    model.fit(images)
    return model


@pytest.fixture
def no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training without the ONNX export, for tests that look at the training loop only."""
    monkeypatch.setattr(T, "export_onnx", lambda *_: b"")


# -- the paper's quantities against hand computation -------------------------------------------


def _hand_features() -> tuple[list, list]:
    """Two levels, two images. Image 0, level 0 (2 channels on 2x2 positions): teacher vectors
    (1, 0), (0, 2), (3, 4), (1, 1) and decoder (0, 1), (0, 5), (-3, -4), (2, 1); level 1 (one
    position): teacher (0, 3), decoder (4, 0). Image 1: the decoder gives twice the teacher's
    features everywhere (same directions, other lengths)."""
    t0 = torch.tensor([[[1.0, 0.0], [3.0, 1.0]], [[0.0, 2.0], [4.0, 1.0]]])  # (C, h, w)
    d0 = torch.tensor([[[0.0, 0.0], [-3.0, 2.0]], [[1.0, 5.0], [-4.0, 1.0]]])
    t1, d1 = torch.tensor([[[0.0]], [[3.0]]]), torch.tensor([[[4.0]], [[0.0]]])
    teacher = [torch.stack([t0, t0 + 1]), torch.stack([t1, t1 + 1])]
    decoded = [torch.stack([d0, 2 * (t0 + 1)]), torch.stack([d1, 2 * (t1 + 1)])]
    return teacher, decoded


#: Image 0's level-0 map: cosines 0, 1, -1 and 3 / sqrt(2 * 5), so ``M = 1 - cos``.
M0 = [[1.0, 0.0], [2.0, 1.0 - 3.0 / math.sqrt(10.0)]]


def test_cosine_distance_map_and_loss_by_hand() -> None:
    teacher, decoded = _hand_features()
    maps = T.cosine_distance_map(teacher[0], decoded[0])
    assert maps.shape == (2, 1, 2, 2)
    np.testing.assert_allclose(maps[0, 0].numpy(), M0, atol=1e-6)
    # the cosine ignores the lengths: twice the teacher is a perfect reconstruction
    np.testing.assert_allclose(maps[1].numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(T.cosine_distance_map(teacher[1], decoded[1])[0].numpy(), 1.0)
    # L_KD: per level the mean over positions, summed over levels, then averaged over images
    level0 = (4.0 - 3.0 / math.sqrt(10.0)) / 4
    assert float(T.rd4ad_loss(teacher, decoded)) == pytest.approx((level0 + 1.0) / 2, abs=1e-6)
    assert float(T.rd4ad_loss(teacher[:1], decoded[:1])) == pytest.approx(level0 / 2, abs=1e-6)
    assert float(T.rd4ad_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-6)
    # not the official code's one cosine per flattened level: (1, 0, 3, 1, 0, 2, 4, 1) against
    # (0, 0, -3, 2, 1, 5, -4, 1) has cosine -12 / (sqrt(32) sqrt(56)), so 1 - cos = 1.2835
    flat = 1.0 + 12.0 / math.sqrt(32.0 * 56.0)
    assert abs(float(T.rd4ad_loss(teacher[:1], decoded[:1])) * 2 - flat) > 0.3
    with pytest.raises(ValueError, match="levels"):
        T.rd4ad_loss(teacher, decoded[:1])


def test_anomaly_map_is_the_sum_of_the_upsampled_levels() -> None:
    teacher, decoded = _hand_features()
    # level 1 is 1 everywhere after upsampling (0 for image 1), so the sum is level 0's map + 1
    amap = T.anomaly_map(teacher, decoded, (2, 2))
    assert amap.shape == (2, 2, 2)
    np.testing.assert_allclose(amap[0].numpy(), np.asarray(M0) + 1.0, atol=1e-6)
    np.testing.assert_allclose(amap[1].numpy(), 0.0, atol=1e-6)
    # at 4x4 each level is upsampled bilinearly (half-pixel centres), then added
    up = torch.nn.functional.interpolate(
        T.cosine_distance_map(teacher[0], decoded[0]), size=(4, 4), mode="bilinear",
        align_corners=False,
    )  # fmt: skip
    np.testing.assert_allclose(
        T.anomaly_map(teacher, decoded, (4, 4))[0].numpy(), up[0, 0].numpy() + 1.0, atol=1e-6
    )


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet18"])
def test_the_student_rebuilds_the_teachers_levels(backbone: str) -> None:
    # 40 x 56 px: grids 10 x 14, 5 x 7 and 3 x 4, odd ones the decoder's doubling overshoots
    config = RD4ADConfig(backbone=backbone, size=(40, 56))
    teacher, student = T.teacher_network(config), T.student_network(config).eval()
    with torch.no_grad():
        feats = teacher(torch.zeros(2, 3, 40, 56))
        embedding = student.ocbe(feats)
        decoded = student(feats)
    assert [tuple(f.shape[-2:]) for f in feats] == [(10, 14), (5, 7), (3, 4)]
    assert [f.shape for f in decoded] == [f.shape for f in feats]
    c3 = feats[2].shape[1]
    assert tuple(embedding.shape) == (2, 2 * c3, 2, 2)  # the OCE: stride 32, 2 x the channels
    # more OCE blocks: more parameters, the same embedding shape
    deeper = T.student_network(replace(config, oce_blocks=3))
    assert len(deeper.ocbe.oce) == 3 and len(student.ocbe.oce) == 1


# -- fitting, ONNX, persistence ----------------------------------------------------------------


def test_onnx_map_equals_torch_within_1e_4(images: list[np.ndarray]) -> None:
    size = (40, 56)  # odd grids: the decoder's crops are in the graph
    config = replace(TINY, size=size, epochs=1, val_fraction=0.0)
    result = T.train(to_network_input(images[:6], InputSpec(size=size)), config)
    model = RD4AD(config)
    model.graph = result.onnx
    batch = np.random.default_rng(7).normal(0.0, 1.0, (3, 3, *size)).astype(np.float32)
    onnx_out = model.run_graph(batch)
    assert list(onnx_out) == list(GRAPH_OUTPUTS) == ["map"]
    with torch.no_grad():
        expected = T.Scorer(result.teacher, result.student, size)(torch.from_numpy(batch)).numpy()
    assert onnx_out["map"].shape == expected.shape == (3, *size)
    np.testing.assert_allclose(onnx_out["map"], expected, atol=1e-4, rtol=1e-4)
    # after the graph: Gaussian smoothing (sigma 4), the score its maximum
    scores, maps = model.scores_and_maps(onnx_out)
    np.testing.assert_allclose(maps, gaussian_blur(onnx_out["map"], 4.0), rtol=1e-6)
    np.testing.assert_allclose(scores, maps.max(axis=(1, 2)), rtol=1e-6)
    assert not np.allclose(maps, onnx_out["map"], atol=1e-3)  # the smoothing did something
    raw = RD4AD(replace(config, sigma=0.0)).scores_and_maps(onnx_out)[1]
    np.testing.assert_array_equal(raw, onnx_out["map"])


def test_anomalies_score_above_normal_images(fitted: RD4AD) -> None:
    rng = np.random.default_rng(1)
    normal = [textured(rng)[0] for _ in range(6)]
    anomalous = [textured(rng, square=True) for _ in range(6)]
    normal_scores = fitted.predict(normal).scores
    prediction = fitted.predict([image for image, _ in anomalous])
    assert prediction.maps.shape == (6, SIZE, SIZE) and prediction.maps.dtype == np.float32
    assert prediction.scores.dtype == np.float32
    np.testing.assert_allclose(prediction.scores, prediction.maps.max(axis=(1, 2)), rtol=1e-6)
    assert prediction.scores.min() > normal_scores.max(), (prediction.scores, normal_scores)
    # the map is higher on the square than off it (its peak, on a 32 px image smoothed with
    # sigma 4 from a 2 x 2 deepest level, is not a reliable position)
    for (_, (y, x)), amap in zip(anomalous, prediction.maps, strict=True):
        inside = np.zeros(amap.shape, bool)
        inside[y : y + 10, x : x + 10] = True
        assert amap[inside].mean() > amap[~inside].mean(), (y, x)
    summary = fitted.summary
    assert summary.epochs_run == 8 and (summary.train_images, summary.val_images) == (14, 2)
    assert [h["epoch"] for h in fitted.history] == list(range(8))
    assert fitted.history[-1]["train_loss"] < fitted.history[0]["train_loss"]


def test_save_load_round_trip(fitted: RD4AD, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    test_images = [textured(rng, square=bool(i % 2))[0] for i in range(5)]
    path = artifact.save(fitted.to_artifact(), tmp_path / "rd4ad.vad")
    loaded_artifact = artifact.load(path)
    assert loaded_artifact.method == "rd4ad" and loaded_artifact.meta["graphs"] == ["rd4ad"]
    loaded = RD4AD.from_artifact(loaded_artifact)
    assert loaded.config == fitted.config and loaded.input_spec == fitted.input_spec
    assert loaded.summary == fitted.summary
    before, after = fitted.predict(test_images), loaded.predict(test_images)
    np.testing.assert_array_equal(before.scores, after.scores)
    np.testing.assert_array_equal(before.maps, after.maps)


def test_training_is_deterministic_under_a_seed(images: list[np.ndarray], fitted: RD4AD) -> None:
    again = RD4AD(TINY)
    again.fit(images)
    assert again.graph == fitted.graph and again.history == fitted.history
    test_images = [textured(np.random.default_rng(4), square=True)[0]]
    np.testing.assert_array_equal(again.predict(test_images).maps, fitted.predict(test_images).maps)
    # another seed, another initialisation of OCBE and the decoder
    first = next(iter(T.student_network(TINY).state_dict()))
    assert not torch.equal(
        T.student_network(TINY).state_dict()[first],
        T.student_network(replace(TINY, seed=5)).state_dict()[first],
    )


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
    # sigma only smooths after the graph: the finished run is taken back, nothing retrained
    again = T.train(data, replace(config, sigma=2.0))
    assert again.history == straight.history and again.summary.epochs_run == 3
    with pytest.raises(ValueError, match="other options"):
        T.train(data, replace(config, lr=0.001))
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


def test_inference_does_not_import_torch(fitted: RD4AD, tmp_path: Path) -> None:
    path = artifact.save(fitted.to_artifact(), tmp_path / "rd4ad.vad")
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from vad_inspection.vad import artifact
        from vad_inspection.vad.rd4ad import RD4AD
        model = RD4AD.from_artifact(artifact.load({str(path)!r}))
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


def test_bad_options_images_and_unfitted_use_are_refused(fitted: RD4AD) -> None:
    with pytest.raises(ValueError, match="at least 16 px"):
        RD4ADConfig(size=(8, 8))
    with pytest.raises(ValueError, match="batch_size"):
        RD4ADConfig(batch_size=1)
    with pytest.raises(ValueError, match="oce_blocks"):
        RD4ADConfig(oce_blocks=0)
    with pytest.raises(ValueError, match="sigma"):
        RD4ADConfig(sigma=-1.0)
    with pytest.raises(ValueError, match="beta1 and beta2"):
        RD4ADConfig(beta1=1.0)
    with pytest.raises(ValueError, match="lr must be positive"):
        RD4ADConfig(lr=0.0)
    with pytest.raises(ValueError, match="val_fraction"):
        RD4ADConfig(val_fraction=1.0)
    with pytest.raises(Exception, match="unknown backbone"):
        RD4ADConfig(backbone="vgg")
    with pytest.raises(InputError, match="two normal"):
        RD4AD(TINY).fit([np.zeros((SIZE, SIZE, 3), np.uint8)])
    with pytest.raises(RuntimeError, match="not fitted"):
        RD4AD(TINY).predict([np.zeros((SIZE, SIZE, 3), np.uint8)])
    with pytest.raises(InputError, match="3-channel"):
        fitted.predict([np.zeros((SIZE, SIZE), np.uint8)])
    assert RD4ADConfig.from_dict(TINY.to_dict()) == TINY
    # the paper's optimiser settings are the defaults
    default = RD4ADConfig()
    assert (default.lr, default.beta1, default.beta2, default.sigma) == (0.005, 0.5, 0.999, 4.0)
