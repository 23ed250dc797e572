"""STFPM: the loss and the distance maps by hand, ONNX fidelity, anomalies found, the student's
initialisation. Tiny 32 px images, a few epochs; persistence, determinism, resumable training,
early stopping, torch-free inference and the common refusals are tested with the other methods
trained with torch (``test_trained_methods.py``)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from tiny_trained import METHODS, SIZE, detects_squares, images

from vad_inspection.vad.preprocess import InputSpec, to_network_input
from vad_inspection.vad.stfpm import GRAPH_OUTPUTS, STFPM

torch = pytest.importorskip("torch")
T = pytest.importorskip("vad_inspection.vad.stfpm_train")
pytestmark = pytest.mark.usefixtures("one_thread")

#: 16 images, 2 held out, batches of 4: 4 steps per epoch, 32 in all (no early stopping: fewer
#: than the warm-up's 100 steps).
TINY = METHODS["stfpm"].tiny


# -- the paper's quantities against hand computation -------------------------------------------


def _hand_features() -> tuple[list, list]:
    """Two levels, two images. Image 0, level 0 (2 channels on 2x2 positions): teacher vectors
    (1, 0), (0, 2), (3, 4), (1, 1) and student (0, 1), (0, 5), (-3, -4), (2, 0); level 1 (one
    position): teacher (0, 3), student (4, 0). Image 1: student equal to teacher everywhere."""
    t0 = torch.tensor([[[1.0, 0.0], [3.0, 1.0]], [[0.0, 2.0], [4.0, 1.0]]])  # (C, h, w)
    s0 = torch.tensor([[[0.0, 0.0], [-3.0, 2.0]], [[1.0, 5.0], [-4.0, 0.0]]])
    t1, s1 = torch.tensor([[[0.0]], [[3.0]]]), torch.tensor([[[4.0]], [[0.0]]])
    teacher = [torch.stack([t0, t0 + 1]), torch.stack([t1, t1 + 1])]
    student = [torch.stack([s0, t0 + 1]), torch.stack([s1, t1 + 1])]
    return teacher, student


def test_distance_map_and_loss_by_hand() -> None:
    teacher, student = _hand_features()
    # normalised: t (1,0), (0,1), (.6,.8), (1,1)/sqrt2; s (0,1), (0,1), (-.6,-.8), (1,0)
    # 1/2 ||t - s||^2: 1/2 * 2, 0, 1/2 * 4, 1/2 * (2 - sqrt2)
    omega = [[1.0, 0.0], [2.0, 1.0 - math.sqrt(2) / 2]]
    maps = T.distance_map(teacher[0], student[0])
    assert maps.shape == (2, 1, 2, 2)
    np.testing.assert_allclose(maps[0, 0].numpy(), omega, atol=1e-6)
    np.testing.assert_allclose(maps[1].numpy(), 0.0, atol=1e-6)
    # level 0: the map's mean (4 - sqrt2 / 2) / 4; level 1: 1/2 * ||(0,1) - (1,0)||^2 = 1
    image0 = (4.0 - math.sqrt(2) / 2) / 4 + 1.0
    assert float(T.stfpm_loss(teacher, student)) == pytest.approx(image0 / 2, abs=1e-6)
    assert float(T.stfpm_loss(teacher[:1], student[:1])) == pytest.approx(
        (4.0 - math.sqrt(2) / 2) / 8, abs=1e-6
    )
    assert float(T.stfpm_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="levels"):
        T.stfpm_loss(teacher, student[:1])


def test_anomaly_map_is_the_product_of_the_upsampled_levels() -> None:
    teacher, student = _hand_features()
    # level 1 is 1 everywhere after upsampling, so the product is level 0's map at 2x2
    omega = T.anomaly_map(teacher, student, (2, 2))
    assert omega.shape == (2, 2, 2)
    np.testing.assert_allclose(
        omega[0].numpy(), [[1.0, 0.0], [2.0, 1.0 - math.sqrt(2) / 2]], atol=1e-6
    )
    np.testing.assert_allclose(omega[1].numpy(), 0.0, atol=1e-6)
    # at 4x4 each level is upsampled bilinearly (half-pixel centres), then multiplied
    up = torch.nn.functional.interpolate(
        T.distance_map(teacher[0], student[0]), size=(4, 4), mode="bilinear", align_corners=False
    )
    np.testing.assert_allclose(
        T.anomaly_map(teacher, student, (4, 4))[0].numpy(), up[0, 0].numpy(), atol=1e-6
    )


# -- fitting and ONNX --------------------------------------------------------------------------


def test_onnx_outputs_equal_torch_within_1e_4() -> None:
    data = to_network_input(list(images()[:6]), InputSpec(size=(SIZE, SIZE)))
    result = T.train(data, replace(TINY, epochs=1, val_fraction=0.0))
    model = STFPM(TINY)
    model.graph = result.onnx
    batch = np.random.default_rng(7).normal(0.0, 1.0, (3, 3, SIZE, SIZE)).astype(np.float32)
    onnx_out = model.run_graph(batch)
    with torch.no_grad():
        torch_out = T.Scorer(result.teacher, result.student, TINY.size)(torch.from_numpy(batch))
    for name, expected in zip(GRAPH_OUTPUTS, torch_out, strict=True):
        assert onnx_out[name].shape == expected.shape
        np.testing.assert_allclose(onnx_out[name], expected.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(onnx_out["score"], onnx_out["map"].max(axis=(1, 2)), rtol=1e-6)


def test_anomalies_score_above_normal_images() -> None:
    detects_squares("stfpm")


def test_the_student_starts_from_other_weights_than_the_teacher() -> None:
    teacher, student = T.teacher_network(TINY), T.student_network(TINY)
    first = next(iter(teacher.state_dict()))
    assert not torch.equal(teacher.state_dict()[first], student.state_dict()[first])
