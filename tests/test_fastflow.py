"""FastFlow: the NLL and the coupling's log-determinant by hand and against autograd,
invertibility, ONNX fidelity, anomalies found and where, the seeded permutations, the refusals of
its own options. Tiny 32 px images, a few epochs; persistence, determinism, resumable training,
early stopping, torch-free inference and the common refusals are tested with the other methods
trained with torch (``test_trained_methods.py``)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from tiny_trained import METHODS, SIZE, assert_peaks_on_squares, detects_squares, images

from vad_inspection.vad.fastflow import GRAPH_OUTPUTS, FastFlow, FastFlowConfig
from vad_inspection.vad.preprocess import InputSpec, to_network_input

torch = pytest.importorskip("torch")
T = pytest.importorskip("vad_inspection.vad.fastflow_train")
pytestmark = pytest.mark.usefixtures("one_thread")

#: 16 images, 2 held out, batches of 4: 4 steps per epoch, 32 in all (no early stopping: fewer
#: than the warm-up's 50 steps).
TINY = METHODS["fastflow"].tiny


def _step(channels: int = 4, kernel: int = 3, seed: int = 0) -> T.CouplingStep:
    """A coupling step whose subnet's last layer is random (not the zero start), so that the
    scale and shift are not trivial."""
    torch.manual_seed(seed)
    step = T.CouplingStep(channels, kernel, 5, 2.0, torch.randperm(channels))
    torch.nn.init.normal_(step.subnet[-1].weight, std=0.5)
    torch.nn.init.normal_(step.subnet[-1].bias, std=0.5)
    return step.double()


# -- the paper's quantities against hand computation -------------------------------------------


def test_nll_by_hand_and_an_identity_flow() -> None:
    # two images of 2 x 1 x 2 (D = 4): z image 0 = 1, 2, 0, -1 (sum z^2 = 6), image 1 = 0;
    # log-dets 1 and -2: ((0.5 * 6 - 1) / 4 + (0 + 2) / 4) / 2 = (0.5 + 0.5) / 2
    z = torch.tensor([[[[1.0, 2.0]], [[0.0, -1.0]]], [[[0.0, 0.0]], [[0.0, 0.0]]]])
    assert float(T.nll(z, torch.tensor([1.0, -2.0]))) == pytest.approx(0.5, abs=1e-7)
    assert float(T.fastflow_loss([z, z], [torch.zeros(2)] * 2)) == pytest.approx(
        2 * (0.5 * 6 / 4) / 2, abs=1e-7
    )
    with pytest.raises(ValueError, match="levels"):
        T.fastflow_loss([z], [])
    # a fresh flow (subnets' last layers zero): s = t = 0, so every coupling is the identity, the
    # log-det 0 and z a permutation of x; NLL = 0.5 * sum x^2 / D
    flow = T.Flow2D(6, 3, 1.0, 2.0, torch.Generator().manual_seed(0))
    x = torch.randn(2, 6, 3, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, log_det = flow(x)
    np.testing.assert_array_equal(log_det.numpy(), [0.0, 0.0])
    np.testing.assert_allclose(np.sort(out.numpy(), 1), np.sort(x.numpy(), 1), rtol=0, atol=0)
    expected = float((0.5 * x.pow(2).sum((1, 2, 3)) / 54).mean())
    assert float(T.nll(out, log_det)) == pytest.approx(expected, rel=1e-6)
    # kernels alternate 3x3 and 1x1; the soft clamp bounds the log-scale
    assert [s.subnet[0].kernel_size for s in flow.steps] == [(3, 3), (1, 1), (3, 3)]
    clamped = T.soft_clamp(torch.tensor([-100.0, 0.0, 0.1, 100.0]), 2.0)
    np.testing.assert_allclose(clamped.numpy(), [-2.0, 0.0, 2 * math.tanh(0.05), 2.0], atol=1e-6)


def test_coupling_inverts_and_its_log_det_equals_autograds() -> None:
    for kernel in (3, 1):
        step = _step(kernel=kernel)
        x = torch.randn(3, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            y, log_det = step(x)
        assert not torch.allclose(y, x.index_select(1, step.permutation))  # not the identity
        with torch.no_grad():
            np.testing.assert_allclose(step.inverse(y).numpy(), x.numpy(), atol=1e-5, rtol=0)
        for i in range(len(x)):
            jac = torch.autograd.functional.jacobian(lambda v, f=step: f(v[None])[0][0], x[i])
            _, logabsdet = torch.linalg.slogdet(jac.reshape(36, 36))
            assert float(log_det[i]) == pytest.approx(float(logabsdet), abs=1e-8)
    # a whole level's flow inverts too
    flow = T.Flow2D(5, 4, 1.0, 2.0, torch.Generator().manual_seed(0)).double()
    for step in flow.steps:
        torch.nn.init.normal_(step.subnet[-1].weight, std=0.3)
    x = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_allclose(flow.inverse(flow(x)[0]).numpy(), x.numpy(), atol=1e-5)


def test_anomaly_map_and_layer_norm_by_hand() -> None:
    # one level, one image, 2 channels at 1x2: z = (0, 2) at the left, (0, 0) at the right:
    # -exp(-0.5 * mean_c z^2) = -exp(-1), -1; two equal levels average to the same
    z = torch.tensor([[[[0.0, 0.0]], [[2.0, 0.0]]]])
    np.testing.assert_allclose(T.anomaly_map([z], (1, 2))[0].numpy(), [[-math.exp(-1), -1.0]])
    np.testing.assert_allclose(T.anomaly_map([z, z], (1, 2)).numpy(), T.anomaly_map([z], (1, 2)))
    up = torch.nn.functional.interpolate(
        torch.exp(-0.5 * z.pow(2).mean(1, keepdim=True)), size=(4, 4), mode="bilinear"
    )
    np.testing.assert_allclose(T.anomaly_map([z], (4, 4)).numpy(), -up[:, 0].numpy(), atol=1e-7)
    f = torch.randn(2, 3, 4, 5) * 7 + 3
    np.testing.assert_allclose(
        T.layer_norm(f).numpy(), torch.nn.functional.layer_norm(f, f.shape[1:]).numpy(), atol=1e-5
    )


# -- fitting and ONNX --------------------------------------------------------------------------


def test_onnx_outputs_equal_torch_within_1e_4() -> None:
    data = to_network_input(list(images()[:6]), InputSpec(size=(SIZE, SIZE)))
    result = T.train(data, replace(TINY, epochs=1, val_fraction=0.0))
    model = FastFlow(TINY)
    model.graph = result.onnx
    batch = np.random.default_rng(7).normal(0.0, 1.0, (3, 3, SIZE, SIZE)).astype(np.float32)
    onnx_out = model.run_graph(batch)
    with torch.no_grad():
        torch_out = T.Scorer(result.features, result.flows, TINY.size)(torch.from_numpy(batch))
    for name, expected in zip(GRAPH_OUTPUTS, torch_out, strict=True):
        assert onnx_out[name].shape == expected.shape
        np.testing.assert_allclose(onnx_out[name], expected.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(onnx_out["score"], onnx_out["map"].max(axis=(1, 2)), rtol=1e-6)


def test_anomalies_score_above_normal_images() -> None:
    _, prediction, squares = detects_squares("fastflow")
    assert prediction.maps.min() >= -1.0 and prediction.maps.max() <= 0.0
    # the peak lies in the square or within 4 px of it (a quarter of the coarsest level's cell:
    # its 2x2 likelihood grid, upsampled, pulls the peak towards the image centre)
    assert_peaks_on_squares(prediction, squares)


def test_another_seed_permutes_otherwise() -> None:
    other = T.flow_network(replace(TINY, seed=5))
    mine = T.flow_network(TINY)
    assert not torch.equal(other[0].steps[0].permutation, mine[0].steps[0].permutation)


def test_bad_flow_options_are_refused() -> None:
    with pytest.raises(ValueError, match="flow_steps"):
        FastFlowConfig(flow_steps=0)
    with pytest.raises(ValueError, match="hidden_ratio and clamp"):
        FastFlowConfig(clamp=0.0)
