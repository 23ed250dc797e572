"""PatchCore: fidelity to an independent torch reference, planted defects, persistence, errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from scenes import scenes

from vad_inspection.eval.metrics import auroc, pixel_auroc
from vad_inspection.vad import artifact
from vad_inspection.vad.backbones import load_onnx, torch_feature_model
from vad_inspection.vad.calibration import from_normal_scores
from vad_inspection.vad.patchcore import PatchCore, PatchCoreConfig
from vad_inspection.vad.preprocess import InputError, InputSpec, to_network_input
from vad_inspection.vad.registry import load_model, save_model

torch = pytest.importorskip("torch")
F = torch.nn.functional
SIZE = 64


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    mp = pytest.MonkeyPatch()
    mp.setenv("VAD_INSPECTION_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield load_onnx("mobilenet_v2", "random", 0)
    mp.undo()


def _model(backbone: bytes, **options: object) -> PatchCore:
    config = PatchCoreConfig(size=(SIZE, SIZE), **{"coreset_ratio": 1.0, **options})
    return PatchCore(config, backbone)


def _reference(train: list, test: list, sigma: float = 4.0, b: int = 9):
    """PatchCore scoring written independently with torch ops and the full memory bank."""
    net = torch_feature_model("mobilenet_v2", "random", 0)
    spec = InputSpec.for_channels(3, (SIZE, SIZE))

    def embed(images):
        with torch.no_grad():
            taps = net(torch.from_numpy(to_network_input(images, spec)))[1:]
        pooled = [torch.nn.AvgPool2d(3, 1, 1)(t) for t in taps]
        up = F.interpolate(pooled[1], size=pooled[0].shape[-2:], mode="bilinear")
        return torch.cat([pooled[0], up], 1).double()

    bank_maps = embed(train)
    bank = bank_maps.permute(0, 2, 3, 1).reshape(-1, bank_maps.shape[1])
    emb = embed(test)
    n, d, h, w = emb.shape
    patches = emb.permute(0, 2, 3, 1).reshape(n, h * w, d)
    dist = torch.cdist(patches, bank[None].expand(n, -1, -1))
    patch_scores, where = dist.min(-1)
    scores = []
    for i in range(n):
        j = int(patch_scores[i].argmax())
        m_star = bank[where[i, j]]
        support = torch.cdist(m_star[None], bank)[0].topk(b, largest=False).indices
        dists = torch.cdist(patches[i, j][None], bank[support])[0]
        scores.append(float((1 - torch.softmax(dists, 0)[0]) * patch_scores[i, j]))
    maps = F.interpolate(patch_scores.reshape(n, 1, h, w), size=(SIZE, SIZE))
    k = 2 * int(4 * sigma + 0.5) + 1
    x = torch.arange(k, dtype=torch.float64) - k // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = (g / g.sum())[:, None] * (g / g.sum())[None, :]
    maps = F.conv2d(F.pad(maps, [k // 2] * 4, mode="reflect"), g[None, None])[:, 0]
    return np.array(scores), maps.numpy()


def test_full_memory_bank_matches_an_independent_torch_reference(backbone: bytes) -> None:
    train, _, _ = scenes(0, SIZE, 6)
    test, _, _ = scenes(1, SIZE, 6, defect_every=2)
    model = _model(backbone, map_alignment="reference")  # torch nearest, as the reference
    model.fit(train)
    assert model.memory_bank.shape == (6 * 8 * 8, 32 + 96)
    prediction = model.predict(test)
    scores, maps = _reference(train, test)
    np.testing.assert_allclose(prediction.scores, scores, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(prediction.maps, maps, rtol=1e-3, atol=1e-5)


def test_finds_planted_defects(backbone: bytes) -> None:
    train, _, _ = scenes(2, SIZE, 20)
    test, labels, masks = scenes(3, SIZE, 24, defect_every=2)
    model = _model(backbone, coreset_ratio=0.1)
    model.fit(train)
    prediction = model.predict(test)
    assert auroc(labels, prediction.scores) >= 0.95
    assert pixel_auroc(masks, prediction.maps) >= 0.9


def test_coreset_model_is_deterministic_under_a_seed(backbone: bytes) -> None:
    train, _, _ = scenes(4, SIZE, 8)
    banks = []
    for seed in (0, 0, 1):
        model = _model(backbone, coreset_ratio=0.1, seed=seed)
        model.fit(train)
        banks.append(model.memory_bank)
    np.testing.assert_array_equal(banks[0], banks[1])
    assert banks[0].shape == (round(8 * 64 * 0.1), 128)
    assert not np.array_equal(banks[0], banks[2])


def test_save_load_round_trip_keeps_predictions_and_calibration(
    backbone: bytes, tmp_path: Path
) -> None:
    train, _, _ = scenes(5, SIZE, 6)
    test, _, _ = scenes(6, SIZE, 4, defect_every=2)
    model = _model(backbone, coreset_ratio=0.25)
    model.fit(train)
    calibration = from_normal_scores(model.predict(train).scores, k=3.0)
    path = save_model(model, tmp_path / "m.vad", calibration)
    loaded, loaded_calibration = load_model(path)
    assert loaded_calibration == calibration
    assert loaded.input_spec == model.input_spec
    np.testing.assert_array_equal(loaded.predict(test).maps, model.predict(test).maps)
    with zipfile.ZipFile(path) as archive:
        assert {"meta.json", "graphs/backbone.onnx", "arrays/memory_bank.npy"} <= set(
            archive.namelist()
        )


def test_other_image_sizes_are_resized_to_the_model_grid(backbone: bytes) -> None:
    train, _, _ = scenes(7, SIZE, 4)
    model = _model(backbone)
    model.fit(train)
    big, _, _ = scenes(8, 2 * SIZE, 1)
    assert model.predict(big).maps.shape == (1, SIZE, SIZE)


def test_bad_inputs_raise_clear_errors(backbone: bytes) -> None:
    model = _model(backbone)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.predict(scenes(9, SIZE, 1)[0])
    with pytest.raises(InputError, match="at least one"):
        model.fit([])
    train, _, _ = scenes(9, SIZE, 3)
    model.fit(train)
    with pytest.raises(InputError, match=r"1 channel.*fitted on 3-channel"):
        model.predict([train[0][:, :, :1]])
    nan = train[0].astype(np.float32)
    nan[3, 3, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        model.predict([nan])


def test_gray_models_replicate_the_channel(backbone: bytes) -> None:
    train, _, _ = scenes(10, SIZE, 3)
    gray = [im[:, :, :1] for im in train]
    model = _model(backbone)
    model.fit(gray)
    assert model.input_spec.bands == (0, 0, 0) and model.input_spec.channels == 1
    with pytest.raises(InputError, match="3 channel"):
        model.predict(train[:1])


def test_broken_model_files_are_refused_with_the_reason(backbone: bytes, tmp_path: Path) -> None:
    train, _, _ = scenes(11, SIZE, 3)
    model = _model(backbone)
    model.fit(train)
    good = save_model(model, tmp_path / "good.vad", None)
    truncated = tmp_path / "truncated.vad"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(artifact.ArtifactError, match="truncated"):
        load_model(truncated)
    foreign = tmp_path / "foreign.vad"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("hello.txt", "not a model")
    with pytest.raises(artifact.ArtifactError, match="not a vad_inspection model"):
        load_model(foreign)
    future = artifact.load(good)
    meta = {**future.meta, "format_version": 99}
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tmp_path / "future.vad", "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            dst.writestr(item, artifact.json.dumps(meta) if item == "meta.json" else data)
    with pytest.raises(artifact.ArtifactError, match="format version 99"):
        load_model(tmp_path / "future.vad")
    with pytest.raises(artifact.ArtifactError, match="does not exist"):
        load_model(tmp_path / "missing.vad")


def test_outlier_fraction_discards_the_contaminating_images(backbone: bytes) -> None:
    normal, _, _ = scenes(12, SIZE, 19)
    defective, _, _ = scenes(13, SIZE, 2, defect_every=1)
    model = _model(backbone, coreset_ratio=0.1, outlier_fraction=0.09)  # 2 of 21
    model.fit(normal + defective)
    assert model.kept_images.tolist() == [True] * 19 + [False] * 2
    assert model.training_images == 19


def test_centred_maps_put_each_patch_where_its_features_are_centred() -> None:
    from vad_inspection.vad.ops import resize_centred, resize_nearest

    grid = np.zeros((1, 1, 8, 8), np.float32)
    grid[0, 0, 3, 5] = 1.0  # one anomalous patch of a stride-8 map of a 64 px input
    centred = resize_centred(grid, (64, 64))[0, 0]
    nearest = resize_nearest(grid, (64, 64))[0, 0]
    assert np.unravel_index(centred.argmax(), centred.shape) == (24, 40)  # 8 * (3, 5)
    rows, cols = np.nonzero(nearest)
    assert (rows.mean(), cols.mean()) == (27.5, 43.5)  # half a cell (3.5 px) down and right
    with pytest.raises(ValueError, match="map_alignment"):
        PatchCoreConfig(map_alignment="middle")


def test_model_files_from_before_the_option_keep_the_reference_alignment(
    backbone: bytes, tmp_path
) -> None:
    from vad_inspection.vad.registry import load_model, save_model

    train, _, _ = scenes(0, SIZE, 6)
    model = _model(backbone)
    model.fit(train)
    art = model.to_artifact()
    del art.meta["config"]["map_alignment"]  # what an older file holds
    assert PatchCore.from_artifact(art).config.map_alignment == "reference"
    assert load_model(save_model(model, tmp_path / "m.vad", None))[0].config.map_alignment == (
        "centred"
    )
