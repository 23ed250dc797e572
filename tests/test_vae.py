"""The crack paper's VAE: loss terms by hand, Grad-CAM folding, ONNX fidelity, persistence,
determinism, resumable training and torch-free inference. Tiny images, one or two epochs."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scenes import scenes

from vad_inspection.vad import artifact
from vad_inspection.vad.calibration import from_normal_scores
from vad_inspection.vad.preprocess import InputError
from vad_inspection.vad.registry import CommonOptions, create_model, load_model, save_model
from vad_inspection.vad.vae import (
    GRAPH_OUTPUTS,
    VAE,
    VAEConfig,
    blend_weights,
    cut_image,
    fit_input,
    network_input,
    tile_origins,
)

torch = pytest.importorskip("torch")
T = pytest.importorskip("vad_inspection.vad.vae_train")

SIZE = 16
TINY = VAEConfig(size=(SIZE, SIZE), width=4, latent_dim=4, epochs=2, batch_size=8, patience=5)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return scenes(0, SIZE, 24)[0]


@pytest.fixture(scope="module")
def fitted(images: list[np.ndarray]) -> VAE:
    model = VAE(TINY)
    model.fit(images)
    return model


# -- loss terms against hand computation ------------------------------------------------------


def test_log_barrier_branches_by_hand() -> None:
    t = 2.0  # edge -1/t^2 = -0.25
    z = torch.tensor([-1.0, -0.5, 0.5, 0.0], dtype=torch.float64)
    expected = [
        0.0,  # -(1/2) log 1
        -0.5 * math.log(0.5),  # 0.34657
        2 * 0.5 - 0.5 * math.log(0.25) + 0.5,  # linear extension: 2.19315
        -0.5 * math.log(0.25) + 0.5,  # 1.19315
    ]
    assert T.log_barrier(z, t).tolist() == pytest.approx(expected, abs=1e-12)


def test_log_barrier_is_continuous_with_slope_t_at_the_edge() -> None:
    t = 20.0
    edge = -1.0 / t**2
    below = torch.tensor(edge - 1e-9, dtype=torch.float64, requires_grad=True)
    above = torch.tensor(edge + 1e-9, dtype=torch.float64, requires_grad=True)
    at_edge = -math.log(-edge) / t
    for z in (below, above):
        value = T.log_barrier(z, t)
        assert float(value.detach()) == pytest.approx(at_edge, abs=1e-6)
        (slope,) = torch.autograd.grad(value, z)
        assert float(slope) == pytest.approx(t, rel=1e-5)
    # the two formulas agree exactly at the edge itself
    linear = t * edge - math.log(1 / t**2) / t + 1 / t
    assert linear == pytest.approx(at_edge, abs=1e-12)
    assert not torch.isnan(T.log_barrier(torch.tensor([5.0, -5.0]), t)).any()


def test_reconstruction_kl_and_coverage_by_hand() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    x_hat = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[1.0, 0.0], [0.0, 0.0]]]])
    # image 1: 0 + 1 + 4 + 9 = 14; image 2: 1; batch mean 7.5
    assert float(T.reconstruction_loss(x, x_hat)) == pytest.approx(7.5)
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    # -0.5 * [(1 + 0 - 1 - 1) + (1 + log 2 - 0 - 2)] = 1 - log(2) / 2
    assert float(T.kl_divergence(mu, logvar)) == pytest.approx(1 - math.log(2) / 2)
    assert float(T.kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4))) == 0.0
    a = torch.tensor([[[[1.0, 0.5], [0.5, 0.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    assert T.coverage(a).tolist() == pytest.approx([0.5, 0.0])


def test_variants_have_the_loss_terms_of_the_ablation() -> None:
    x = torch.randn(4, 3, SIZE, SIZE)
    for variant, expected in [
        ("vae", {"reconstruction", "kl", "coverage", "total"}),
        ("vae_plain", {"reconstruction", "kl", "total"}),
        ("ae", {"reconstruction", "total"}),
    ]:
        config = replace(TINY, variant=variant)
        torch.manual_seed(0)
        terms = T.loss_terms(T.ConvVAE(config, 3), x, config, torch.Generator().manual_seed(1))
        assert set(terms) == expected
        weighted = terms["reconstruction"] + config.beta * terms.get("kl", 0)
        weighted = weighted + config.lam * terms.get("coverage", 0)
        assert float(terms["total"].detach()) == pytest.approx(float(weighted.detach()), rel=1e-6)


# -- network and Grad-CAM ---------------------------------------------------------------------


def test_encoder_has_five_blocks_and_a_32_d_latent_by_default() -> None:
    config = VAEConfig(size=(64, 64), width=4)
    net = T.ConvVAE(config, 3)
    assert len(net.encoder.blocks) == 5 and len(net.decoder.blocks) == 5
    assert net.encoder.z_mu.out_features == 32 and net.encoder.z_logvar.out_features == 32
    assert net.encoder.grid == (8, 8)  # three halving blocks for 64 px
    out = net(torch.zeros(2, 3, 64, 64))
    assert out["x_hat"].shape == (2, 3, 64, 64) and out["attention"].shape == (2, 1, 64, 64)
    assert T.ConvVAE(replace(config, variant="ae"), 3).encoder.z_logvar is None


def test_folded_gradcam_weights_equal_backpropagated_ones() -> None:
    torch.manual_seed(0)
    net = T.ConvVAE(TINY, 3).eval()
    x = torch.randn(5, 3, SIZE, SIZE)
    per_image = T.gradcam_weights_autograd(net, x)
    folded = net.gradcam_weights().detach()
    assert per_image.shape == (5, folded.shape[0])
    torch.testing.assert_close(per_image, folded.expand_as(per_image), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        f = net.encoder.features(x)
        a = T.attention(f, folded, TINY.size)
        manual = torch.sigmoid((f * per_image[:, :, None, None]).sum(1, keepdim=True))
    manual = torch.nn.functional.interpolate(manual, size=TINY.size, mode="bilinear")
    torch.testing.assert_close(a, manual, rtol=1e-5, atol=1e-6)
    assert ((a > 0) & (a < 1)).all()


# -- fitting, ONNX, persistence ---------------------------------------------------------------


def test_onnx_outputs_equal_torch_within_1e_4(images: list[np.ndarray]) -> None:
    spec, data = fit_input(images, TINY)
    result = T.train(data, replace(TINY, epochs=1))
    model = VAE(TINY)
    model.input, model.graph = spec, result.onnx
    batch = network_input(images[:6], spec)
    onnx_out = model.run_graph(batch)
    with torch.no_grad():
        torch_out = T.Scorer(result.network.eval())(torch.from_numpy(batch))
    for name, expected in zip(GRAPH_OUTPUTS, torch_out, strict=True):
        np.testing.assert_allclose(onnx_out[name], expected.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(
        result.gradcam_weights, result.network.gradcam_weights().detach().numpy()
    )


def test_fit_predict_calibrate_and_maps_at_input_resolution(fitted: VAE) -> None:
    test_images, _, _ = scenes(1, SIZE, 4, defect_every=2)
    prediction = fitted.predict(test_images)
    assert prediction.scores.shape == (4,) and prediction.maps.shape == (4, SIZE, SIZE)
    assert np.isfinite(prediction.maps).all()
    assert fitted.summary.train_images + fitted.summary.val_images == 24
    assert fitted.calibration is not None and fitted.calibration.rule == "mean+1std"
    assert fitted.segment(test_images).shape == (4, SIZE, SIZE)
    assert fitted.config.map_source == "reconstruction"
    attention = fitted.with_options(map_source="attention")
    assert attention.predict(test_images).maps.shape == (4, SIZE, SIZE)
    assert attention.pixel_threshold is None  # calibrated for the other map: dropped


def test_larger_frames_are_tiled_with_overlap_and_blended(fitted: VAE) -> None:
    assert tile_origins(64, 16) == [0, 16, 32, 48]  # overlap 0: the minimal cover
    assert tile_origins(40, 16) == [0, 12, 24]
    assert tile_origins(10, 16) == [0]
    assert tile_origins(64, 16, 4) == [0, 12, 24, 36, 48]
    for length, overlap in ((37, 4), (100, 8), (17, 5)):
        origins = tile_origins(length, 16, overlap)
        assert origins[0] == 0 and origins[-1] + 16 == length
        assert all(b - a <= 16 - overlap for a, b in itertools.pairwise(origins))
    frame = np.concatenate([np.concatenate(scenes(2, SIZE, 3)[0], 1)] * 2, 0)  # 32 x 48
    cut = cut_image(frame, fitted.config)  # overlap 0.25 of 16 px: at least 4 px
    assert cut.rows == (0, 8, 16) and cut.cols == (0, 11, 21, 32)
    prediction = fitted.predict([frame])
    assert prediction.maps.shape == (1, 32, 48)
    tiles = fitted.predict(cut.pieces(fitted.input.size))
    assert prediction.scores[0] == pytest.approx(tiles.scores.max(), abs=1e-6)
    # the map is a weighted mean of the covering tiles' maps: within their range everywhere ...
    low = np.full((32, 48), np.inf, np.float32)
    high = np.full((32, 48), -np.inf, np.float32)
    for k, (r, c) in enumerate((r, c) for r in cut.rows for c in cut.cols):
        np.minimum(
            low[r : r + SIZE, c : c + SIZE], tiles.maps[k], out=low[r : r + SIZE, c : c + SIZE]
        )
        np.maximum(
            high[r : r + SIZE, c : c + SIZE], tiles.maps[k], out=high[r : r + SIZE, c : c + SIZE]
        )
    assert (prediction.maps[0] >= low - 1e-5).all() and (prediction.maps[0] <= high + 1e-5).all()
    # ... and exactly the one tile's where only one covers (the frame's corner)
    np.testing.assert_allclose(prediction.maps[0, :8, :11], tiles.maps[0, :8, :11], atol=1e-6)
    small = fitted.predict([frame[:12, :10]])  # smaller than a tile: enlarged, map back
    assert small.maps.shape == (1, 12, 10) and np.isfinite(small.maps).all()
    assert cut_image(frame[:12, :10], fitted.config).work.shape[:2] == (19, 16)  # aspect kept


def test_blend_weights_fade_tiles_into_each_other() -> None:
    for origins, length in (([0, 12, 24, 36, 48], 64), ([0, 11, 21, 32], 48), ([0, 16], 32)):
        weights = blend_weights(origins, 16)
        total = np.zeros(length)
        for origin, w in zip(origins, weights, strict=True):
            assert (w > 0).all() and w.max() == 1.0
            total[origin : origin + 16] += w
        np.testing.assert_allclose(total, 1.0, atol=1e-12)  # a partition of unity
    [alone] = blend_weights([0], 16)
    np.testing.assert_array_equal(alone, np.ones(16))


def _border_jumps(values: np.ndarray, origins: tuple[int, ...], axis: int) -> tuple[float, float]:
    """Largest step between neighbouring pixels along ``axis`` across a tile border, and inside."""
    steps = np.moveaxis(np.abs(np.diff(values, axis=axis)), axis, 0)
    at = np.zeros(len(steps), dtype=bool)
    for border in {b for o in origins for b in (o, o + SIZE)} - {0, values.shape[axis]}:
        at[border - 1] = True
    return float(steps[at].max()), float(steps[~at].max())


def test_stitched_map_has_no_seam_at_tile_borders(fitted: VAE) -> None:
    """On a smoothly varying frame no step across a tile border is larger than the steps inside
    the tiles; the maximum of overlapping tiles (the old stitching) steps at the borders."""
    ramp = np.add.outer(np.linspace(0, 60, 40), np.linspace(60, 160, 70))
    frame = np.repeat(ramp[:, :, None], 3, axis=2).astype(np.uint8)
    cut = cut_image(frame, fitted.config)
    blended = fitted.predict([frame]).maps[0]
    tiles = fitted.predict(cut.pieces(fitted.input.size)).maps
    maximum = np.full(frame.shape[:2], -np.inf, np.float32)
    for k, (r, c) in enumerate((r, c) for r in cut.rows for c in cut.cols):
        view = maximum[r : r + SIZE, c : c + SIZE]
        np.maximum(view, tiles[k], out=view)
    for axis, origins in ((0, cut.rows), (1, cut.cols)):
        border, inside = _border_jumps(blended, origins, axis)
        assert border <= inside, (axis, border, inside)
        old_border, old_inside = _border_jumps(maximum, origins, axis)
        assert old_border > 1.5 * old_inside  # the seam this replaced, on the same tiles


def test_save_load_round_trip(fitted: VAE, tmp_path: Path) -> None:
    test_images, _, _ = scenes(3, SIZE, 5, defect_every=2)
    path = save_model(fitted, tmp_path / "vae.vad", fitted.calibration)
    loaded, calibration = load_model(path)
    assert isinstance(loaded, VAE) and loaded.name == "vae"
    assert loaded.config == fitted.config and loaded.input == fitted.input
    assert calibration == fitted.calibration == loaded.calibration
    assert loaded.pixel_threshold == fitted.pixel_threshold
    assert loaded.summary == fitted.summary
    before, after = fitted.predict(test_images), loaded.predict(test_images)
    np.testing.assert_array_equal(before.scores, after.scores)
    np.testing.assert_array_equal(before.maps, after.maps)
    meta = artifact.load(path).meta
    assert meta["input"]["network_channels"] == 3 and meta["graphs"] == ["vae"]


def test_training_is_deterministic_under_a_seed(images: list[np.ndarray]) -> None:
    _, data = fit_input(images, TINY)
    first, second = T.train(data, TINY), T.train(data, TINY)
    other = T.train(data, replace(TINY, seed=1))
    for key, value in first.network.state_dict().items():
        torch.testing.assert_close(value, second.network.state_dict()[key], rtol=0, atol=0)
    assert first.onnx == second.onnx
    assert first.history == second.history
    assert not torch.equal(first.network.encoder.z_mu.weight, other.network.encoder.z_mu.weight)


def test_resumed_training_equals_uninterrupted(images: list[np.ndarray], tmp_path: Path) -> None:
    _, data = fit_input(images, TINY)
    config = replace(TINY, epochs=3, checkpoint_dir=str(tmp_path / "ckpt"))
    T.train(data, replace(config, epochs=1))  # "interrupted" after one epoch
    assert (tmp_path / "ckpt" / T.CHECKPOINT).is_file()
    resumed = T.train(data, config)
    straight = T.train(data, replace(config, checkpoint_dir=None))
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert resumed.history == straight.history
    for key, value in straight.network.state_dict().items():
        torch.testing.assert_close(value, resumed.network.state_dict()[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="other options"):
        T.train(data, replace(config, beta=2.0))


def test_early_stopping_on_held_out_loss(
    images: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, data = fit_input(images, TINY)
    losses = iter([5.0, 4.0, 4.5, 4.2, 1.0, 1.0])
    monkeypatch.setattr(T, "evaluate_loss", lambda *_: {"total": next(losses)})
    result = T.train(data, replace(TINY, epochs=6, patience=2))
    assert result.summary.stopped_early and result.summary.epochs_run == 4
    assert result.summary.best_epoch == 1 and result.summary.best_val_loss == 4.0
    assert len(result.val_index) >= 2


def test_gray_channels_and_wrong_channel_count(images: list[np.ndarray]) -> None:
    spec, data = fit_input(images, replace(TINY, channels="gray"))
    assert spec.image_channels == 3 and spec.network_channels == 1 and data.shape[1] == 1
    np.testing.assert_allclose(network_input(images, spec), data, atol=1e-6)
    with pytest.raises(InputError, match="3-channel"):
        network_input([images[0][:, :, 0]], spec)


def test_registry_builds_the_three_variants() -> None:
    common = CommonOptions(size=32, seed=3)
    for name in ("vae", "vae_plain", "ae"):
        model = create_model(name, common, epochs=1)
        assert isinstance(model, VAE) and model.name == name
        assert model.config.size == (32, 32) and model.config.seed == 3
    with pytest.raises(KeyError, match="no option"):
        create_model("vae", common, coreset_ratio=0.1)


def test_inference_does_not_import_torch(fitted: VAE, tmp_path: Path) -> None:
    path = save_model(fitted, tmp_path / "vae.vad", fitted.calibration)
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from vad_inspection.vad.registry import load_model
        model, calibration = load_model({str(path)!r})
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


def test_polarity_keeps_only_pixels_darker_or_brighter_than_the_reconstruction(
    fitted: VAE,
) -> None:
    from vad_inspection.vad.ops import gaussian_blur

    test_images, _, _ = scenes(3, SIZE, 3, defect_every=1)
    raw = fitted.run_graph(network_input(test_images, fitted.input))
    residual = raw["residual"][:, 0]
    maps = {}
    for polarity, expected in (
        ("darker", np.maximum(-residual, 0)),
        ("brighter", np.maximum(residual, 0)),
        ("both", raw["error"][:, 0]),
    ):
        model = fitted.with_options(polarity=polarity, score="max")
        assert model.pixel_threshold is None or polarity == fitted.config.polarity
        prediction = model.predict(test_images)
        want = gaussian_blur(expected.astype(np.float32), fitted.config.sigma)
        np.testing.assert_allclose(prediction.maps, want, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(prediction.scores, want.reshape(3, -1).max(1), rtol=1e-5)
        maps[polarity] = prediction.maps
    # darker and brighter split the signed residual: where one is positive the other is zero
    dark, bright = np.maximum(-residual, 0), np.maximum(residual, 0)
    assert (dark * bright == 0).all() and (dark + bright > 0).any()
    assert not np.allclose(maps["darker"], maps["brighter"])


def test_line_length_puts_the_darker_error_through_the_line_detector(fitted: VAE) -> None:
    from vad_inspection.vad.ops import gaussian_blur, line_response

    test_images, _, _ = scenes(3, SIZE, 3, defect_every=1)
    raw = fitted.run_graph(network_input(test_images, fitted.input))
    model = fitted.with_options(polarity="darker", score="max", line_length=7, sigma=0.0)
    assert model.pixel_threshold is None  # calibrated on another map: dropped
    prediction = model.predict(test_images)
    want = line_response(np.maximum(-raw["residual"][:, 0], 0).astype(np.float32), 7)
    np.testing.assert_allclose(prediction.maps, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(prediction.scores, want.reshape(3, -1).max(1), rtol=1e-5)
    # sigma smooths the line response (not the error before it), as in the crack options
    smoothed = model.with_options(sigma=1.0).predict(test_images)
    np.testing.assert_allclose(smoothed.maps, gaussian_blur(want, 1.0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(smoothed.maps, want, atol=1e-4)
    for bad in (4, 1, -3):
        with pytest.raises(ValueError, match="line_length must be 0"):
            VAEConfig(line_length=bad)


def test_mask_rule_judges_width_on_the_smoothed_error_before_the_line_detector(
    fitted: VAE,
) -> None:
    from vad_inspection.vad.masks import MaskRule, defect_masks
    from vad_inspection.vad.ops import gaussian_blur

    test_images, _, _ = scenes(4, SIZE, 3, defect_every=1)
    raw = fitted.run_graph(network_input(test_images, fitted.input))
    options = dict(polarity="darker", score="max", line_length=7, sigma=1.0)
    plain = fitted.with_options(**options).predict(test_images)
    assert plain.depth is None and plain.rule.is_plain
    model = fitted.with_options(**options, mask_width_fraction=0.5, mask_min_length=3)
    prediction = model.predict(test_images)
    np.testing.assert_array_equal(prediction.maps, plain.maps)  # the map is untouched
    darker = np.maximum(-raw["residual"][:, 0], 0).astype(np.float32)
    np.testing.assert_allclose(prediction.depth, gaussian_blur(darker, 1.0), rtol=1e-5, atol=1e-6)
    assert prediction.rule == MaskRule(0.5, 3)
    threshold = float(np.quantile(prediction.maps, 0.8))
    masks = prediction.masks(threshold)
    assert masks.sum() < (prediction.maps >= threshold).sum()
    assert not (masks & (prediction.maps < threshold)).any()
    # a frame of tiles carries its depth stitched like its map, and segment() uses the rule
    frame = np.concatenate(test_images[:2], 1)
    tiled = model.predict([frame])
    assert tiled.depth.shape == (1, SIZE, 2 * SIZE)
    alone = cut_image(frame, model.config).cols[-2] + SIZE  # only the last tile from here on
    np.testing.assert_allclose(
        tiled.depth[0, :, alone:], prediction.depth[1][:, alone - SIZE :], atol=1e-6
    )
    model.calibrate(prediction.scores, prediction.maps)
    want = defect_masks(tiled.maps, model.pixel_threshold, MaskRule(0.5, 3), tiled.depth)
    assert want.any()
    np.testing.assert_array_equal(model.segment([frame]), want)
    assert model.with_options(mask_min_length=0).pixel_threshold == model.pixel_threshold
    with pytest.raises(ValueError, match="width_fraction must be in"):
        VAEConfig(mask_width_fraction=1.5)


# -- images of varying size: one policy in fit, calibration and predict -----------------------


def _varied(seed: int, count: int) -> list[np.ndarray]:
    """Crops of 12 to 44 px a side (some smaller than a tile, most not a multiple of it), as
    magnetic tile's crops vary around the model's size."""
    rng = np.random.default_rng(seed)
    big = scenes(seed, 48, count)[0]
    sizes = rng.integers(12, 45, (count, 2))
    return [image[:h, :w] for image, (h, w) in zip(big, sizes, strict=True)]


@pytest.mark.parametrize("policy", ["tile", "resize"])
def test_fit_and_predict_on_images_of_varying_size(
    policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fitting on crops of many sizes used to train, then fail calibrating (a 4,000-character
    error, no model). One size policy now serves fit, calibration and predict: a training image
    is cut into the same pieces predict scores (before, fit resized it -- score 0.33 on a
    magnetic-tile crop -- while predict tiled it -- 0.79)."""
    seen: dict[str, np.ndarray] = {}
    real_train = T.train

    def spy(data: np.ndarray, config: VAEConfig, groups: np.ndarray) -> object:
        seen["data"], seen["groups"] = data.copy(), groups
        return real_train(data, config, groups=groups)

    monkeypatch.setattr(T, "train", spy)
    images = _varied(5, 20)
    assert len({im.shape for im in images}) > 10
    model = VAE(replace(TINY, epochs=1, large_images=policy))
    model.fit(images)
    summary = model.summary
    assert summary.train_images + summary.val_images == 20
    pieces = summary.train_pieces + summary.val_pieces
    assert pieces == len(seen["data"]) and (pieces > 20 if policy == "tile" else pieces == 20)
    # the same large image scored from what fit trained on and by predict
    largest = max(range(20), key=lambda i: images[i].shape[0] * images[i].shape[1])
    trained_on = seen["data"][seen["groups"] == largest]
    assert len(trained_on) == (
        len(cut_image(images[largest], model.config).pieces(model.config.size))
    )
    assert (len(trained_on) > 1) == (policy == "tile")
    from_fit = float(model._run(trained_on).scores.max())
    assert float(model.predict([images[largest]]).scores[0]) == pytest.approx(from_fit, rel=1e-5)
    # calibrated through predict on the held-out images: the threshold means predict's scores
    _, val = T.held_out(20, TINY.val_fraction, TINY.seed)
    held_out = model.predict([images[i] for i in val]).scores
    expected = from_normal_scores(held_out, TINY.threshold_k, TINY.threshold_quantile)
    assert model.calibration.threshold == pytest.approx(expected.threshold, rel=1e-5)
    # several sizes in one call: each scored as alone, maps on the model's grid
    test = _varied(6, 5)
    mixed = model.predict(test)
    assert mixed.scores.shape == (5,) and mixed.maps.shape == (5, SIZE, SIZE)
    for image, score in zip(test, mixed.scores, strict=True):
        alone = model.predict([image])
        assert alone.maps.shape == (1, *image.shape[:2])
        assert float(alone.scores[0]) == pytest.approx(float(score), rel=1e-5)
    assert model.segment(test).shape == (5, SIZE, SIZE)


def test_bad_images_are_refused_before_training(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(T, "train", lambda *a, **k: calls.append(1))
    images = _varied(8, 6)
    with pytest.raises(InputError, match="image 5 has 1 channel") as refused:
        VAE(TINY).fit([*images[:5], images[5][:, :, 0]])
    with pytest.raises(InputError, match="image 2 is empty"):
        VAE(TINY).fit([*images[:2], np.zeros((0, 5, 3), np.uint8), *images[3:]])
    assert calls == [] and len(str(refused.value)) < 120


def test_predict_refuses_a_wrong_image_with_a_short_message(fitted: VAE) -> None:
    images = [*_varied(9, 300), np.zeros((20, 30), np.uint8)]
    with pytest.raises(InputError, match="image 300 has 1 channel") as refused:
        fitted.predict(images)
    assert len(str(refused.value)) < 120


def test_size_policy_options_are_checked() -> None:
    with pytest.raises(ValueError, match="large_images must be one of"):
        VAEConfig(large_images="crop")
    for bad in (-0.1, 0.6):
        with pytest.raises(ValueError, match="tile_overlap must be in"):
            VAEConfig(tile_overlap=bad)


def test_old_model_files_load_with_their_tiling_and_never_draw_progress(fitted: VAE) -> None:
    noisy = fitted.with_options()
    noisy.config = replace(noisy.config, progress=True)
    art = noisy.to_artifact()
    assert art.meta["config"]["progress"] is False  # never stored as on
    config = dict(art.meta["config"], progress=True)  # as files written before this stored it
    del config["large_images"], config["tile_overlap"]
    training = {
        k: v for k, v in art.meta["training"].items() if k not in ("train_pieces", "val_pieces")
    }
    old = artifact.Artifact(
        {**art.meta, "config": config, "training": training}, art.graphs, art.arrays
    )
    loaded = VAE.from_artifact(old)
    assert loaded.config.progress is False
    assert (loaded.config.large_images, loaded.config.tile_overlap) == ("tile", 0.0)
    assert loaded.summary.train_pieces is None
    frame = np.concatenate(scenes(2, SIZE, 3)[0], 1)  # 16 x 48: three tiles, no overlap
    assert cut_image(frame, loaded.config).cols == (0, 16, 32)
    assert VAE.from_artifact(fitted.to_artifact()).config.tile_overlap == 0.25
