"""RD4AD: the cosine-distance maps, the loss and the anomaly map by hand, the student's shapes,
ONNX fidelity, anomalies found, the seeded student, the refusals of its own options. Tiny 32 px
images, a few epochs; persistence, determinism, resumable training, early stopping, torch-free
inference and the common refusals are tested with the other methods trained with torch
(``test_trained_methods.py``)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from tiny_trained import METHODS, detects_squares, images

from vad_inspection.vad.ops import gaussian_blur
from vad_inspection.vad.preprocess import InputSpec, to_network_input
from vad_inspection.vad.rd4ad import GRAPH_OUTPUTS, LOSSES, RD4AD, RD4ADConfig

torch = pytest.importorskip("torch")
T = pytest.importorskip("vad_inspection.vad.rd4ad_train")
pytestmark = pytest.mark.usefixtures("one_thread")

#: 16 images, 2 held out, batches of 4: 4 steps per epoch, 32 in all (no early stopping: fewer
#: than the warm-up's 50 steps).
TINY = METHODS["rd4ad"].tiny


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
    # which is loss="flattened": for image 0 level 0 gives that, level 1 (one position,
    # orthogonal vectors) 1; image 1 (twice the teacher) 0 at both levels; per level the mean
    # over the images, summed over the levels (``teacher[:1]``: level 0 only)
    flattened = T.flattened_loss(teacher, decoded)
    assert float(T.flattened_loss(teacher[:1], decoded[:1])) == pytest.approx(flat / 2, abs=1e-6)
    assert float(flattened) == pytest.approx((flat + 1.0) / 2, abs=1e-6)
    assert float(T.flattened_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-6)
    assert tuple(T.LOSS_FUNCTIONS) == LOSSES  # every option has its loss
    assert T.LOSS_FUNCTIONS["flattened"] is T.flattened_loss
    with pytest.raises(ValueError, match="levels"):
        T.flattened_loss(teacher, decoded[:1])


def test_anomaly_map_is_the_sum_of_the_upsampled_levels() -> None:
    teacher, decoded = _hand_features()
    # level 1 is 1 everywhere after upsampling (0 for image 1), so the sum is level 0's map + 1
    amap = T.anomaly_map(teacher, decoded, (2, 2))
    assert amap.shape == (2, 2, 2)
    np.testing.assert_allclose(amap[0].numpy(), np.asarray(M0) + 1.0, atol=1e-6)
    np.testing.assert_allclose(amap[1].numpy(), 0.0, atol=1e-6)
    # at 4x4 each level is upsampled bilinearly (corners aligned, as the authors' code), then
    # added: level 0's corners are its four cells, the pixels between them interpolate
    amap = T.anomaly_map(teacher, decoded, (4, 4))[0].numpy() - 1.0
    np.testing.assert_allclose(amap[[0, 0, 3, 3], [0, 3, 0, 3]], np.ravel(M0), atol=1e-6)
    np.testing.assert_allclose(amap[0, 1], (2 * M0[0][0] + M0[0][1]) / 3, atol=1e-6)
    np.testing.assert_allclose(amap[1, 0], (2 * M0[0][0] + M0[1][0]) / 3, atol=1e-6)


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


def test_training_takes_the_configured_loss() -> None:
    config = RD4ADConfig(backbone="resnet18", size=(64, 64))
    teacher, student = T.teacher_network(config), T.student_network(config).eval()
    with torch.no_grad():
        feats = teacher(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
        decoded = student(feats)
        losses = {
            name: float(T._loss(student, lambda part: feats, np.arange(2), name)) for name in LOSSES
        }
    assert losses["position"] == pytest.approx(float(T.rd4ad_loss(feats, decoded)), rel=1e-6)
    assert losses["flattened"] == pytest.approx(float(T.flattened_loss(feats, decoded)), rel=1e-6)


def test_the_official_layout_is_an_option_set() -> None:
    """``mff_fusion=False, oce_blocks=2, decoder_blocks=2, decoder_relu=True``: the official
    code's (and anomalib's) ResNet18 student, block for block: no 1x1 fusion (the concatenation
    of three times level 3's channels goes into ``OCE``), two basic blocks in ``OCE`` and per
    decoder level, every block ending with a ReLU (non-negative levels)."""
    config = RD4ADConfig(
        backbone="resnet18", size=(64, 64), mff_fusion=False, oce_blocks=2, decoder_blocks=2,
        decoder_relu=True,
    )  # fmt: skip
    teacher, student = T.teacher_network(config), T.student_network(config).eval()
    default = T.student_network(replace(config, mff_fusion=True, decoder_blocks=1)).eval()
    assert isinstance(student.ocbe.fuse, torch.nn.Identity)
    assert student.ocbe.oce[0].main[0][0].in_channels == 3 * 256  # the concatenation
    assert default.ocbe.oce[0].main[0][0].in_channels == 256  # after the 1x1 fusion
    assert [len(r) for r in student.decoder.refine] == [1, 1, 1]
    assert [len(r) for r in default.decoder.refine] == [0, 0, 0]

    # the official ResNet18 student: 11,686,408 parameters in the bottleneck (its unused 1x1
    # convolution and batch norm left out) and 3,707,663 in the decoder, batch-norm buffers
    # included (anomalib 2.7, counted)
    def count(module: torch.nn.Module) -> int:
        return sum(t.numel() for t in module.state_dict().values())

    assert (count(student.ocbe), count(student.decoder)) == (11_686_408, 3_707_663)
    with torch.no_grad():
        feats = teacher(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
        decoded = student(feats)
    assert [f.shape for f in decoded] == [f.shape for f in feats]
    assert all(float(d.min()) >= 0 for d in decoded)  # each level ends with a ReLU
    # the one-block decoder keeps its state keys (checkpoints of earlier runs still resume)
    assert not any(k.startswith("decoder.refine") for k in default.state_dict())
    with pytest.raises(ValueError, match="decoder_blocks"):
        RD4ADConfig(decoder_blocks=0)


# -- fitting and ONNX --------------------------------------------------------------------------


def test_onnx_map_equals_torch_within_1e_4() -> None:
    size = (40, 56)  # odd grids: the decoder's crops are in the graph
    config = replace(TINY, size=size, epochs=1, val_fraction=0.0)
    result = T.train(to_network_input(list(images()[:6]), InputSpec(size=size)), config)
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


def test_anomalies_score_above_normal_images() -> None:
    _, prediction, squares = detects_squares("rd4ad")
    # the map is higher on the square than off it (its peak, on a 32 px image smoothed with
    # sigma 4 from a 2 x 2 deepest level, is not a reliable position)
    for (y, x), amap in zip(squares, prediction.maps, strict=True):
        inside = np.zeros(amap.shape, bool)
        inside[y : y + 10, x : x + 10] = True
        assert amap[inside].mean() > amap[~inside].mean(), (y, x)


def test_another_seed_initialises_another_student() -> None:
    first = next(iter(T.student_network(TINY).state_dict()))
    assert not torch.equal(
        T.student_network(TINY).state_dict()[first],
        T.student_network(replace(TINY, seed=5)).state_dict()[first],
    )


def test_bad_rd4ad_options_are_refused_and_the_papers_are_the_defaults() -> None:
    with pytest.raises(ValueError, match="oce_blocks"):
        RD4ADConfig(oce_blocks=0)
    with pytest.raises(ValueError, match="sigma"):
        RD4ADConfig(sigma=-1.0)
    with pytest.raises(ValueError, match="beta1 and beta2"):
        RD4ADConfig(beta1=1.0)
    with pytest.raises(ValueError, match="lr must be positive"):
        RD4ADConfig(lr=0.0)
    with pytest.raises(ValueError, match="loss must be one of"):
        RD4ADConfig(loss="mean")
    default = RD4ADConfig()
    assert (default.lr, default.beta1, default.beta2, default.sigma) == (0.005, 0.5, 0.999, 4.0)
    assert default.loss == "position"
