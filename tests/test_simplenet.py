"""SimpleNet: the truncated L1 loss, the noise, the standardisation and the map by hand, ONNX
fidelity, persistence, determinism, resumable training, early stopping and torch-free inference.
Tiny 32 px images, a short fit."""

from __future__ import annotations

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
from vad_inspection.vad.simplenet import SimpleNet, SimpleNetConfig

torch = pytest.importorskip("torch")
T = pytest.importorskip("vad_inspection.vad.simplenet_train")

SIZE = 32
#: 16 images, 2 held out, batches of 4: 4 steps per epoch (an 8 x 8 grid). 20 epochs, the
#: default: at 8 the discriminator had not yet put every map's peak on its square.
TINY = SimpleNetConfig(size=(SIZE, SIZE), epochs=20, batch_size=4)
CHANNELS = 24 + 32 + 96  # MobileNetV2's three taps


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
def fitted(images: list[np.ndarray]) -> SimpleNet:
    model = SimpleNet(TINY)
    model.fit(images)
    return model


@pytest.fixture
def no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training without the ONNX export, for tests that look at the training loop only."""
    monkeypatch.setattr(T, "export_onnx", lambda *_: b"")


# -- the paper's quantities against hand computation -------------------------------------------


def test_truncated_l1_loss_by_hand() -> None:
    normal = torch.tensor([[[[0.7, 0.2], [-1.0, 0.5]]]], requires_grad=True)  # D(q), (1, 1, 2, 2)
    noised = torch.tensor([[[[-0.8, 0.0], [1.0, -0.5]]]], requires_grad=True)  # D(q-)
    # th+ = 0.5: max(0, 0.5 - D(q)) = 0, 0.3, 1.5, 0 -> mean 0.45
    # th- = -0.5: max(0, 0.5 + D(q-)) = 0, 0.5, 1.5, 0 -> mean 0.5
    loss = T.truncated_l1_loss(normal, noised, 0.5, -0.5)
    assert float(loss.detach()) == pytest.approx(0.95, abs=1e-6)
    # other margins, th+ = 1, th- = 0: (0.3 + 0.8 + 2 + 0.5) / 4 + (0 + 0 + 1 + 0) / 4
    other = T.truncated_l1_loss(normal.detach(), noised.detach(), 1.0, 0.0)
    assert float(other) == pytest.approx(1.15, abs=1e-6)
    # the gradient: -1/4 on the normal values short of th+, +1/4 on the noised values above th-;
    # values beyond (or on) their margins cost nothing and get none
    loss.backward()
    np.testing.assert_allclose(normal.grad.numpy().ravel(), [0, -0.25, -0.25, 0], atol=1e-7)
    np.testing.assert_allclose(noised.grad.numpy().ravel(), [0, 0.25, 0.25, 0], atol=1e-7)
    # every value beyond its margin: no loss at all
    zero = T.truncated_l1_loss(torch.full((3,), 0.6), torch.full((3,), -0.7), 0.5, -0.5)
    assert float(zero) == 0.0


def test_noise_is_seeded_and_of_the_configured_deviation() -> None:
    q = torch.zeros(4, CHANNELS, 16, 16)
    first = T.anomalous_features(q, 0.1, T.noise_generator(0, T.TRAIN_NOISE_STREAM, 3))
    again = T.anomalous_features(q, 0.1, T.noise_generator(0, T.TRAIN_NOISE_STREAM, 3))
    torch.testing.assert_close(first, again, rtol=0, atol=0)  # (seed, stream, epoch) fixes it
    for other in (
        T.noise_generator(0, T.TRAIN_NOISE_STREAM, 4),  # the next epoch
        T.noise_generator(1, T.TRAIN_NOISE_STREAM, 3),  # another seed
        T.noise_generator(0, T.HELD_OUT_NOISE_STREAM),  # the held-out stream
    ):
        assert not torch.equal(first, T.anomalous_features(q, 0.1, other))
    # epsilon ~ N(0, sigma^2 I): 155,648 draws, mean 0 and deviation sigma within 1 %
    assert abs(float(first.mean())) < 0.001 and float(first.std()) == pytest.approx(0.1, rel=0.01)
    shifted = T.anomalous_features(q + 3.0, 0.1, T.noise_generator(0, T.TRAIN_NOISE_STREAM, 3))
    torch.testing.assert_close(shifted - 3.0, first, rtol=0, atol=1e-6)  # q- = q + epsilon


def test_map_is_minus_the_discriminator_by_hand() -> None:
    torch.manual_seed(0)
    d = T.discriminator_network(3, 4).eval()
    kinds = [type(m) for m in d]
    assert kinds == [torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.LeakyReLU, torch.nn.Conv2d]
    assert d[2].negative_slope == 0.2 and d[3].bias is None and d[3].out_channels == 1
    q = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    # by hand, in evaluation mode (fresh running statistics: mean 0, variance 1)
    w1, b1 = d[0].weight[:, :, 0, 0].detach().numpy(), d[0].bias.detach().numpy()
    w2 = d[3].weight[0, :, 0, 0].detach().numpy()
    rows = q.permute(0, 2, 3, 1).numpy()  # (N, h, w, C)
    hidden = (rows @ w1.T + b1) / np.sqrt(1.0 + d[1].eps)
    hidden = np.where(hidden > 0, hidden, 0.2 * hidden)
    with torch.no_grad():
        amap = T.anomaly_map(d, q, (2, 2))
        np.testing.assert_allclose(amap.numpy(), -(hidden @ w2), atol=1e-6)
        # at a larger size: -D upsampled bilinearly with half-pixel centres
        up = torch.nn.functional.interpolate(
            -d(q), size=(5, 7), mode="bilinear", align_corners=False
        )
        np.testing.assert_allclose(T.anomaly_map(d, q, (5, 7)).numpy(), up[:, 0].numpy())


def test_standardisation_by_hand() -> None:
    features = torch.randn(6, 4, 3, 5, generator=torch.Generator().manual_seed(2)) * 1e-3 + 0.5
    mean, scale = T.feature_statistics(features.split([1, 3, 2]))  # merged part by part
    rows = features.permute(0, 2, 3, 1).reshape(-1, 4).double()
    np.testing.assert_allclose(mean.numpy(), rows.mean(0).numpy(), rtol=1e-6)
    expected = float((rows - rows.mean(0)).pow(2).mean().sqrt())
    assert float(scale) == pytest.approx(expected, rel=1e-5)
    out = T.Standardise(mean, scale)(features)
    assert float(out.mean(dim=(0, 2, 3)).abs().max()) < 1e-4
    assert float(out.pow(2).mean()) == pytest.approx(1.0, rel=1e-4)  # the RMS spread is 1
    constant = torch.ones(2, 4, 3, 3)
    assert float(T.feature_statistics([constant])[1]) == 1.0  # nothing to standardise


# -- fitting, ONNX, persistence ----------------------------------------------------------------


def test_onnx_map_equals_torch_within_1e_4(images: list[np.ndarray]) -> None:
    data = to_network_input(images[:6], InputSpec(size=(SIZE, SIZE)))
    result = T.train(data, replace(TINY, epochs=1, val_fraction=0.0))
    assert tuple(result.heads["standardise"].mean.shape) == (1, CHANNELS, 1, 1)
    assert result.heads["discriminator"][0].out_channels == TINY.hidden
    model = SimpleNet(TINY)
    model.graph = result.onnx
    batch = np.random.default_rng(7).normal(0.0, 1.0, (3, 3, SIZE, SIZE)).astype(np.float32)
    onnx_map = model.run_graph(batch)["map"]
    with torch.no_grad():
        expected = T.Scorer(result.features, result.heads, TINY.size)(torch.from_numpy(batch))
    assert onnx_map.shape == expected.shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(onnx_map, expected.numpy(), atol=1e-4, rtol=1e-4)
    assert float(expected.std()) > 1e-2  # a map that varies, not a constant that always agrees


def test_anomalies_score_above_normal_images(fitted: SimpleNet) -> None:
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
    assert (summary.train_images, summary.val_images) == (14, 2)
    assert [h["epoch"] for h in fitted.history] == list(range(summary.epochs_run))
    assert fitted.history[-1]["train_loss"] < fitted.history[0]["train_loss"]
    best = min(fitted.history, key=lambda h: h["val_loss"])
    assert (summary.best_epoch, summary.best_val_loss) == (best["epoch"], best["val_loss"])
    assert summary.best_val_loss < 1.0  # below 1: D(q) = D(q-) = 0, the loss of learning nothing


def test_save_load_round_trip(fitted: SimpleNet, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    test_images = [textured(rng, square=bool(i % 2))[0] for i in range(5)]
    path = artifact.save(fitted.to_artifact(), tmp_path / "simplenet.vad")
    loaded_artifact = artifact.load(path)
    assert loaded_artifact.method == "simplenet" and loaded_artifact.meta["graphs"] == ["simplenet"]
    loaded = SimpleNet.from_artifact(loaded_artifact)
    assert loaded.config == fitted.config and loaded.input_spec == fitted.input_spec
    assert loaded.summary == fitted.summary
    before, after = fitted.predict(test_images), loaded.predict(test_images)
    np.testing.assert_array_equal(before.scores, after.scores)
    np.testing.assert_array_equal(before.maps, after.maps)


def test_training_is_deterministic_under_a_seed(
    images: list[np.ndarray], fitted: SimpleNet
) -> None:
    again = SimpleNet(TINY)
    again.fit(images)
    assert again.graph == fitted.graph and again.history == fitted.history
    test_images = [textured(np.random.default_rng(4), square=True)[0]]
    np.testing.assert_array_equal(again.predict(test_images).maps, fitted.predict(test_images).maps)
    scale = T.Standardise(torch.zeros(CHANNELS), torch.ones(()))
    ours, other = T.head_networks(TINY, scale), T.head_networks(replace(TINY, seed=5), scale)
    assert not torch.equal(ours["adaptor"].weight, other["adaptor"].weight)
    assert not torch.equal(ours["discriminator"][0].weight, other["discriminator"][0].weight)


def test_held_out_loss_is_reproducible(images: list[np.ndarray]) -> None:
    data = to_network_input(images[:6], InputSpec(size=(SIZE, SIZE)))
    features = T.TeacherFeatures(T.feature_network(TINY), data, TINY.batch_size)
    index = np.arange(6)
    heads = T.head_networks(TINY, T.standardise_network(features, index, TINY.batch_size))
    first = T.evaluate_loss(heads, features, index, TINY)
    torch.randn(100)  # torch's global stream moves; the held-out noise does not
    assert T.evaluate_loss(heads, features, index, TINY) == first
    assert T.evaluate_loss(heads, features, index, replace(TINY, seed=1)) != first


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
    state = straight.heads.state_dict()
    assert {"standardise.mean", "adaptor.weight", "discriminator.1.running_var"} <= set(state)
    for key, value in state.items():
        torch.testing.assert_close(value, resumed.heads.state_dict()[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="other options"):
        T.train(data, replace(config, noise_std=0.2))
    with pytest.raises(ValueError, match="other training images"):
        T.train(data[:6], config)
    # the backbone is frozen: untouched by training, no gradients
    fresh = T.feature_network(config).state_dict()
    for key, value in straight.features.state_dict().items():
        torch.testing.assert_close(value, fresh[key], rtol=0, atol=0)
    assert not any(p.requires_grad for p in straight.features.parameters())


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


def test_inference_does_not_import_torch(fitted: SimpleNet, tmp_path: Path) -> None:
    path = artifact.save(fitted.to_artifact(), tmp_path / "simplenet.vad")
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from vad_inspection.vad import artifact
        from vad_inspection.vad.simplenet import SimpleNet
        model = SimpleNet.from_artifact(artifact.load({str(path)!r}))
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


def test_bad_options_images_and_unfitted_use_are_refused(fitted: SimpleNet) -> None:
    with pytest.raises(ValueError, match="at least 16 px"):
        SimpleNetConfig(size=(8, 8))
    with pytest.raises(ValueError, match="batch_size"):
        SimpleNetConfig(batch_size=0)
    with pytest.raises(ValueError, match="noise_std"):
        SimpleNetConfig(noise_std=0.0)
    with pytest.raises(ValueError, match="hidden"):
        SimpleNetConfig(hidden=0)
    with pytest.raises(ValueError, match="th_pos must be above th_neg"):
        SimpleNetConfig(th_pos=-0.5, th_neg=0.5)
    with pytest.raises(ValueError, match="discriminator_lr"):
        SimpleNetConfig(discriminator_lr=0.0)
    with pytest.raises(ValueError, match="weight_decay"):
        SimpleNetConfig(adaptor_weight_decay=-1.0)
    with pytest.raises(ValueError, match="val_fraction"):
        SimpleNetConfig(val_fraction=1.0)
    with pytest.raises(Exception, match="unknown backbone"):
        SimpleNetConfig(backbone="vgg")
    with pytest.raises(InputError, match="two normal"):
        SimpleNet(TINY).fit([np.zeros((SIZE, SIZE, 3), np.uint8)])
    with pytest.raises(RuntimeError, match="not fitted"):
        SimpleNet(TINY).predict([np.zeros((SIZE, SIZE, 3), np.uint8)])
    with pytest.raises(InputError, match="3-channel"):
        fitted.predict([np.zeros((SIZE, SIZE), np.uint8)])
    assert SimpleNetConfig.from_dict(TINY.to_dict()) == TINY
