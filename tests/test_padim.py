"""PaDiM: fidelity to an independent torch reference, planted defects, persistence, storage in
half precision, errors."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scenes import scenes

from vad_inspection.eval.metrics import auroc, pixel_auroc
from vad_inspection.vad import artifact
from vad_inspection.vad.backbones import load_onnx, torch_feature_model
from vad_inspection.vad.padim import (
    STORAGE_CHOICES,
    PaDiM,
    PaDiMConfig,
    gaussian_parameters,
    low_rank_mahalanobis,
    low_rank_precision,
    mahalanobis,
    pack_cholesky,
    pack_precision,
    to_half,
    unpack_cholesky,
    unpack_precision,
)
from vad_inspection.vad.preprocess import InputError, InputSpec, to_network_input
from vad_inspection.vad.registry import (
    CommonOptions,
    create_model,
    load_model,
    parse_options,
    save_model,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional
SIZE = 64
TOTAL_CHANNELS = 24 + 32 + 96  # mobilenet_v2's three taps


@pytest.fixture(scope="module")
def onnx(tmp_path_factory: pytest.TempPathFactory):
    """Exported random-weight backbones by name, cached in a temporary directory only."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VAD_INSPECTION_CACHE", str(tmp_path_factory.mktemp("cache")))
    exported: dict[str, bytes] = {}

    def get(name: str) -> bytes:
        if name not in exported:
            exported[name] = load_onnx(name, "random", 0)
        return exported[name]

    yield get
    mp.undo()


@pytest.fixture(scope="module")
def backbone(onnx) -> bytes:
    return onnx("mobilenet_v2")


def _model(graph: bytes, /, **options: object) -> PaDiM:
    return PaDiM(PaDiMConfig(size=(SIZE, SIZE), **options), graph)


def _reference(name: str, train: list, test: list, index: np.ndarray, sigma: float = 4.0):
    """PaDiM written independently with torch ops in float64: scores and maps."""
    net = torch_feature_model(name, "random", 0)
    spec = InputSpec.for_channels(3, (SIZE, SIZE))
    idx = torch.from_numpy(index)

    def embed(images):
        with torch.no_grad():
            taps = net(torch.from_numpy(to_network_input(images, spec)))
        grid = taps[0].shape[-2:]
        full = torch.cat(
            [taps[0], *(F.interpolate(t, size=grid, mode="nearest") for t in taps[1:])], 1
        )
        return torch.index_select(full, 1, idx).double()

    train_emb = embed(train)
    n, d, h, w = train_emb.shape
    per_position = train_emb.reshape(n, d, h * w)
    mean = per_position.mean(0)  # (d, L)
    eye = torch.eye(d, dtype=torch.float64)
    covariance = torch.stack(
        [torch.cov(per_position[:, :, i].T) + 0.01 * eye + 1e-5 * eye for i in range(h * w)]
    )
    inverse = torch.linalg.inv(covariance)  # (L, d, d)

    emb = embed(test).reshape(len(test), d, h * w)
    delta = (emb - mean).permute(2, 0, 1)  # (L, n, d)
    dist = torch.einsum("lnd,lde,lne->nl", delta, inverse, delta).clamp(min=0).sqrt()
    maps = F.interpolate(dist.reshape(-1, 1, h, w), size=(SIZE, SIZE), mode="bilinear")
    k = 2 * int(4 * sigma + 0.5) + 1
    x = torch.arange(k, dtype=torch.float64) - k // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = (g / g.sum())[:, None] * (g / g.sum())[None, :]
    maps = F.conv2d(F.pad(maps, [k // 2] * 4, mode="reflect"), g[None, None])[:, 0]
    return maps.amax(dim=(1, 2)).numpy(), maps.numpy()


@pytest.mark.parametrize(
    ("name", "total"),
    [
        # Random ResNet18 features vary about as much as epsilon = 0.01, so the fitted
        # covariances matter; random MobileNetV2 features barely vary (the Gaussians are almost
        # epsilon * I), which checks the embedding and the map on the second backbone.
        ("resnet18", 64 + 128 + 256),
        ("mobilenet_v2", TOTAL_CHANNELS),
    ],
)
def test_matches_an_independent_torch_reference_with_an_imposed_channel_subset(
    onnx, name: str, total: int
) -> None:
    # An unordered subset like anomalib's torch.randperm(D)[:d], imposed through the config.
    index = torch.randperm(total, generator=torch.Generator().manual_seed(3))[:100]
    train, _, _ = scenes(0, SIZE, 6)
    test, _, _ = scenes(1, SIZE, 6, defect_every=2)
    model = _model(onnx(name), backbone=name, channel_index=tuple(index.tolist()))
    model.fit(train)
    np.testing.assert_array_equal(model.channel_index, index.numpy())
    assert model.mean.shape == (16 * 16, 100) and model.inv_covariance.shape == (256, 100, 100)
    prediction = model.predict(test)
    scores, maps = _reference(name, train, test, index.numpy())
    np.testing.assert_allclose(prediction.scores, scores, rtol=1e-4)
    np.testing.assert_allclose(prediction.maps, maps, rtol=1e-4, atol=1e-5 * maps.max())


def test_chunked_gaussian_fit_equals_a_single_chunk() -> None:
    vectors = np.random.default_rng(0).normal(size=(23, 5, 7)).astype(np.float32)
    whole = gaussian_parameters(vectors, 0.01, chunk=23)
    for chunk in (1, 4, 10):
        parts = gaussian_parameters(vectors, 0.01, chunk=chunk)
        np.testing.assert_array_equal(parts[0], whole[0])
        np.testing.assert_allclose(parts[1], whole[1], rtol=1e-6)
    reference = np.linalg.inv(np.cov(vectors[11].T.astype(np.float64)) + 0.01001 * np.eye(7))
    np.testing.assert_allclose(whole[1][11], reference, rtol=1e-5)


def test_packed_mahalanobis_equals_the_dense_quadratic_form() -> None:
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(9, 40, 3)).astype(np.float32)
    mean, inverse = gaussian_parameters(vectors, 0.01)
    packed = pack_precision(inverse)
    assert packed.shape == (9, 6)
    np.testing.assert_array_equal(unpack_precision(packed, 3), inverse)
    test = rng.normal(size=(9, 5, 3)).astype(np.float32)
    delta = test.astype(np.float64) - mean[:, None]
    dense = np.sqrt(np.einsum("lnd,lde,lne->ln", delta, inverse.astype(np.float64), delta))
    np.testing.assert_allclose(mahalanobis(test, mean, packed), dense, rtol=1e-5)
    assert mahalanobis(mean[:, None, :], mean, packed).max() == 0.0


def test_finds_planted_defects(backbone: bytes) -> None:
    train, _, _ = scenes(2, SIZE, 20)
    test, labels, masks = scenes(3, SIZE, 24, defect_every=2)
    model = _model(backbone)
    model.fit(train)
    prediction = model.predict(test)
    assert auroc(labels, prediction.scores) >= 0.95
    assert pixel_auroc(masks, prediction.maps) >= 0.9


def test_two_training_images_suffice_thanks_to_regularisation(backbone: bytes) -> None:
    train, _, _ = scenes(4, SIZE, 2)
    model = _model(backbone)
    model.fit(train)
    prediction = model.predict(scenes(5, SIZE, 2, defect_every=2)[0])
    assert np.isfinite(model.inv_covariance).all()
    assert np.isfinite(prediction.maps).all() and (prediction.scores > 0).all()
    with pytest.raises(InputError, match="at least two"):
        model.fit(train[:1])


def test_seed_fixes_the_channel_subset_and_the_fit(backbone: bytes) -> None:
    train, _, _ = scenes(6, SIZE, 4)
    models = []
    for seed in (0, 0, 1):
        model = _model(backbone, seed=seed)
        model.fit(train)
        models.append(model)
    for name in ("channel_index", "mean", "precision"):
        np.testing.assert_array_equal(getattr(models[0], name), getattr(models[1], name))
    index = models[0].channel_index
    assert len(index) == 100 and len(set(index.tolist())) == 100
    assert index.min() >= 0 and index.max() < TOTAL_CHANNELS
    assert not np.array_equal(index, models[2].channel_index)


def test_n_features_defaults_to_all_channels_when_the_taps_have_fewer(backbone: bytes) -> None:
    train, _, _ = scenes(7, SIZE, 3)
    model = _model(backbone, taps=("features.3", "features.6"))
    model.fit(train)
    assert sorted(model.channel_index.tolist()) == list(range(24 + 32))
    assert model.mean.shape == (256, 56)
    small = _model(backbone, n_features=10)
    small.fit(train)
    assert small.mean.shape == (256, 10)
    with pytest.raises(ValueError, match="n_features"):
        _model(backbone, n_features=TOTAL_CHANNELS + 1).fit(train)
    with pytest.raises(ValueError, match="channel_index"):
        _model(backbone, channel_index=(0, TOTAL_CHANNELS)).fit(train)


def test_save_load_round_trip_gives_identical_predictions(backbone: bytes, tmp_path: Path) -> None:
    train, _, _ = scenes(8, SIZE, 5)
    test, _, _ = scenes(9, SIZE, 4, defect_every=2)
    model = _model(backbone, n_features=40, seed=5)
    model.fit(train)
    path = artifact.save(model.to_artifact(), tmp_path / "padim.vad")
    stored = artifact.load(path)
    assert stored.method == "padim"
    assert stored.arrays["precision_packed"].dtype == np.float32
    assert stored.arrays["precision_packed"].shape == (256, 40 * 41 // 2)
    assert stored.arrays["mean"].shape == (256, 40)
    assert stored.meta["training_images"] == 5
    loaded = PaDiM.from_artifact(stored)
    assert loaded.config == replace(model.config, taps=model.taps)
    assert loaded.input_spec == model.input_spec
    np.testing.assert_array_equal(loaded.channel_index, model.channel_index)
    before, after = model.predict(test), loaded.predict(test)
    np.testing.assert_array_equal(after.scores, before.scores)
    np.testing.assert_array_equal(after.maps, before.maps)


def test_bad_inputs_raise_clear_errors(backbone: bytes) -> None:
    model = _model(backbone)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.predict(scenes(10, SIZE, 1)[0])
    with pytest.raises(RuntimeError, match="not fitted"):
        model.to_artifact()
    with pytest.raises(InputError, match="at least two"):
        model.fit([])
    train, _, _ = scenes(10, SIZE, 3)
    model.fit(train)
    with pytest.raises(InputError, match=r"1 channel.*fitted on 3-channel"):
        model.predict([train[0][:, :, :1]])
    nan = train[0].astype(np.float32)
    nan[3, 3, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        model.predict([nan])
    with pytest.raises(InputError, match="NaN"):
        _model(backbone).fit([nan, train[1]])


# -- storage: float32 (as fitted), float16, cholesky16, lowrank16 -----------------------------


def _correlated(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training ``(9, 60, 12)`` and test ``(9, 7, 12)`` vectors whose covariances are far from
    epsilon * I (condition numbers of the inverses in the hundreds), unlike random MobileNetV2
    features, so that rounding the stored matrices shows in the distances."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(9, 12, 12)) * 0.3
    train = np.einsum("lnd,lde->lne", rng.normal(size=(9, 60, 12)), mix) + 1.0
    test = np.einsum("lnd,lde->lne", rng.normal(size=(9, 7, 12)) * 1.5, mix) + 1.0
    return train.astype(np.float32), test.astype(np.float32)


def test_half_precision_distances_stay_close_to_the_dense_float64_ones() -> None:
    train, test = _correlated(11)
    mean, inverse = gaussian_parameters(train, 0.01)
    delta = test.astype(np.float64) - mean[:, None]
    dense = np.sqrt(np.einsum("lnd,lde,lne->ln", delta, inverse.astype(np.float64), delta))
    factor = pack_cholesky(inverse)
    np.testing.assert_allclose(unpack_cholesky(factor, 12), inverse, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mahalanobis(test, mean, factor, factor=True), dense, rtol=1e-5)
    half = to_half(pack_precision(inverse), "test")
    half_factor = to_half(factor, "test")
    assert half.dtype == half_factor.dtype == np.float16
    # Computed in float32 from the widened halves; the factor loses less than the precision,
    # whose quadratic form cancels.
    np.testing.assert_allclose(mahalanobis(test, mean, half), dense, rtol=1e-2)
    np.testing.assert_allclose(mahalanobis(test, mean, half_factor, factor=True), dense, rtol=1e-3)
    widened = mahalanobis(test, mean, half.astype(np.float32))
    np.testing.assert_allclose(mahalanobis(test, mean, half), widened, rtol=1e-6)


def test_low_rank_precision_by_hand() -> None:
    # precisions 1, 4, 6 on the axes; rank 1 keeps the smallest (the largest variance, 1) and the
    # other two share their mean precision 5: a = 5, V = sqrt(5 - 1) e_0
    inverse = np.diag([4.0, 1.0, 6.0]).astype(np.float32)[None]
    basis, isotropic = low_rank_precision(inverse, 1)
    assert basis.shape == (1, 1, 3) and isotropic.shape == (1,)
    assert isotropic[0] == pytest.approx(5.0)
    np.testing.assert_allclose(np.abs(basis[0, 0]), [0.0, 2.0, 0.0], atol=1e-6)
    x = np.array([[[1.0, 1.0, 1.0]]], np.float32)  # (L, n, D), mean 0
    # x^T diag(5, 1, 5) x = 11
    distance = low_rank_mahalanobis(x, np.zeros((1, 3), np.float32), basis, isotropic)
    assert distance[0, 0] == pytest.approx(np.sqrt(11.0), rel=1e-6)
    with pytest.raises(ValueError, match="rank"):
        low_rank_precision(inverse, 3)


def test_low_rank_is_exact_where_the_small_variances_share_one_value() -> None:
    # Covariances with 3 large variances along random directions and the other 9 all epsilon:
    # the rank-3 form holds them exactly, in float32, and within half precision's rounding.
    rng = np.random.default_rng(2)
    basis = np.linalg.qr(rng.normal(size=(5, 12, 12)))[0]  # orthonormal columns, per position
    variances = np.full((5, 12), 0.01)
    variances[:, :3] = [2.0, 0.7, 0.3]
    inverse = np.einsum("lij,lj,lkj->lik", basis, 1.0 / variances, basis).astype(np.float32)
    mean = rng.normal(size=(5, 12)).astype(np.float32)
    test = (mean[:, None] + rng.normal(size=(5, 7, 12)) * 0.5).astype(np.float32)
    delta = test.astype(np.float64) - mean[:, None]
    dense = np.sqrt(np.einsum("lnd,lde,lne->ln", delta, inverse.astype(np.float64), delta))
    v, a = low_rank_precision(inverse, 3)
    np.testing.assert_allclose(a, 100.0, rtol=1e-4)
    np.testing.assert_allclose(low_rank_mahalanobis(test, mean, v, a), dense, rtol=1e-4)
    half = to_half(v, "test")
    np.testing.assert_allclose(low_rank_mahalanobis(test, mean, half, a), dense, rtol=2e-3)
    # a rank too small to hold the large variances is no longer exact
    v1, a1 = low_rank_precision(inverse, 1)
    assert np.abs(low_rank_mahalanobis(test, mean, v1, a1) / dense - 1).max() > 0.01


@pytest.fixture(scope="module")
def fitted_by_storage(backbone: bytes) -> dict[str, PaDiM]:
    """One model per storage, fitted on the same five scenes (d = 40, seed 5)."""
    train, _, _ = scenes(8, SIZE, 5)
    models = {}
    for storage in STORAGE_CHOICES:
        models[storage] = _model(backbone, n_features=40, seed=5, storage=storage)
        models[storage].fit(train)
    return models


@pytest.mark.parametrize("storage", STORAGE_CHOICES)
def test_each_storage_round_trips_through_a_model_file(
    fitted_by_storage: dict[str, PaDiM], storage: str, tmp_path: Path
) -> None:
    model = fitted_by_storage[storage]
    dtype = np.float32 if storage == "float32" else np.float16
    names = {"cholesky16": ["cholesky_packed"], "lowrank16": ["lowrank_basis", "lowrank_isotropic"]}
    name = names.get(storage, ["precision_packed"])[0]
    shape = (256, 8, 40) if storage == "lowrank16" else (256, 40 * 41 // 2)
    assert model.precision.dtype == dtype  # kept as stored in memory too
    path = save_model(model, tmp_path / f"{storage}.vad", None)
    stored = artifact.load(path)
    assert stored.meta["config"]["storage"] == storage
    assert sorted(stored.arrays) == sorted(["mean", *names.get(storage, [name]), "channel_index"])
    assert stored.arrays[name].dtype == dtype and stored.arrays[name].shape == shape
    assert stored.arrays["mean"].dtype == np.float32
    loaded, _ = load_model(path)
    assert loaded.config == replace(model.config, taps=model.taps)
    assert loaded.precision.dtype == dtype
    if storage != "lowrank16":  # an approximation: its distances are checked apart
        np.testing.assert_allclose(
            loaded.inv_covariance, fitted_by_storage["float32"].inv_covariance,
            rtol=2e-3, atol=2e-3 * 100,
        )  # fmt: skip
    test, _, _ = scenes(9, SIZE, 4, defect_every=2)
    before, after = model.predict(test), loaded.predict(test)
    np.testing.assert_array_equal(after.scores, before.scores)
    np.testing.assert_array_equal(after.maps, before.maps)


def test_half_precision_scores_match_float32(fitted_by_storage: dict[str, PaDiM]) -> None:
    test, _, _ = scenes(9, SIZE, 4, defect_every=2)
    full = fitted_by_storage["float32"].predict(test)
    for storage in ("float16", "cholesky16"):
        half = fitted_by_storage[storage].predict(test)
        assert half.scores.dtype == half.maps.dtype == np.float32
        np.testing.assert_allclose(half.scores, full.scores, rtol=1e-3)
        np.testing.assert_allclose(half.maps, full.maps, rtol=1e-3, atol=1e-3 * full.maps.max())


def test_half_precision_halves_the_stored_matrices(
    fitted_by_storage: dict[str, PaDiM], tmp_path: Path
) -> None:
    packed_bytes = fitted_by_storage["float32"].precision.nbytes
    assert packed_bytes == 256 * 820 * 4
    sizes, members = {}, {}
    for storage, model in fitted_by_storage.items():
        if storage == "lowrank16":
            continue
        path = save_model(model, tmp_path / f"{storage}.vad", None)
        sizes[storage] = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            packed = [i for i in archive.infolist() if i.filename.endswith("_packed.npy")]
            members[storage] = packed[0].file_size
    for storage in ("float16", "cholesky16"):
        assert members[storage] / members["float32"] == pytest.approx(0.5, abs=1e-3)
        # The file shrinks by half the packed matrices (the graph and the rest are unchanged).
        assert sizes["float32"] - sizes[storage] == pytest.approx(packed_bytes / 2, abs=200)


def test_files_from_before_the_storage_option_load_and_score_unchanged(
    fitted_by_storage: dict[str, PaDiM], tmp_path: Path
) -> None:
    model = fitted_by_storage["float32"]
    new = model.to_artifact()
    # What the code before the option wrote: the same arrays (float32 packed precision under
    # the same name) and a config without "storage".
    assert new.arrays["precision_packed"].dtype == np.float32
    np.testing.assert_array_equal(
        new.arrays["precision_packed"], pack_precision(unpack_precision(model.precision, 40))
    )
    config = {k: v for k, v in new.meta["config"].items() if k != "storage"}
    old = artifact.Artifact({**new.meta, "config": config}, new.graphs, new.arrays)
    loaded, _ = load_model(artifact.save(old, tmp_path / "old.vad"))
    assert loaded.config.storage == "float32"
    assert loaded.precision.dtype == np.float32
    np.testing.assert_array_equal(loaded.precision, model.precision)
    test, _, _ = scenes(9, SIZE, 4, defect_every=2)
    before, after = model.predict(test), loaded.predict(test)
    np.testing.assert_array_equal(after.scores, before.scores)
    np.testing.assert_array_equal(after.maps, before.maps)


def test_storage_is_an_option_and_a_bad_value_is_refused_naming_the_choices() -> None:
    assert PaDiMConfig().storage == "float32"
    assert parse_options("padim", ["storage=lowrank16", "rank=4"]) == {
        "storage": "lowrank16",
        "rank": 4,
    }
    assert parse_options("padim", ["storage=cholesky16", "n_features=44"]) == {
        "storage": "cholesky16",
        "n_features": 44,
    }
    with pytest.raises(ValueError, match="float32, float16, cholesky16, lowrank16; got 'int8'"):
        PaDiMConfig(storage="int8")
    with pytest.raises(ValueError, match="storage must be one of"):
        create_model("padim", CommonOptions(size=SIZE), storage="half")
    with pytest.raises(InputError, match=r"beyond float16's range.*storage='float32'"):
        to_half(np.array([[7e4, 1.0]], np.float32), "inverse covariances")
