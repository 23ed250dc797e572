"""The command line end to end, on a small dataset written in the MVTec layout."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from scenes import scene

from vad_inspection.cli import main

SIZE = 64


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiles/{train/good, test/good, test/blob, ground_truth/blob}: 30 + 10 + 10 images."""
    root = tmp_path_factory.mktemp("mvtec") / "tiles"
    rng = np.random.default_rng(0)
    for folder, count, defect in (("train/good", 30, False), ("test/good", 10, False),
                                  ("test/blob", 10, True)):  # fmt: skip
        (root / folder).mkdir(parents=True)
        for i in range(count):
            image, mask = scene(rng, SIZE, defect)
            cv2.imwrite(str(root / folder / f"{i:03d}.png"), image[:, :, ::-1])
            if defect:
                (root / "ground_truth/blob").mkdir(parents=True, exist_ok=True)
                path = root / "ground_truth/blob" / f"{i:03d}_mask.png"
                cv2.imwrite(str(path), mask.astype(np.uint8) * 255)
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAD_INSPECTION_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_eval_writes_the_papers_table_curves_and_manifests(
    mvtec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    code = main(["eval", "--data", f"mvtec:{mvtec}", "--size", str(SIZE), "--settings", "1,2",
                 "--model", "darkest_pixel", "--model", "patchcore", "-o", str(out),
                 "--no-progress"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "S1 image_auroc" in printed and "patchcore" in printed
    with (out / "results.csv").open(newline="") as stream:
        rows = {row["model"]: row for row in csv.DictReader(stream)}
    assert set(rows) == {"darkest_pixel", "patchcore"}
    assert float(rows["patchcore"]["S1 image_auroc"]) >= 0.9  # the blobs are unmistakable
    assert 0.0 <= float(rows["darkest_pixel"]["S2 pixel_auroc"]) <= 1.0
    assert "**" in (out / "results.md").read_text()
    curves = cv2.imread(str(out / "curves_mvtec_tiles.png"))
    assert curves is not None and curves.std() > 0
    assert (out / "splits" / "mvtec_tiles_s1.csv").read_text().count("\n") == 50 + 1


@pytest.mark.parametrize("method", ["patchcore", "padim"])
def test_fit_then_predict_writes_overlays_and_survives_a_corrupt_file(
    method: str, mvtec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "tiles.vad"
    assert main(["fit", "--method", method, "--data", f"mvtec:{mvtec}", "--size",
                 str(SIZE), "-o", str(model), "--no-progress"]) == 0  # fmt: skip
    assert "threshold" in capsys.readouterr().out
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    defect = mvtec / "test/blob/000.png"
    normal = mvtec / "test/good/000.png"
    out = tmp_path / "overlays"
    code = main(["predict", str(defect), str(normal), str(corrupt), "--model", str(model),
                 "-o", str(out), "--no-progress"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    assert "ANOMALOUS" in captured.out.splitlines()[0]
    assert "corrupt.png: ERROR" in captured.err
    overlay = cv2.imread(str(out / "000_overlay.png"))
    assert overlay is not None and overlay.shape == (SIZE, SIZE, 3)
    assert "1 failed" in captured.out


def test_missing_dataset_and_missing_model_exit_2_with_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "--data", f"magnetic_tile:{tmp_path}/nope", "-o", str(tmp_path)]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "--model", str(tmp_path / "m.vad")]) == 2
    assert "m.vad does not exist" in capsys.readouterr().err
    # eval without --data is the evaluation job on the real datasets under --data-root
    assert main(["eval", "--data-root", str(tmp_path / "none"), "-o", str(tmp_path / "e")]) == 2
    assert str(tmp_path / "none" / "magnetic_tile") in capsys.readouterr().err
    assert main(["demo", "--scenarios", "atlantis", "--out", str(tmp_path / "d")]) == 2
    assert "no demo for atlantis" in capsys.readouterr().err


def test_fit_vae_with_its_own_options_then_predict(
    mvtec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    from vad_inspection.vad.registry import load_model

    model = tmp_path / "vae.vad"
    assert main(["fit", "--method", "vae", "--data", f"mvtec:{mvtec}", "--size", str(SIZE),
                 "--option", "epochs=2", "--option", "width=4", "--option", "latent_dim=4",
                 "--option", "map_source=attention", "-o", str(model),
                 "--no-progress"]) == 0  # fmt: skip
    loaded, calibration = load_model(model)
    assert (loaded.config.epochs, loaded.config.width, loaded.config.latent_dim) == (2, 4, 4)
    assert loaded.config.map_source == "attention" and loaded.summary.epochs_run <= 2
    assert calibration is not None and loaded.map_calibration is not None
    out = tmp_path / "overlays"
    code = main(["predict", str(mvtec / "test/blob/000.png"), "--model", str(model),
                 "-o", str(out), "--no-progress"])  # fmt: skip
    assert code == 0 and "score" in capsys.readouterr().out
    overlay = cv2.imread(str(out / "000_overlay.png"))
    assert overlay is not None and overlay.shape == (SIZE, SIZE, 3)


def test_eval_passes_method_options_and_refuses_unknown_ones(
    mvtec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    code = main(["eval", "--data", f"mvtec:{mvtec}", "--size", str(SIZE), "--settings", "1",
                 "--model", "patchcore", "--option", "patchcore.coreset_ratio=0.5",
                 "--option", "patchcore.num_neighbors=3", "-o", str(out),
                 "--no-progress"])  # fmt: skip
    assert code == 0
    with (out / "results.csv").open(newline="") as stream:
        assert [row["model"] for row in csv.DictReader(stream)] == ["patchcore"]
    capsys.readouterr()
    bad = ["eval", "--data", f"mvtec:{mvtec}", "--model", "patchcore", "-o", str(out)]
    assert main([*bad, "--option", "patchcore.coreset_ration=0.5"]) == 2
    err = capsys.readouterr().err
    assert "no option 'coreset_ration'" in err and "coreset_ratio" in err
    assert main([*bad, "--option", "coreset_ratio=0.5"]) == 2
    assert "METHOD.KEY=VALUE" in capsys.readouterr().err
    model = tmp_path / "m.vad"
    assert main(["fit", "--method", "vae", "--data", f"mvtec:{mvtec}", "-o", str(model),
                 "--option", "epochs=many"]) == 2  # fmt: skip
    assert "epochs='many': expected int" in capsys.readouterr().err
    assert not model.exists()


def test_a_suite_entry_runs_its_extra_models_on_its_dataset_only(
    mvtec: Path, tmp_path: Path
) -> None:
    from vad_inspection.data import open_dataset
    from vad_inspection.eval.runner import EvalConfig
    from vad_inspection.eval.suite import SuiteEntry, run_suite

    entry = SuiteEntry(open_dataset(f"mvtec:{mvtec}"), SIZE, extra_models=("local_contrast",))
    result = run_suite([entry], ["darkest_pixel", "padim"], tmp_path, settings=(1,), seed=0,
                       config=EvalConfig(progress=False), log=lambda *_: None)  # fmt: skip
    assert [row.model for row in result.rows] == ["darkest_pixel", "padim", "local_contrast"]
    # the footprint (Table III's): the model file's size, for what has one to save
    assert "model_mb" not in result.rows[0].metrics
    padim = result.rows[1].metrics["model_mb"]
    saved = tmp_path / "padim.vad"
    assert main(["fit", "--method", "padim", "--data", f"mvtec:{mvtec}", "--size", str(SIZE),
                 "-o", str(saved), "--no-progress"]) == 0  # fmt: skip
    assert padim == pytest.approx(saved.stat().st_size / 1e6, rel=0.02)


def test_eval_model_file_scores_a_fitted_model_on_other_data_without_refitting(
    mvtec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "tiles.vad"
    assert main(["fit", "--method", "patchcore", "--data", f"mvtec:{mvtec}", "--size",
                 str(SIZE), "-o", str(model), "--no-progress"]) == 0  # fmt: skip
    before = model.stat().st_mtime_ns
    out = tmp_path / "scored"
    code = main(["eval", "--model-file", str(model), "--data", f"mvtec:{mvtec}", "-o", str(out),
                 "--no-progress"])  # fmt: skip
    assert code == 0 and model.stat().st_mtime_ns == before
    printed = capsys.readouterr().out
    assert "tiles.vad" in printed and "setting 0" in printed
    with (out / "results.csv").open(newline="") as stream:
        [row] = list(csv.DictReader(stream))
    assert float(row["S0 image_auroc"]) >= 0.9  # blobs, at the file's own size
    assert 0.0 < float(row["S0 image_f1_cal"]) <= 1.0  # judged at the file's threshold
    assert 0.0 <= float(row["S0 dice"]) <= 1.0
    assert main(["eval", "--model-file", str(tmp_path / "missing.vad"), "--data",
                 f"mvtec:{mvtec}", "-o", str(out)]) == 2  # fmt: skip
    assert "missing.vad does not exist" in capsys.readouterr().err
