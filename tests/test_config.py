"""Configuration and the model registry, without data: the dataclasses validate, hash and layer,
and the command line shows their defaults."""

import dataclasses

import pytest
from click.testing import CliRunner

from cli.preprocess import main as fer_preprocess
from cli.train import main as fer_train
from fer_models.models.registry import create_model, list_models
from fer_models.training.config import TrainConfig
from pipeline.config import PreprocessConfig, build_config, differing_keys, sha256_of_json
from pipeline.config_knobs import config_layer, preprocess_knobs
from pipeline.errors import ConfigError


def test_layers_override_the_defaults_in_order_and_the_guidance_size_follows_the_aligned_size():
    config = build_config({"align": {"size": 48}, "shard_size": 64}, {"align": {"color": "gray"}})
    assert (config.align.size, config.align.color, config.shard_size, config.guidance.size) == (48, "gray", 64, 48)
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    assert config.sha256() == build_config(config.to_dict()).sha256() != PreprocessConfig().sha256()
    assert differing_keys(PreprocessConfig().to_dict(), config.to_dict())[0] == "align.color: 'rgb' != 'gray'"


def test_a_config_recorded_before_later_settings_reads_as_then_and_keeps_its_hash():
    before = build_config({"guidance": {"heatmap_sigma": 2.0}})  # the heatmap sigma was in pixels
    recorded = before.to_dict()
    del recorded["codec"], recorded["detect"]["mode"], recorded["detect"]["min_face"]
    del recorded["guidance"]["heatmap_sigma_iod"], recorded["align"]["mode"]
    assert PreprocessConfig.from_dict(recorded) == before and before.codec == "zstd"
    assert before.detect.mode == "always" and before.detect.min_face == 0 and before.align.mode == "similarity"
    assert before.sha256() == sha256_of_json(recorded)  # what such a store recorded
    assert PreprocessConfig().guidance.heatmap_sigma == 0 and PreprocessConfig().sha256() != before.sha256()
    assert build_config({"codec": "lz4"}).sha256() == build_config({}).sha256()  # the same values
    assert build_config({"detect": {"mode": "auto"}}).sha256() != build_config({}).sha256()
    assert build_config({"align": {"mode": "crop"}}).sha256() != build_config({}).sha256()


@pytest.mark.parametrize(
    "layer, message",
    [
        ({"aling": {"size": 48}}, "unknown config section 'aling'"),
        ({"align": {"sise": 48}}, "unknown align options: sise"),
        ({"shard_size": 0}, "shard_size must be between 1 and 65536"),
        ({"codec": "lzma"}, "codec must be one of zstd, lz4, got 'lzma'"),
        ({"detect": {"mode": "sometimes"}}, "detect mode must be one of always, auto, never; got 'sometimes'"),
        ({"detect": {"min_face": 8}}, "min_face must be 0 .full size. or between 16 and 4096 pixels, got 8"),
        ({"guidance": {"types": "heatmap,sparkles"}}, "unknown guidance type 'sparkles'; choose from: heatmap"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(layer, message):
    with pytest.raises(ConfigError, match=message):
        build_config(layer)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"folds": 3, "fold": 3}, "--fold must be between 0 and 2"),
        ({"val_fraction": 1.0}, "--val-fraction must be at least 0 and below 1"),
        ({"balance": "oversample"}, "balance must be weights or none"),
        ({"workers": -1}, "--workers must be 0 or more"),
    ],
)
def test_a_bad_training_option_is_refused_naming_it(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(store="x.zarr", **changes)


def leaf_paths(tree: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in tree.items():
        paths |= leaf_paths(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return paths


def test_every_config_field_is_one_knob_offered_as_an_option_with_the_datasets_defaults():
    knobs = preprocess_knobs()
    assert {knob.path for knob in knobs} == leaf_paths(PreprocessConfig().to_dict())
    assert len({knob.option for knob in knobs}) == len(knobs)
    help_text = " ".join(CliRunner().invoke(fer_preprocess, ["--help"]).output.split())
    for knob in knobs:
        assert f" {knob.option} " in help_text, knob.option
    assert "[similarity; crop: fer2013, ferplus, rafdb, ckplus]" in help_text
    assert "[112; 48: fer2013, ferplus, ckplus; 100: rafdb; 64: sample]" in help_text
    size = next(knob for knob in knobs if knob.path == "align.size")
    assert (size.option, size.make_variable, size.default, size.value_type) == ("--size", "SIZE", 112, int)
    assert config_layer({"size": 48, "align": "crop", "codec": None, "shard_size": 64}) == {
        "align": {"size": 48, "mode": "crop"},
        "shard_size": 64,
    }


def test_make_variables_are_read_only_when_make_asks_and_are_checked_as_the_options_are(tmp_path):
    arguments = [str(tmp_path / "s.zarr"), "--dataset", "sample"]
    bad = CliRunner().invoke(fer_preprocess, [*arguments, "--make-variables"], env={"ALIGN": "sideways"})
    assert (
        bad.exit_code == 2 and "ALIGN=sideways: 'sideways' is not one of 'crop', 'similarity', 'arcface'" in bad.output
    )
    assert not (tmp_path / "s.zarr").exists()
    given = CliRunner().invoke(fer_preprocess, [*arguments, "--size", "4", "--make-variables"], env={"SIZE": "48"})
    assert given.exit_code == 1 and "got 4" in given.output  # an option given wins over the variable


def test_the_help_shows_the_defaults_of_the_config_dataclasses():
    preprocess_help = CliRunner().invoke(fer_preprocess, ["--help"]).output
    defaults = PreprocessConfig()
    assert f"[{defaults.shard_size}]" in preprocess_help and f"[{defaults.guidance.heatmap_sigma}]" in preprocess_help
    train_help = CliRunner().invoke(fer_train, ["--help"], terminal_width=200).output
    for field in dataclasses.fields(TrainConfig):
        if field.name in ("seed", "device", "workers"):
            assert f"[default: {field.default}]" in train_help, field.name
    assert "[the dataset's protocol: weights for AffectNet, none for the others]" in train_help


def test_the_registry_holds_the_five_families_and_names_an_unknown_model():
    assert {"guided-stn", "feratt", "pal", "local-nonlocal", "keypoint"} <= set(list_models())
    with pytest.raises(ConfigError, match="unknown model 'vit'"):
        create_model("vit")
