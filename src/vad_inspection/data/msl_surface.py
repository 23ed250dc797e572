"""Curiosity surface images (Stanboli and Wagstaff 2018, "Deep Mars", Zenodo 1049137).

Layout as published: ``calibrated/<product>.JPG`` browse images (about 256 px, mostly colour),
``train-calibrated-shuffled.txt`` and ``val-calibrated-shuffled.txt`` with one ``calibrated/<file>
<class id>`` per line, and ``msl_synset_words-indexed.txt`` naming the 25 class ids.

For anomaly detection the classes play three parts on a rover (the planetary case): ``normal``
classes are the ordinary traverse (``ground``), ``anomalous`` ones what a scientist wants sent home
first (``drill holes``, the dust-removal tool's spots ``drt front`` / ``drt side``), and every
other class (rover parts, calibration targets, sky) is routine clutter, which ``clutter`` either
leaves out (``exclude``, the default: a clean traverse-versus-novelty task) or counts as normal
(``normal``: what a prioritiser on the real stream sees). ``category`` is the class name.

The authors split by sol; their ``train`` list is kept as split ``train`` and their ``val`` list,
the held-out sols, as split ``test`` (their test list is not in this copy), so
``respect_published_split`` evaluates on unseen sols.
"""

from __future__ import annotations

from pathlib import Path

from vad_inspection.data.layout import file_sample, make_dataset, require_dir
from vad_inspection.data.types import ANOMALOUS, NORMAL, Dataset, DatasetError

__all__ = ["open_msl_surface", "read_classes"]

_LAYOUT = (
    "the MSL surface layout calibrated/*.JPG, train-calibrated-shuffled.txt and "
    "val-calibrated-shuffled.txt ('calibrated/<file> <class id>' per line), "
    "msl_synset_words-indexed.txt ('<id> <name>' per line)"
)
_LISTS = (("train-calibrated-shuffled.txt", "train"), ("val-calibrated-shuffled.txt", "test"))
CLUTTER = ("exclude", "normal")


def read_classes(path: Path) -> dict[int, str]:
    """Class id -> name from ``msl_synset_words-indexed.txt``."""
    classes: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, _, name = line.strip().partition(" ")
        if not key.isdigit() or not name.strip():
            raise DatasetError(f"{path}:{number}: expected '<id> <name>', got {line!r}")
        classes[int(key)] = name.strip()
    return classes


def _names(text: str, classes: dict[int, str], what: str) -> set[str]:
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = sorted(names - set(classes.values()))
    if unknown:
        raise DatasetError(
            f"{what}: unknown class(es) {unknown}; classes: {sorted(classes.values())}"
        )
    return names


def open_msl_surface(
    root: Path | str,
    normal: str = "ground",
    anomalous: str = "drill holes,drt front,drt side",
    clutter: str = "exclude",
) -> Dataset:
    """The labelled browse images; ``normal`` and ``anomalous`` are comma-separated class names."""
    root = require_dir(root, _LAYOUT)
    if clutter not in CLUTTER:
        raise DatasetError(f"clutter must be one of {CLUTTER}, got {clutter!r}")
    synsets = root / "msl_synset_words-indexed.txt"
    if not synsets.is_file():
        raise DatasetError(f"{synsets} missing: expected {_LAYOUT}")
    classes = read_classes(synsets)
    normal_names = _names(normal, classes, "normal")
    anomalous_names = _names(anomalous, classes, "anomalous")
    if normal_names & anomalous_names:
        raise DatasetError(
            f"classes both normal and anomalous: {sorted(normal_names & anomalous_names)}"
        )
    samples = []
    missing: list[str] = []
    lists = [(root / name, split) for name, split in _LISTS if (root / name).is_file()]
    if not lists:
        raise DatasetError(f"{root}: no label list found: expected {_LAYOUT}")
    for listing, split in lists:
        for number, line in enumerate(listing.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in classes:
                raise DatasetError(
                    f"{listing}:{number}: expected '<file> <class id>', got {line!r}"
                )
            name = classes[int(parts[1])]
            if name in anomalous_names:
                label = ANOMALOUS
            elif name in normal_names or clutter == "normal":
                label = NORMAL
            else:
                continue
            path = root / parts[0]
            if not path.is_file():
                missing.append(parts[0])
                continue
            samples.append(file_sample(root, path, label, name, 3, split=split))
    if missing:  # a partial copy must not pass for the published set
        raise DatasetError(
            f"{root}: {len(missing)} listed image(s) missing, e.g. {missing[:3]}: "
            f"expected {_LAYOUT}"
        )
    return make_dataset("msl_surface", root, samples, 3, False, _LAYOUT)
