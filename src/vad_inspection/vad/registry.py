"""Model names the CLI and the evaluation harness accept, their constructors, and model files.

Constructors take the options every method shares (backbone, weights, seed, input size) plus their
own; the baselines take only their own (smoothing, context, polarity). Fitted models round-trip
through one artifact file whose metadata says which class reads it back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path

from vad_inspection.vad import artifact
from vad_inspection.vad.backbones import RANDOM, load_onnx
from vad_inspection.vad.base import AnomalyModel
from vad_inspection.vad.baselines import DarkestPixel, LocalContrast
from vad_inspection.vad.calibration import Calibration
from vad_inspection.vad.cfa import CFA, CFAConfig
from vad_inspection.vad.fastflow import FastFlow, FastFlowConfig
from vad_inspection.vad.padim import PaDiM, PaDiMConfig
from vad_inspection.vad.patchcore import PatchCore, PatchCoreConfig
from vad_inspection.vad.rd4ad import RD4AD, RD4ADConfig
from vad_inspection.vad.rx import RX, RXConfig
from vad_inspection.vad.simplenet import SimpleNet, SimpleNetConfig
from vad_inspection.vad.stfpm import STFPM, STFPMConfig
from vad_inspection.vad.vae import CRACK_OPTIONS, VAE, VAEConfig


@dataclass(frozen=True)
class CommonOptions:
    """What every feature-based method is built from."""

    backbone: str = "mobilenet_v2"
    weights: str = RANDOM
    seed: int = 0
    size: int = 256
    progress: bool = False


def _config(cls: type, common: CommonOptions, options: dict[str, object]):
    """Build a method's frozen config from the shared options plus its own, refusing unknowns."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise KeyError(f"{cls.__name__} has no option(s) {unknown}; it has {sorted(names)}")
    shared = {
        "backbone": common.backbone,
        "seed": common.seed,
        "size": (common.size, common.size),
        "progress": common.progress,
    }
    return cls(**{k: v for k, v in shared.items() if k in names}, **options)


def _patchcore(common: CommonOptions, **options: object) -> PatchCore:
    config = _config(PatchCoreConfig, common, options)
    return PatchCore(config, load_onnx(common.backbone, common.weights, common.seed))


def _padim(common: CommonOptions, **options: object) -> PaDiM:
    config = _config(PaDiMConfig, common, options)
    return PaDiM(config, load_onnx(common.backbone, common.weights, common.seed))


#: ``dark_lines``: the VAE's crack options without the VAE -- local contrast over 16 px (a Gaussian
#: local mean in place of the reconstruction), with the crack options' polarity and line detector,
#: derived from them so the two stay matched. Run beside the VAE so a table shows what the
#: network adds.
DARK_LINES: dict[str, object] = {
    "context": 16.0,
    "polarity": CRACK_OPTIONS["polarity"],
    "line_length": CRACK_OPTIONS["line_length"],
    "sigma": CRACK_OPTIONS["sigma"],
    "mask_width_fraction": CRACK_OPTIONS["mask_width_fraction"],
    "mask_min_length": CRACK_OPTIONS["mask_min_length"],
}

MODELS: dict[str, Callable[..., AnomalyModel]] = {
    "darkest_pixel": lambda common, **o: _config(DarkestPixel, common, o),
    "local_contrast": lambda common, **o: _config(LocalContrast, common, o),
    "dark_lines": lambda common, **o: _config(
        LocalContrast, common, {**DARK_LINES, **o, "name": "dark_lines"}
    ),
    "patchcore": _patchcore,
    "padim": _padim,
    "cfa": lambda common, **o: CFA(
        _config(CFAConfig, common, {**o, "weights": str(common.weights)})
    ),
    "fastflow": lambda common, **o: FastFlow(
        _config(FastFlowConfig, common, {**o, "weights": str(common.weights)})
    ),
    "stfpm": lambda common, **o: STFPM(
        _config(STFPMConfig, common, {**o, "weights": str(common.weights)})
    ),
    "rd4ad": lambda common, **o: RD4AD(
        _config(RD4ADConfig, common, {**o, "weights": str(common.weights)})
    ),
    "simplenet": lambda common, **o: SimpleNet(
        _config(SimpleNetConfig, common, {**o, "weights": str(common.weights)})
    ),
    "vae": lambda common, **o: VAE(_config(VAEConfig, common, {**o, "variant": "vae"})),
    "vae_plain": lambda common, **o: VAE(_config(VAEConfig, common, {**o, "variant": "vae_plain"})),
    "ae": lambda common, **o: VAE(_config(VAEConfig, common, {**o, "variant": "ae"})),
    "rx": lambda common, **o: RX(_config(RXConfig, common, o)),
}
BASELINES: tuple[str, ...] = ("darkest_pixel", "local_contrast")
#: Models with nothing to learn or save: the baselines and the ``dark_lines`` reference.
TRAINING_FREE: tuple[str, ...] = (*BASELINES, "dark_lines")
#: The config class whose fields are each method's own options (what ``parse_options`` accepts).
CONFIGS: dict[str, type] = {
    "darkest_pixel": DarkestPixel,
    "local_contrast": LocalContrast,
    "dark_lines": LocalContrast,
    "patchcore": PatchCoreConfig,
    "padim": PaDiMConfig,
    "stfpm": STFPMConfig,
    "fastflow": FastFlowConfig,
    "cfa": CFAConfig,
    "rd4ad": RD4ADConfig,
    "simplenet": SimpleNetConfig,
    "vae": VAEConfig,
    "vae_plain": VAEConfig,
    "ae": VAEConfig,
    "rx": RXConfig,
}
#: Set from the shared options or the method name, so not options of their own.
_SHARED_FIELDS = frozenset({"backbone", "seed", "size", "progress", "variant", "name", "weights"})
LOADERS: dict[str, Callable[[artifact.Artifact], AnomalyModel]] = {
    "patchcore": PatchCore.from_artifact,
    "padim": PaDiM.from_artifact,
    "stfpm": STFPM.from_artifact,
    "fastflow": FastFlow.from_artifact,
    "cfa": CFA.from_artifact,
    "rd4ad": RD4AD.from_artifact,
    "simplenet": SimpleNet.from_artifact,
    "vae": VAE.from_artifact,
    "vae_plain": VAE.from_artifact,
    "ae": VAE.from_artifact,
    "rx": RX.from_artifact,
}


def _convert(name: str, annotation: str, text: str) -> object:
    """``text`` as the type a config field is annotated with (annotations are strings here)."""
    kinds = {part.strip() for part in annotation.split("|")}
    if "None" in kinds and text.lower() in ("none", "null", ""):
        return None
    kinds.discard("None")
    kind = kinds.pop() if len(kinds) == 1 else annotation
    try:
        if kind == "bool":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "str":
            return text
        if kind.startswith("tuple[int"):
            return tuple(int(v) for v in text.split(","))
        if kind.startswith("tuple[str"):
            return tuple(v for v in text.split(",") if v)
    except ValueError:
        raise ValueError(f"option {name}={text!r}: expected {annotation}") from None
    raise ValueError(f"option {name} ({annotation}) cannot be set from the command line")


def method_options(method: str) -> dict[str, str]:
    """The options ``method`` takes on top of the shared ones: name -> annotated type."""
    config = CONFIGS.get(method)
    if config is None:
        return {}
    return {f.name: str(f.type) for f in fields(config) if f.name not in _SHARED_FIELDS}


def parse_options(method: str, pairs: list[str] | tuple[str, ...]) -> dict[str, object]:
    """``["key=value", ...]`` from a command line as typed options of ``method``'s config.

    Unknown keys and unconvertible values raise a KeyError / ValueError that lists what exists, so
    a typo fails before minutes of training rather than being ignored.
    """
    known = method_options(method)
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"options are KEY=VALUE; got {pair!r}")
        if key not in known:
            raise KeyError(
                f"{method} has no option {key!r}; it has: {', '.join(sorted(known)) or 'none'}"
            )
        out[key] = _convert(key, known[key], value.strip())
    return out


def create_model(name: str, common: CommonOptions | None = None, **options: object) -> AnomalyModel:
    """A fresh, unfitted model by name, or a KeyError listing the names that exist."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}") from None
    return factory(common or CommonOptions(), **options)


def save_model(model: AnomalyModel, path: Path | str, calibration: Calibration | None) -> Path:
    """Write a fitted model (and its calibration) as one artifact file."""
    if not hasattr(model, "to_artifact"):
        raise TypeError(f"{model.name} has nothing to save (it is not fitted from data)")
    art = model.to_artifact()
    meta = {**art.meta, "calibration": calibration.to_dict() if calibration else None}
    if isinstance(meta.get("config"), dict):  # a file never asks for progress bars
        meta["config"] = {**meta["config"], "progress": False}
    return artifact.save(artifact.Artifact(meta, art.graphs, art.arrays), path)


def model_from_artifact(art: artifact.Artifact, path: Path | str = "") -> AnomalyModel:
    """The fitted model an artifact holds, quiet: a loaded model scores frames one by one (a
    node, ``predict``), where a progress bar per call would flood the log."""
    try:
        loader = LOADERS[art.method]
    except KeyError:
        raise artifact.ArtifactError(
            f"{path or 'the model file'} holds method {art.method!r}, which this version cannot "
            f"load (it loads {', '.join(sorted(LOADERS))})"
        ) from None
    model = loader(art)
    config = getattr(model, "config", None)
    if is_dataclass(config) and getattr(config, "progress", False):
        model.config = replace(config, progress=False)
    return model


def load_model(path: Path | str) -> tuple[AnomalyModel, Calibration | None]:
    """Read a model file back: the fitted model and its calibration (None if it has none)."""
    art = artifact.load(path)
    calibration = art.meta.get("calibration")
    model = model_from_artifact(art, path)
    return model, Calibration.from_dict(calibration) if calibration else None
