"""MVTec AD, one category folder as published (``bottle/``, ``grid/``, ...).

MVTec publishes its own train/test partition (train holds only good images), so each sample
carries ``split`` and evaluation can respect it. Gray categories (grid, screw, zipper) give C=1.
"""

from __future__ import annotations

from pathlib import Path

from vad_inspection.data.imageio import image_shape
from vad_inspection.data.layout import file_sample, list_files, make_dataset, require_dir
from vad_inspection.data.types import ANOMALOUS, NORMAL, Dataset, DatasetError, Sample

__all__ = ["open_mvtec"]

_LAYOUT = (
    "the MVTec AD category layout <category>/train/good/*.png, <category>/test/<defect|good>/"
    "*.png, <category>/ground_truth/<defect>/<name>_mask.png"
)


def _check_root(root: Path) -> None:
    """Name the likely mistake: pointing at the MVTec root instead of one category in it."""
    if (root / "train" / "good").is_dir() and (root / "test").is_dir():
        return
    categories = sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())
    hint = f" (it holds categories {', '.join(categories)}: pass one of them)" if categories else ""
    raise DatasetError(f"no train/good and test folders under {root}{hint}: expected {_LAYOUT}")


def open_mvtec(root: Path | str) -> Dataset:
    """One MVTec AD category; normal images get an all-False mask, defects their mask file."""
    root = require_dir(root, _LAYOUT)
    _check_root(root)
    train = list_files(root / "train" / "good", (".png",))
    if not train:
        raise DatasetError(f"no .png images in {root / 'train' / 'good'}: expected {_LAYOUT}")
    channels = image_shape(train[0])[2]
    samples: list[Sample] = [
        file_sample(root, p, NORMAL, "good", channels, split="train", empty_mask=True)
        for p in train
    ]
    for folder in sorted(p for p in (root / "test").iterdir() if p.is_dir()):
        defect = folder.name
        for path in list_files(folder, (".png",)):
            if defect == "good":
                samples.append(
                    file_sample(root, path, NORMAL, defect, channels, split="test", empty_mask=True)
                )
                continue
            mask = root / "ground_truth" / defect / f"{path.stem}_mask.png"
            if not mask.is_file():
                raise DatasetError(f"{mask}: missing mask for {path}: expected {_LAYOUT}")
            samples.append(
                file_sample(root, path, ANOMALOUS, defect, channels, mask=mask, split="test")
            )
    return make_dataset(f"mvtec_{root.resolve().name}", root, samples, channels, True, _LAYOUT)
