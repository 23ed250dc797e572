"""Method options from text (command line) to typed config values, and the refusals."""

from __future__ import annotations

import pytest

from vad_inspection.vad.registry import CommonOptions, create_model, method_options, parse_options


def test_values_are_converted_to_the_fields_types() -> None:
    parsed = parse_options(
        "vae",
        ["epochs=3", "lam=0.5", "augment=false", "checkpoint_dir=none", "map-source=attention",
         "threshold_quantile=0.9", "downsample=2"],
    )  # fmt: skip
    assert parsed == {
        "epochs": 3, "lam": 0.5, "augment": False, "checkpoint_dir": None,
        "map_source": "attention", "threshold_quantile": 0.9, "downsample": 2,
    }  # fmt: skip
    assert parse_options("padim", ["channel_index=3,1,2"]) == {"channel_index": (3, 1, 2)}
    assert parse_options("patchcore", ["taps=a,b"]) == {"taps": ("a", "b")}
    model = create_model("vae", CommonOptions(size=32), **parsed)
    assert model.config.epochs == 3 and model.config.size == (32, 32)


def test_shared_options_are_not_method_options_and_baselines_take_their_own() -> None:
    assert "size" not in method_options("patchcore") and "seed" not in method_options("vae")
    assert set(method_options("darkest_pixel")) == {"sigma"}
    assert set(method_options("local_contrast")) == {
        "context", "sigma", "polarity", "line_length", "mask_width_fraction", "mask_min_length",
    }  # fmt: skip
    with pytest.raises(KeyError, match="it has: sigma"):
        parse_options("darkest_pixel", ["k=1"])
    options = parse_options("local_contrast", ["polarity=darker", "context=16"])
    model = create_model("local_contrast", CommonOptions(size=32), **options)
    assert (model.polarity, model.context, model.name) == ("darker", 16.0, "local_contrast")
    with pytest.raises(ValueError, match="polarity must be one of"):
        create_model("local_contrast", **parse_options("local_contrast", ["polarity=up"]))
    lines = create_model("dark_lines", CommonOptions(size=32))
    assert (lines.name, lines.polarity, lines.line_length, lines.context) == (
        "dark_lines", "darker", 23, 16.0,
    )  # fmt: skip
    assert create_model("dark_lines", line_length=15).line_length == 15


@pytest.mark.parametrize(
    ("pair", "error", "match"),
    [
        ("epochs", ValueError, "KEY=VALUE"),
        ("epoch=3", KeyError, "no option 'epoch'.*epochs"),
        ("epochs=3.5", ValueError, "expected int"),
        ("augment=maybe", ValueError, "expected bool"),
        ("lam=none", ValueError, "expected float"),
    ],
)
def test_bad_options_are_refused_with_what_exists(pair: str, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        parse_options("vae", [pair])
