import dataclasses

import pytest

from newbie.config import SPECS
from newbie.pipeline.request import parse_size
from newbie.prompts import PromptError, parse
from newbie.ui.sizes import size_label, trained_sizes
from newbie.ui.styles import NO_STYLE, STYLE_PRESETS, apply_style, preset_tags

REAL = SPECS["newbie-exp0.1"]
DEMO = dataclasses.replace(
    REAL,
    trained_pixels=128 * 128,
    max_aspect=1.0,
    sampling=dataclasses.replace(REAL.sampling, width=128, height=128),
)


def test_real_model_sizes_are_the_training_buckets():
    sizes = trained_sizes(REAL)
    assert {(1024, 1024), (2048, 512), (512, 2048), (1152, 896), (896, 1152)} <= set(sizes)
    assert len(sizes) == len(set(sizes))
    for w, h in sizes:
        assert w % 64 == 0 and h % 64 == 0
        assert w * h <= 1024 * 1024
        assert max(w, h) / min(w, h) <= 4
    assert sizes[0] == (2048, 512) and sizes[-1] == (512, 2048)  # widest first


def test_demo_model_has_one_trained_size():
    assert trained_sizes(DEMO) == [(128, 128)]


def test_size_labels_round_trip():
    assert size_label(1344, 768) == "1344x768  (7:4)"
    assert parse_size(size_label(1344, 768)) == (1344, 768)


def test_presets_are_visible_tag_sets():
    for name in ("oil painting", "watercolour", "cyberpunk", "ink wash", "anime default"):
        assert preset_tags(name).count(",") >= 2
    assert preset_tags(NO_STYLE) == "" and NO_STYLE in STYLE_PRESETS


def test_style_goes_into_general_tags_of_xml():
    xml = "<character_1><n>$character_1$</n><gender>1girl</gender></character_1>"
    out = parse(apply_style(xml, "ink_wash_painting, monochrome"))
    assert out.general.style == ["ink_wash_painting", "monochrome"]
    assert out.characters[0].gender == ["1girl"]
    merged = parse(
        apply_style("<general_tags><style>monochrome</style></general_tags>", "monochrome, sumi-e")
    )
    assert merged.general.style == ["monochrome", "sumi-e"]


def test_style_is_appended_to_text_and_tags():
    assert (
        apply_style("1girl, red_hair, ", "cyberpunk, neon_lights")
        == "1girl, red_hair, cyberpunk, neon_lights"
    )
    assert apply_style("a girl at night", "") == "a girl at night"


def test_style_on_malformed_xml_raises_prompt_error():
    with pytest.raises(PromptError):
        apply_style("<character_1><gender>1girl</character_1>", "monochrome")
