"""SimpleNet: the truncated L1 loss, the noise, the standardisation and the map by hand, ONNX
fidelity, anomalies found and where, the seeded heads, the reproducible held-out loss, the
refusals of its own options. Tiny 32 px images, a short fit; persistence, determinism, resumable
training, early stopping, torch-free inference and the common refusals are tested with the other
methods trained with torch (``test_trained_methods.py``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from tiny_trained import METHODS, SIZE, assert_peaks_on_squares, detects_squares, images

from vad_inspection.vad.preprocess import InputSpec, to_network_input
from vad_inspection.vad.simplenet import SimpleNet, SimpleNetConfig

torch = pytest.importorskip("torch")
T = pytest.importorskip("vad_inspection.vad.simplenet_train")
pytestmark = pytest.mark.usefixtures("one_thread")

#: 16 images, 2 held out, batches of 4: 4 steps per epoch (an 8 x 8 grid). 20 epochs, the
#: default: at 8 the discriminator had not yet put every map's peak on its square.
TINY = METHODS["simplenet"].tiny
CHANNELS = 24 + 32 + 96  # MobileNetV2's three taps


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


# -- fitting and ONNX --------------------------------------------------------------------------


def test_onnx_map_equals_torch_within_1e_4() -> None:
    data = to_network_input(list(images()[:6]), InputSpec(size=(SIZE, SIZE)))
    result = T.train(data, replace(TINY, epochs=1, val_fraction=0.0))
    assert tuple(result.heads["standardise"].mean.shape) == (1, CHANNELS, 1, 1)
    assert result.heads["discriminator"][0].out_channels == TINY.hidden
    # one module: the state that is kept as the best, checkpointed and restored holds all three
    state = result.heads.state_dict()
    assert {"standardise.mean", "adaptor.weight", "discriminator.1.running_var"} <= set(state)
    model = SimpleNet(TINY)
    model.graph = result.onnx
    batch = np.random.default_rng(7).normal(0.0, 1.0, (3, 3, SIZE, SIZE)).astype(np.float32)
    onnx_map = model.run_graph(batch)["map"]
    with torch.no_grad():
        expected = T.Scorer(result.features, result.heads, TINY.size)(torch.from_numpy(batch))
    assert onnx_map.shape == expected.shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(onnx_map, expected.numpy(), atol=1e-4, rtol=1e-4)
    assert float(expected.std()) > 1e-2  # a map that varies, not a constant that always agrees


def test_anomalies_score_above_normal_images() -> None:
    model, prediction, squares = detects_squares("simplenet", epochs=None)
    assert_peaks_on_squares(prediction, squares)
    summary = model.summary
    best = min(model.history, key=lambda h: h["val_loss"])
    assert (summary.best_epoch, summary.best_val_loss) == (best["epoch"], best["val_loss"])
    assert summary.best_val_loss < 1.0  # below 1: D(q) = D(q-) = 0, the loss of learning nothing


def test_another_seed_initialises_other_heads() -> None:
    scale = T.Standardise(torch.zeros(CHANNELS), torch.ones(()))
    ours, other = T.head_networks(TINY, scale), T.head_networks(replace(TINY, seed=5), scale)
    assert not torch.equal(ours["adaptor"].weight, other["adaptor"].weight)
    assert not torch.equal(ours["discriminator"][0].weight, other["discriminator"][0].weight)


def test_held_out_loss_is_reproducible() -> None:
    data = to_network_input(list(images()[:6]), InputSpec(size=(SIZE, SIZE)))
    features = T.TeacherFeatures(T.feature_network(TINY), data, TINY.batch_size)
    index = np.arange(6)
    heads = T.head_networks(TINY, T.standardise_network(features, index, TINY.batch_size))
    first = T.evaluate_loss(heads, features, index, TINY)
    torch.randn(100)  # torch's global stream moves; the held-out noise does not
    assert T.evaluate_loss(heads, features, index, TINY) == first
    assert T.evaluate_loss(heads, features, index, replace(TINY, seed=1)) != first


def test_bad_simplenet_options_are_refused() -> None:
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
