"""What the five methods trained with torch (STFPM, FastFlow, CFA, RD4AD, SimpleNet) share, tested
once for each: persistence, determinism under a seed, resumable training, early stopping after the
warm-up, torch-free inference and the common refusals. Tiny 32 px images (:mod:`tiny_trained`);
each method's own quantities, ONNX fidelity and detection are in ``test_<method>.py``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
from tiny_trained import METHODS, SIZE, Method, fit, fitted, images, textured

from vad_inspection.vad import artifact
from vad_inspection.vad.preprocess import InputError, InputSpec, to_network_input

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("one_thread")
each_method = pytest.mark.parametrize("method", list(METHODS.values()), ids=list(METHODS))


@pytest.fixture
def no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training without the ONNX export, for tests that look at the training loop only."""
    for method in METHODS.values():
        monkeypatch.setattr(method.train_module(), "export_onnx", lambda *_: b"")


def eight_images() -> np.ndarray:
    return to_network_input(list(images()[:8]), InputSpec(size=(SIZE, SIZE)))


@each_method
def test_save_load_round_trip(method: Method, tmp_path: Path) -> None:
    model = fitted(method.name, quick=True)
    rng = np.random.default_rng(3)
    test_images = [textured(rng, square=bool(i % 2))[0] for i in range(5)]
    path = artifact.save(model.to_artifact(), tmp_path / f"{method.name}.vad")
    loaded_artifact = artifact.load(path)
    assert loaded_artifact.method == method.name
    assert loaded_artifact.meta["graphs"] == [method.name]
    loaded = method.model.from_artifact(loaded_artifact)
    assert loaded.config == model.config and loaded.input_spec == model.input_spec
    assert loaded.summary == model.summary
    before, after = model.predict(test_images), loaded.predict(test_images)
    np.testing.assert_array_equal(before.scores, after.scores)
    np.testing.assert_array_equal(before.maps, after.maps)


@each_method
def test_training_is_deterministic_under_a_seed(method: Method) -> None:
    model, again = fitted(method.name, quick=True), fit(method.name, quick=True)
    assert again.graph == model.graph and again.history == model.history
    test_images = [textured(np.random.default_rng(4), square=True)[0]]
    np.testing.assert_array_equal(again.predict(test_images).maps, model.predict(test_images).maps)


@each_method
def test_resumed_training_equals_uninterrupted(
    method: Method, tmp_path: Path, no_export: None
) -> None:
    T = method.train_module()
    data = eight_images()
    config = replace(method.tiny, epochs=3, checkpoint_dir=str(tmp_path / "ckpt"))
    T.train(data, replace(config, epochs=1))  # "interrupted" after one epoch
    assert (tmp_path / "ckpt" / T.CHECKPOINT).is_file()
    resumed = T.train(data, config)
    straight = T.train(data, replace(config, checkpoint_dir=None))
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert resumed.history == straight.history
    # every network's weights (the frozen ones too) and every tensor (CFA's memory bank)
    for name in (f.name for f in fields(straight)):
        value, again = getattr(straight, name), getattr(resumed, name)
        if isinstance(value, torch.nn.Module):
            value, again = value.state_dict(), again.state_dict()
            assert value.keys() == again.keys()
            for key, tensor in value.items():
                torch.testing.assert_close(tensor, again[key], rtol=0, atol=0, msg=key)
        elif isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, again, rtol=0, atol=0)
    if "sigma" in config.to_dict():
        # sigma only smooths after the graph: the finished run is taken back, nothing retrained
        smoothed = T.train(data, replace(config, sigma=2.0))
        assert smoothed.history == straight.history and smoothed.summary.epochs_run == 3
    with pytest.raises(ValueError, match="other options"):
        T.train(data, replace(config, **method.other_options))
    with pytest.raises(ValueError, match="other training images"):
        T.train(data[:6], config)


@each_method
def test_early_stopping_counts_patience_after_the_warm_up(
    method: Method, monkeypatch: pytest.MonkeyPatch, no_export: None
) -> None:
    T = method.train_module()
    config = replace(method.tiny, epochs=10, patience=2, val_fraction=0.25)  # 6 + 2: 2 steps
    losses = iter([5.0, 6.0, 7.0, 8.0, 4.0, 4.5, 4.2, 1.0, 1.0, 1.0])
    monkeypatch.setattr(T, "evaluate_loss", lambda *_: next(losses))
    monkeypatch.setattr(T, "WARMUP_STEPS", 7)  # epochs 0-2 (2, 4, 6 steps) cannot be bad
    result = T.train(eight_images(), config)
    # epochs 1, 2 worse than 0 but in the warm-up; 3 bad (1), 4 best, 5 and 6 bad: stop
    assert result.summary.stopped_early and result.summary.epochs_run == 7
    assert result.summary.best_epoch == 4 and result.summary.best_val_loss == 4.0
    assert len(result.val_index) == 2 and [h["epoch"] for h in result.history] == list(range(7))
    # the backbone is frozen: untouched by training, no gradients
    frozen = getattr(result, method.frozen)
    fresh = getattr(T, method.frozen_network)(config).state_dict()
    for key, value in frozen.state_dict().items():
        torch.testing.assert_close(value, fresh[key], rtol=0, atol=0)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_inference_does_not_import_torch(tmp_path: Path) -> None:
    paths = {
        name: str(artifact.save(fitted(name, quick=True).to_artifact(), tmp_path / f"{name}.vad"))
        for name in METHODS
    }
    classes = {name: (m.model.__module__, m.model.__name__) for name, m in METHODS.items()}
    script = textwrap.dedent(
        f"""
        import importlib, sys
        import numpy as np
        from vad_inspection.vad import artifact
        images = [np.random.default_rng(0).integers(0, 255, ({SIZE}, {SIZE}, 3), np.uint8)]
        for name, (module, cls) in {classes!r}.items():
            model_class = getattr(importlib.import_module(module), cls)
            model = model_class.from_artifact(artifact.load({paths!r}[name]))
            prediction = model.predict(images)
            assert prediction.maps.shape == (1, {SIZE}, {SIZE}), (name, prediction.maps.shape)
            assert "torch" not in sys.modules, f"{{name}}: inference imported torch"
            print("ok", name, float(prediction.scores[0]))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [line.split()[:2] for line in done.stdout.splitlines()] == [
        ["ok", name] for name in METHODS
    ]


@each_method
def test_bad_options_images_and_unfitted_use_are_refused(method: Method) -> None:
    config_class, tiny = type(method.tiny), method.tiny
    with pytest.raises(ValueError, match="at least 16 px"):
        config_class(size=(8, 8))
    with pytest.raises(ValueError, match="batch_size"):
        config_class(batch_size=method.bad_batch_size)
    with pytest.raises(ValueError, match="val_fraction"):
        config_class(val_fraction=1.0)
    with pytest.raises(Exception, match="unknown backbone"):
        config_class(backbone="vgg")
    with pytest.raises(InputError, match="two normal"):
        method.model(tiny).fit([np.zeros((SIZE, SIZE, 3), np.uint8)])
    with pytest.raises(RuntimeError, match="not fitted"):
        method.model(tiny).predict([np.zeros((SIZE, SIZE, 3), np.uint8)])
    with pytest.raises(InputError, match="3-channel"):
        fitted(method.name, quick=True).predict([np.zeros((SIZE, SIZE), np.uint8)])
    assert config_class.from_dict(tiny.to_dict()) == tiny
