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


def test_shared_options_and_baselines_have_no_own_options() -> None:
    assert "size" not in method_options("patchcore") and "seed" not in method_options("vae")
    assert method_options("darkest_pixel") == {}
    with pytest.raises(KeyError, match="it has: none"):
        parse_options("darkest_pixel", ["k=1"])


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
