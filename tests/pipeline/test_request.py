"""The one request schema: every field's rule, resolve() against a model spec (no weights needed)."""

import dataclasses

import pytest

from newbie.config import NOISE_NAMES, SAMPLER_NAMES, SCHEDULE_NAMES, SPECS, SamplingDefaults, folder_spec
from newbie.errors import NewbieError
from newbie.pipeline.recipe import Recipe
from newbie.pipeline.request import (
    MAX_SEED,
    Request,
    SettingError,
    Settings,
    carried_fields,
    check,
    parse_size,
    resolve,
)

SPEC = SPECS["newbie-exp0.1"]

BAD = [
    (dict(steps=True), "steps", "steps must be a whole number, got True (bool)"),
    (dict(steps="5"), "steps", "steps must be a whole number, got '5' (str)"),
    (dict(steps=5.5), "steps", "steps must be a whole number, got 5.5"),
    (dict(steps=0), "steps", "steps must be between 1 and 1000"),
    (dict(steps=10**6), "steps", "steps must be between 1 and 1000"),
    (dict(width="128"), "width", "width must be a whole number, got '128'"),
    (dict(width=100), "width", "width 100 is not a positive multiple of 16"),
    (dict(height=4096), "height", "height 4096 is larger than 2048"),
    (dict(cfg="high"), "cfg", "cfg must be a number, got 'high' (str)"),
    (dict(cfg=1e308), "cfg", "cfg must be between 0 and 100"),
    (dict(cfg=float("nan")), "cfg", "cfg must be a finite number"),
    (dict(cfg=-1), "cfg", "cfg must be between 0 and 100"),
    (dict(seed="abc"), "seed", "seed must be a whole number, got 'abc'"),
    (dict(seed=-1), "seed", "seed must be between 0 and"),
    (dict(seed=2**64), "seed", "seed must be between 0 and"),
    (dict(seed=MAX_SEED, batch=2), "seed", "past 2^64-1"),
    (dict(shift=-1), "shift", "shift must be between 0.01 and 100, got -1"),
    (dict(shift=0), "shift", "shift must be between 0.01 and 100"),
    (dict(shift=1e-300), "shift", "shift must be between 0.01 and 100"),
    (dict(shift=float("inf")), "shift", "shift must be a finite number"),
    (dict(cfg_trunc=7), "cfg_trunc", "cfg_trunc must be between 0 and 1, got 7"),
    (dict(cfg_trunc=-0.5), "cfg_trunc", "cfg_trunc must be between 0 and 1"),
    (dict(renorm_cfg=-3), "renorm_cfg", "renorm_cfg must be between 0 and 100"),
    (dict(sampler="ddim"), "sampler", "unknown sampler 'ddim' (choose from euler, midpoint"),
    (dict(noise="white"), "noise", "unknown noise 'white'"),
    (dict(schedule="karras"), "schedule", "unknown schedule 'karras'"),
    (dict(batch=0), "batch", "batch must be between 1 and 64"),
    (dict(batch=65), "batch", "batch must be between 1 and 64"),
    (dict(strength=1.5), "strength", "strength must be between 0 and 1"),
    (dict(mask_feather=-1), "mask_feather", "mask_feather must be between 0 and 256"),
    (dict(loras=["a"] * 17), "loras", "loras must have at most 16 entries, got 17"),
    (dict(loras="a.safetensors"), "loras", "loras must be a list"),
    (dict(fuse_loras=1), "fuse_loras", "fuse_loras must be true or false"),
    (dict(negative=3), "negative", "negative must be a string, got 3"),
    (dict(prompt=None), "prompt", "prompt must be a string or a list of strings, got None"),
    (dict(prompt=["a", 3]), "prompt", "prompt must be a string or a list of strings, got 3"),
    (dict(prompt=[]), "prompt", "no prompt given"),
]


@pytest.mark.parametrize("changes, name, message", BAD)
def test_every_bad_value_is_one_error_naming_its_field(changes, name, message):
    settings = Settings(prompt="1girl").replace(**changes)
    with pytest.raises(SettingError) as err:
        resolve(settings, SPEC)
    assert err.value.field == name
    assert message in str(err.value) and "\n" not in str(err.value)


def test_resolve_fills_the_models_defaults():
    req = resolve(Settings(prompt="1girl", seed=3, batch=2), SPEC)
    d = SPEC.sampling
    assert isinstance(req, Request)
    assert req.prompts == ["1girl", "1girl"] and req.seeds == [3, 4]
    assert (req.steps, req.cfg, req.sampler, req.shift) == (d.steps, d.cfg, d.sampler, d.shift)
    assert (req.width, req.height, req.cfg_trunc, req.renorm_cfg) == (1024, 1024, d.cfg_trunc, d.renorm_cfg)
    assert (req.noise, req.schedule, req.negative) == ("newbie", "uniform", "")
    assert req.loras == [] and req.image is None and req.hires is None


def test_numbers_of_other_numeric_types_are_taken_as_python_numbers():
    np = pytest.importorskip("numpy")
    req = resolve(
        Settings(prompt="a", steps=np.int64(4), cfg=np.float32(2.0), seed=np.uint64(MAX_SEED)), SPEC
    )
    assert type(req.steps) is int and req.steps == 4 and type(req.cfg) is float
    assert req.seeds == [MAX_SEED] and type(req.seeds[0]) is int


def test_a_folders_spec_sets_the_size_limit(tmp_path):
    (tmp_path / "newbie_spec.json").write_text('{"max_side": 256, "sampling": {"width": 128, "height": 128}}')
    spec = folder_spec(tmp_path, SPEC)
    assert resolve(Settings(prompt="a"), spec).width == 128
    with pytest.raises(SettingError, match="width 512 is larger than 256"):
        check(Settings(prompt="a", width=512), spec)
    (tmp_path / "newbie_spec.json").write_text("{not json")
    with pytest.raises(NewbieError, match="unreadable model spec"):
        folder_spec(tmp_path, SPEC)


def test_every_field_declares_a_rule_with_help_and_a_known_model_default():
    defaults = {f.name for f in dataclasses.fields(SamplingDefaults)}
    for name in Settings.fields():
        rule = Settings.rule(name)
        assert rule.help, name
        assert rule.model is None or rule.model in defaults, name
        assert (rule.model is not None) == (name in carried_fields()), name  # filled from the model


def test_carried_fields_are_held_by_request_and_recipe_under_the_same_name():
    for cls in (Request, Recipe):
        names = {f.name for f in dataclasses.fields(cls)}
        assert set(carried_fields()) <= names, cls
    assert set(carried_fields()) == {
        "negative",
        "steps",
        "cfg",
        "sampler",
        "shift",
        "width",
        "height",
        "cfg_trunc",
        "renorm_cfg",
        "noise",
        "schedule",
    }


def test_choice_names_match_the_engines_tables():
    from newbie.sampling.samplers import SAMPLERS
    from newbie.sampling.schedules import SCHEDULES

    assert SAMPLER_NAMES == tuple(SAMPLERS)
    assert SCHEDULE_NAMES == tuple(SCHEDULES)
    assert NOISE_NAMES == ("newbie", "comfy")


def test_parse_size_is_one_rule_for_every_door():
    assert parse_size("1024x768") == (1024, 768)
    assert parse_size("1344X768  (7:4)") == (1344, 768)  # the UI's labels
    assert parse_size("auto") == parse_size(None) == (None, None)
    for bad in ("big", "10x", "1x2x3", ""):
        with pytest.raises(SettingError, match="size must look like WIDTHxHEIGHT") as err:
            parse_size(bad)
        assert err.value.field == "size"


def test_settings_build_refuses_unknown_names():
    with pytest.raises(NewbieError, match="unknown request setting"):
        Settings.build("a", stepz=3)
    s = Settings(prompt="a")
    assert Settings.build(s) is s


def test_default_texts_agree_with_the_img2img_defaults():
    from newbie.pipeline.img2img import DEFAULTS

    assert Settings.rule("strength").default_text.startswith(f"{DEFAULTS.strength:g};")
    assert Settings.rule("mask_feather").default_text == str(DEFAULTS.mask_feather)
