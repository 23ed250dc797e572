"""CFA: the attractive and repulsive losses, the patch score and k-means by hand, ONNX fidelity,
persistence, determinism, resumable training and torch-free inference. Tiny 32 px images, a few
epochs."""

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
from vad_inspection.vad.cfa import CFA, CFAConfig
from vad_inspection.vad.preprocess import InputError, InputSpec, to_network_input

torch = pytest.importorskip("torch")
T = pytest.importorskip("vad_inspection.vad.cfa_train")

SIZE = 32
#: 16 images, 2 held out, batches of 4: 4 steps per epoch (an 8 x 8 grid: 64 centroids).
TINY = CFAConfig(size=(SIZE, SIZE), epochs=8, batch_size=4)


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
    """One thread for torch and ONNX Runtime (cores shared with other work)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VAD_INSPECTION_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [textured(rng)[0] for _ in range(16)]


@pytest.fixture(scope="module")
def fitted(images: list[np.ndarray]) -> CFA:
    model = CFA(TINY)
    model.fit(images)
    return model


# -- the paper's quantities against hand computation -------------------------------------------


def test_attraction_and_repulsion_by_hand() -> None:
    # memory: three centroids on a line at 0, 1 and 3; features at 0.5 and 3 (1-D), K = 1, J = 2
    memory = torch.tensor([[0.0], [1.0], [3.0]])
    features = torch.tensor([[[[0.5, 3.0]]]])  # (N=1, D=1, h=1, w=2)
    # squared distances, nearest first: 0.5 -> 0.25, 0.25, 6.25; 3 -> 0, 4, 9
    d = T.nearest_distances(T.as_patches(features), memory, 3)
    np.testing.assert_allclose(d.numpy(), [[0.25, 0.25, 6.25], [0.0, 4.0, 9.0]])
    # L_att (r = 0.1, r^2 = 0.01): (max(0, 0.25 - 0.01) + max(0, 0 - 0.01)) / (2 * 1) = 0.12
    assert float(T.attraction_loss(d[:, :1], 0.1)) == pytest.approx(0.12, abs=1e-7)
    # K = 2: (0.24 + 0.24 + 0 + 3.99) / 4
    assert float(T.attraction_loss(d[:, :2], 0.1)) == pytest.approx(4.47 / 4, abs=1e-6)
    # L_rep with r = 2 (r^2 = 4), alpha = 0.5 on the J = 2 after the nearest:
    # max(0, 4 - 0.25 - 0.5) = 3.25, max(0, 4 - 6.25 - 0.5) = 0, max(0, 4 - 4 - 0.5) = 0, 0
    assert float(T.repulsion_loss(d[:, 1:], 2.0, 0.5)) == pytest.approx(3.25 / 4, abs=1e-6)
    # the paper's r = 1e-5, alpha = 0.1: r^2 - alpha < 0, so the repulsion is always zero
    assert float(T.repulsion_loss(d[:, 1:], 1e-5, 0.1)) == 0.0
    assert float(T.repulsion_loss(d[:, 3:], 2.0, 0.5)) == 0.0  # J = 0
    # the whole loss: L_att over the K nearest plus L_rep over the J next
    total = T.cfa_loss(features, memory, k=1, j=2, radius=2.0, alpha=0.5)
    expected = (max(0, 0.25 - 4) + max(0, 0 - 4)) / 2 + 3.25 / 4
    assert float(total) == pytest.approx(expected, abs=1e-6)
    # the gradient reaches the features through the recomputed distances
    f = features.clone().requires_grad_(True)
    T.cfa_loss(f, memory, k=1, j=0, radius=0.0, alpha=0.0).backward()
    # d/df of mean((f - c)^2) / 2 features: (2 * (0.5 - 0) / 2, 2 * (3 - 3) / 2); the tie at 0.5
    # between centroids 0 and 1 goes to either: |grad| = 0.5
    np.testing.assert_allclose(np.abs(f.grad.numpy().ravel()), [0.5, 0.0], atol=1e-6)


def test_patch_score_kmeans_and_squared_distances_by_hand() -> None:
    memory = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    features = torch.tensor([[[[1.0]], [[0.0]]]])  # one patch at (1, 0)
    # squared distances 1, 1, 10; K = 2: softmin(1, 1)_1 * 1 = 0.5; K = 3 adds exp(-10)
    assert float(T.patch_scores(features, memory, 2)) == pytest.approx(0.5, abs=1e-6)
    w = math.exp(-1) / (2 * math.exp(-1) + math.exp(-10))
    assert float(T.patch_scores(features, memory, 3)) == pytest.approx(w, abs=1e-6)
    assert float(T.patch_scores(features, memory, 1)) == pytest.approx(1.0, abs=1e-6)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    c = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(T.squared_distances(x, c), torch.cdist(x, c) ** 2, atol=1e-5, rtol=0)
    # k-means finds two well separated clusters whatever the start
    points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0], [5.0, 5.1]])
    centroids = T.kmeans(points, 2, 5, seed=3)
    found = sorted(centroids.tolist())
    np.testing.assert_allclose(found, [[0.1 / 3, 0.1 / 3], [5 + 0.1 / 3, 5 + 0.1 / 3]], atol=1e-6)


# -- fitting, ONNX, persistence ----------------------------------------------------------------


def test_onnx_map_equals_torch_within_1e_4(images: list[np.ndarray]) -> None:
    data = to_network_input(images[:6], InputSpec(size=(SIZE, SIZE)))
    result = T.train(data, replace(TINY, epochs=1, val_fraction=0.0))
    # the memory bank: one centroid per position of the 8 x 8 grid, in the descriptor's space
    assert tuple(result.memory.shape) == (64, sum((24, 32, 96)))
    model = CFA(TINY)
    model.graph = result.onnx
    batch = np.random.default_rng(7).normal(0.0, 1.0, (3, 3, SIZE, SIZE)).astype(np.float32)
    onnx_map = model.run_graph(batch)["map"]
    scorer = T.Scorer(result.features, result.descriptor, result.memory, TINY.k, TINY.size)
    with torch.no_grad():
        expected = scorer(torch.from_numpy(batch)).numpy()
    assert onnx_map.shape == expected.shape == (3, SIZE, SIZE)
    # relative to the map's scale (scores of a random backbone are ~1e-5)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(onnx_map, expected, atol=1e-4 * scale, rtol=1e-4)
    # gamma_c = 4: k-means reduces the bank to 16 centroids
    reduced = T.train(data, replace(TINY, epochs=0, val_fraction=0.0, gamma_c=4, gamma_d=2))
    assert tuple(reduced.memory.shape) == (16, 76)


def test_anomalies_score_above_normal_images(fitted: CFA) -> None:
    rng = np.random.default_rng(1)
    normal = [textured(rng)[0] for _ in range(6)]
    anomalous = [textured(rng, square=True) for _ in range(6)]
    normal_scores = fitted.predict(normal).scores
    prediction = fitted.predict([image for image, _ in anomalous])
    assert prediction.maps.shape == (6, SIZE, SIZE) and prediction.maps.dtype == np.float32
    assert prediction.scores.dtype == np.float32
    np.testing.assert_allclose(prediction.scores, prediction.maps.max(axis=(1, 2)), rtol=1e-6)
    assert prediction.scores.min() > normal_scores.max(), (prediction.scores, normal_scores)
    # the peak lies in the square or within 4 px of it
    for (_, (y, x)), amap in zip(anomalous, prediction.maps, strict=True):
        iy, ix = np.unravel_index(amap.argmax(), amap.shape)
        assert y - 4 <= iy < y + 14 and x - 4 <= ix < x + 14, ((y, x), (iy, ix))
    summary = fitted.summary
    assert summary.epochs_run == 8 and (summary.train_images, summary.val_images) == (14, 2)
    assert [h["epoch"] for h in fitted.history] == list(range(8))
    assert fitted.history[-1]["train_loss"] < fitted.history[0]["train_loss"]


def test_save_load_round_trip(fitted: CFA, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    test_images = [textured(rng, square=bool(i % 2))[0] for i in range(5)]
    path = artifact.save(fitted.to_artifact(), tmp_path / "cfa.vad")
    loaded_artifact = artifact.load(path)
    assert loaded_artifact.method == "cfa" and loaded_artifact.meta["graphs"] == ["cfa"]
    loaded = CFA.from_artifact(loaded_artifact)
    assert loaded.config == fitted.config and loaded.input_spec == fitted.input_spec
    assert loaded.summary == fitted.summary
    before, after = fitted.predict(test_images), loaded.predict(test_images)
    np.testing.assert_array_equal(before.scores, after.scores)
    np.testing.assert_array_equal(before.maps, after.maps)


def test_training_is_deterministic_under_a_seed(images: list[np.ndarray], fitted: CFA) -> None:
    again = CFA(TINY)
    again.fit(images)
    assert again.graph == fitted.graph and again.history == fitted.history
    test_images = [textured(np.random.default_rng(4), square=True)[0]]
    np.testing.assert_array_equal(again.predict(test_images).maps, fitted.predict(test_images).maps)
    other = T.descriptor_network(replace(TINY, seed=5))
    assert not torch.equal(other.weight, T.descriptor_network(TINY).weight)


def test_resumed_training_equals_uninterrupted(
    images: list[np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(T, "export_onnx", lambda *_: b"")
    data = to_network_input(images[:8], InputSpec(size=(SIZE, SIZE)))
    config = replace(TINY, epochs=3, checkpoint_dir=str(tmp_path / "ckpt"))
    T.train(data, replace(config, epochs=1))  # "interrupted" after one epoch
    assert (tmp_path / "ckpt" / T.CHECKPOINT).is_file()
    resumed = T.train(data, config)
    straight = T.train(data, replace(config, checkpoint_dir=None))
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert resumed.history == straight.history
    torch.testing.assert_close(resumed.memory, straight.memory, rtol=0, atol=0)
    for key, value in straight.descriptor.state_dict().items():
        torch.testing.assert_close(value, resumed.descriptor.state_dict()[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="other options"):
        T.train(data, replace(config, lr=0.1))
    with pytest.raises(ValueError, match="other training images"):
        T.train(data[:6], config)
    # the backbone is frozen: untouched by training, no gradients
    fresh = T.feature_network(config).state_dict()
    for key, value in straight.features.state_dict().items():
        torch.testing.assert_close(value, fresh[key], rtol=0, atol=0)
    assert not any(p.requires_grad for p in straight.features.parameters())


def test_inference_does_not_import_torch(fitted: CFA, tmp_path: Path) -> None:
    path = artifact.save(fitted.to_artifact(), tmp_path / "cfa.vad")
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from vad_inspection.vad import artifact
        from vad_inspection.vad.cfa import CFA
        model = CFA.from_artifact(artifact.load({str(path)!r}))
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


def test_bad_options_images_and_unfitted_use_are_refused(fitted: CFA) -> None:
    with pytest.raises(ValueError, match="at least 16 px"):
        CFAConfig(size=(8, 8))
    with pytest.raises(ValueError, match="batch_size"):
        CFAConfig(batch_size=0)
    with pytest.raises(ValueError, match="gamma_d"):
        CFAConfig(gamma_c=0)
    with pytest.raises(ValueError, match="k must"):
        CFAConfig(k=0)
    with pytest.raises(ValueError, match="val_fraction"):
        CFAConfig(val_fraction=1.0)
    with pytest.raises(Exception, match="unknown backbone"):
        CFAConfig(backbone="vgg")
    with pytest.raises(InputError, match="two normal"):
        CFA(TINY).fit([np.zeros((SIZE, SIZE, 3), np.uint8)])
    with pytest.raises(RuntimeError, match="not fitted"):
        CFA(TINY).predict([np.zeros((SIZE, SIZE, 3), np.uint8)])
    with pytest.raises(InputError, match="3-channel"):
        fitted.predict([np.zeros((SIZE, SIZE), np.uint8)])
    with pytest.raises(ValueError, match="fewer than k"):
        data = to_network_input([np.zeros((16, 16, 3), np.uint8)] * 2, InputSpec(size=(16, 16)))
        T.train(data, replace(TINY, size=(16, 16), gamma_c=8, epochs=0))
    assert CFAConfig.from_dict(TINY.to_dict()) == TINY
