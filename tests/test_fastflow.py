"""FastFlow: the NLL and the coupling's log-determinant by hand and against autograd,
invertibility, ONNX fidelity, persistence, determinism, resumable training, early stopping and
torch-free inference. Tiny 32 px images, a few epochs."""

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
from vad_inspection.vad.fastflow import GRAPH_OUTPUTS, FastFlow, FastFlowConfig
from vad_inspection.vad.preprocess import InputError, InputSpec, to_network_input

torch = pytest.importorskip("torch")
T = pytest.importorskip("vad_inspection.vad.fastflow_train")

SIZE = 32
#: 16 images, 2 held out, batches of 4: 4 steps per epoch, 32 in all (no early stopping: fewer
#: than the warm-up's 50 steps).
TINY = FastFlowConfig(size=(SIZE, SIZE), epochs=8, batch_size=4)


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
def fitted(images: list[np.ndarray]) -> FastFlow:
    model = FastFlow(TINY)
    model.fit(images)
    return model


@pytest.fixture
def no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training without the ONNX export, for tests that look at the training loop only."""
    monkeypatch.setattr(T, "export_onnx", lambda *_: b"")


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


# -- fitting, ONNX, persistence ----------------------------------------------------------------


def test_onnx_outputs_equal_torch_within_1e_4(images: list[np.ndarray]) -> None:
    data = to_network_input(images[:6], InputSpec(size=(SIZE, SIZE)))
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


def test_anomalies_score_above_normal_images(fitted: FastFlow) -> None:
    rng = np.random.default_rng(1)
    normal = [textured(rng)[0] for _ in range(6)]
    anomalous = [textured(rng, square=True) for _ in range(6)]
    normal_scores = fitted.predict(normal).scores
    prediction = fitted.predict([image for image, _ in anomalous])
    assert prediction.maps.shape == (6, SIZE, SIZE) and prediction.maps.dtype == np.float32
    assert prediction.scores.dtype == np.float32
    np.testing.assert_allclose(prediction.scores, prediction.maps.max(axis=(1, 2)), rtol=1e-6)
    assert prediction.scores.min() > normal_scores.max(), (prediction.scores, normal_scores)
    assert prediction.maps.min() >= -1.0 and prediction.maps.max() <= 0.0
    # the peak lies in the square or within 4 px of it (a quarter of the coarsest level's cell:
    # its 2x2 likelihood grid, upsampled, pulls the peak towards the image centre)
    for (_, (y, x)), amap in zip(anomalous, prediction.maps, strict=True):
        iy, ix = np.unravel_index(amap.argmax(), amap.shape)
        assert y - 4 <= iy < y + 14 and x - 4 <= ix < x + 14, ((y, x), (iy, ix))
    summary = fitted.summary
    assert summary.epochs_run == 8 and (summary.train_images, summary.val_images) == (14, 2)
    assert [h["epoch"] for h in fitted.history] == list(range(8))
    assert fitted.history[-1]["train_loss"] < fitted.history[0]["train_loss"]


def test_save_load_round_trip(fitted: FastFlow, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    test_images = [textured(rng, square=bool(i % 2))[0] for i in range(5)]
    path = artifact.save(fitted.to_artifact(), tmp_path / "fastflow.vad")
    loaded_artifact = artifact.load(path)
    assert loaded_artifact.method == "fastflow" and loaded_artifact.meta["graphs"] == ["fastflow"]
    loaded = FastFlow.from_artifact(loaded_artifact)
    assert loaded.config == fitted.config and loaded.input_spec == fitted.input_spec
    assert loaded.summary == fitted.summary
    before, after = fitted.predict(test_images), loaded.predict(test_images)
    np.testing.assert_array_equal(before.scores, after.scores)
    np.testing.assert_array_equal(before.maps, after.maps)


def test_training_is_deterministic_under_a_seed(images: list[np.ndarray], fitted: FastFlow) -> None:
    again = FastFlow(TINY)
    again.fit(images)
    assert again.graph == fitted.graph and again.history == fitted.history
    test_images = [textured(np.random.default_rng(4), square=True)[0]]
    np.testing.assert_array_equal(again.predict(test_images).maps, fitted.predict(test_images).maps)
    # another seed: other permutations
    other = T.flow_network(replace(TINY, seed=5))
    mine = T.flow_network(TINY)
    assert not torch.equal(other[0].steps[0].permutation, mine[0].steps[0].permutation)


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
    for key, value in straight.flows.state_dict().items():
        torch.testing.assert_close(value, resumed.flows.state_dict()[key], rtol=0, atol=0)
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
    # the backbone is frozen: untouched by training, no gradients
    fresh = T.feature_network(config).state_dict()
    for key, value in result.features.state_dict().items():
        torch.testing.assert_close(value, fresh[key], rtol=0, atol=0)
    assert not any(p.requires_grad for p in result.features.parameters())


def test_inference_does_not_import_torch(fitted: FastFlow, tmp_path: Path) -> None:
    path = artifact.save(fitted.to_artifact(), tmp_path / "fastflow.vad")
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from vad_inspection.vad import artifact
        from vad_inspection.vad.fastflow import FastFlow
        model = FastFlow.from_artifact(artifact.load({str(path)!r}))
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


def test_bad_options_images_and_unfitted_use_are_refused(fitted: FastFlow) -> None:
    with pytest.raises(ValueError, match="at least 16 px"):
        FastFlowConfig(size=(8, 8))
    with pytest.raises(ValueError, match="batch_size"):
        FastFlowConfig(batch_size=0)
    with pytest.raises(ValueError, match="flow_steps"):
        FastFlowConfig(flow_steps=0)
    with pytest.raises(ValueError, match="val_fraction"):
        FastFlowConfig(val_fraction=1.0)
    with pytest.raises(Exception, match="unknown backbone"):
        FastFlowConfig(backbone="vgg")
    with pytest.raises(InputError, match="two normal"):
        FastFlow(TINY).fit([np.zeros((SIZE, SIZE, 3), np.uint8)])
    with pytest.raises(RuntimeError, match="not fitted"):
        FastFlow(TINY).predict([np.zeros((SIZE, SIZE, 3), np.uint8)])
    with pytest.raises(InputError, match="3-channel"):
        fitted.predict([np.zeros((SIZE, SIZE), np.uint8)])
    assert FastFlowConfig.from_dict(TINY.to_dict()) == TINY
