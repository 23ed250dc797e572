"""CFA: the attractive and repulsive losses, the patch score and k-means by hand, the memory bank,
ONNX fidelity, anomalies found and where, the seeded descriptor, the refusals of its own options.
Tiny 32 px images, a few epochs; persistence, determinism, resumable training, early stopping,
torch-free inference and the common refusals are tested with the other methods trained with torch
(``test_trained_methods.py``)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from tiny_trained import METHODS, SIZE, assert_peaks_on_squares, detects_squares, images

from vad_inspection.vad.cfa import CFA, CFAConfig
from vad_inspection.vad.preprocess import InputSpec, to_network_input

torch = pytest.importorskip("torch")
T = pytest.importorskip("vad_inspection.vad.cfa_train")
pytestmark = pytest.mark.usefixtures("one_thread")

#: 16 images, 2 held out, batches of 4: 4 steps per epoch (an 8 x 8 grid: 64 centroids).
TINY = METHODS["cfa"].tiny


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
    # distances 1, 1, sqrt(10); K = 2: softmin(1, 1)_1 * 1 = 0.5; K = 3 adds exp(-sqrt(10))
    assert float(T.patch_scores(features, memory, 2)) == pytest.approx(0.5, abs=1e-6)
    w = math.exp(-1) / (2 * math.exp(-1) + math.exp(-math.sqrt(10)))
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


# -- fitting and ONNX --------------------------------------------------------------------------


def test_onnx_map_equals_torch_within_1e_4() -> None:
    data = to_network_input(list(images()[:6]), InputSpec(size=(SIZE, SIZE)))
    result = T.train(data, replace(TINY, epochs=1, val_fraction=0.0, gamma_c=1))
    # the paper's memory bank: one centroid per position of the 8 x 8 grid, in the descriptor's
    # space
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
    # gamma_c = 4 (the default): k-means reduces the bank to 16 centroids
    assert TINY.gamma_c == 4
    reduced = T.train(data, replace(TINY, epochs=0, val_fraction=0.0, gamma_d=2))
    assert tuple(reduced.memory.shape) == (16, 76)


def test_anomalies_score_above_normal_images() -> None:
    _, prediction, squares = detects_squares("cfa")
    assert_peaks_on_squares(prediction, squares)


def test_another_seed_initialises_another_descriptor() -> None:
    other = T.descriptor_network(replace(TINY, seed=5))
    assert not torch.equal(other.weight, T.descriptor_network(TINY).weight)


def test_bad_cfa_options_are_refused() -> None:
    with pytest.raises(ValueError, match="gamma_d"):
        CFAConfig(gamma_c=0)
    with pytest.raises(ValueError, match="k must"):
        CFAConfig(k=0)
    with pytest.raises(ValueError, match="fewer than k"):
        data = to_network_input([np.zeros((16, 16, 3), np.uint8)] * 2, InputSpec(size=(16, 16)))
        T.train(data, replace(TINY, size=(16, 16), gamma_c=8, epochs=0))
