import json

import pytest

from newbie.prompts import from_dict, from_json, from_tags, from_yaml, lint, parse, to_xml
from newbie.prompts.lexicon import lexicon

DATA = {
    "characters": [
        {
            "name": "$character_1$",
            "gender": "1girl",
            "appearance": ["red_hair", "long_hair"],
            "position": "left",
        },
        {"gender": "1girl", "appearance": "blue_hair", "clothing": ["white_shirt"], "position": "right"},
    ],
    "general_tags": {"count": "2girls, multiple_girls", "background": ["night_sky"]},
    "caption": "two girls under the night sky",
}

YAML = """
characters:
  - name: $character_1$
    gender: 1girl
    appearance: [red_hair, long_hair]
    position: left
  - gender: 1girl
    appearance: blue_hair
    clothing: [white_shirt]
    position: right
general_tags:
  count: 2girls, multiple_girls
  background: [night_sky]
caption: two girls under the night sky
"""


def _check(prompt):
    xml = to_xml(prompt)
    back = parse(xml)
    assert [ch.appearance for ch in back.characters] == [["red_hair", "long_hair"], ["blue_hair"]]
    assert [ch.position for ch in back.characters] == [["left"], ["right"]]
    assert back.characters[1].n == ["$character_2$"]
    assert back.general.background == ["night_sky"]
    assert back.caption == "two girls under the night sky"
    assert lint(xml) == []
    return xml


def test_json_and_yaml_and_dict_build_the_same_prompt():
    xml = _check(from_dict(DATA))
    assert _check(from_json(json.dumps(DATA))) == xml
    assert _check(from_yaml(YAML)) == xml


def test_a_bare_list_is_the_characters():
    assert len(from_dict([{"gender": "1girl"}, {"gender": "1boy"}]).characters) == 2


@pytest.mark.parametrize(
    "data, words",
    [
        (
            {"characters": [{"apperance": "x"}]},
            "characters[0]: unknown field 'apperance'; did you mean 'appearance'?",
        ),
        ({"general_tags": {"count": {"a": 1}}}, "general_tags.count: expected a string or a list of tags"),
        ({"charcters": []}, "did you mean 'characters'?"),
        ({"characters": {"gender": "1girl"}}, "characters: expected a list"),
        ("1girl", "expected a mapping or a list"),
    ],
)
def test_bad_data_names_the_entry(data, words):
    with pytest.raises(ValueError) as info:
        from_dict(data)
    assert words in str(info.value)


def test_bad_json_and_yaml_are_value_errors():
    with pytest.raises(ValueError):
        from_json("{")
    with pytest.raises(ValueError, match="invalid YAML"):
        from_yaml("characters: [")


def test_from_tags_sorts_tags_into_fields():
    prompt = from_tags("1girl, blue_hair, school_uniform, smile, night_sky, mystery_tag, masterpiece")
    [ch] = prompt.characters
    assert ch.gender == ["1girl"]
    assert (ch.appearance, ch.clothing, ch.expression) == (["blue_hair"], ["school_uniform"], ["smile"])
    g = prompt.general
    assert (g.count, g.background, g.other, g.quality) == (
        ["1girl"],
        ["night_sky"],
        ["mystery_tag"],
        ["masterpiece"],
    )
    assert lint(to_xml(prompt)) == []
    assert parse(to_xml(prompt)).characters[0].clothing == ["school_uniform"]


def test_from_tags_with_several_characters_binds_nothing():
    prompt = from_tags("2girls, multiple_girls, red_hair, blue_hair, smile, beach")
    assert [ch.gender for ch in prompt.characters] == [["1girl"], ["1girl"]]
    assert prompt.general.other == ["red_hair", "blue_hair", "smile"]
    assert prompt.general.background == ["beach"]
    assert lint(to_xml(prompt)) == []


def test_from_tags_scenery_has_no_characters():
    prompt = from_tags("no_humans, scenery, night_sky, city_lights")
    assert prompt.characters == []


DEMO_TAGS = (
    [f"{c}_background" for c in ("white", "black", "blue", "green")]
    + [
        f"{c}_{n}"
        for c in ("red", "blue", "green", "yellow", "pink", "purple", "white", "black")
        for n in ("hair", "eyes", "shirt")
    ]
    + ["left", "center", "right", "center_left", "center_right"]
    + ["1girl", "2girls", "3girls", "1boy", "2boys", "multiple_girls", "multiple_boys", "1other"]
)


def test_lexicon_knows_the_demo_model_tags():
    lex = lexicon()
    fields = {t: lex.field(t) for t in DEMO_TAGS}
    assert all(t in lex.category_of for t in DEMO_TAGS)
    assert {fields[t] for t in DEMO_TAGS if t.endswith("_background")} == {"background"}
    assert {fields[t] for t in DEMO_TAGS if t.endswith(("_hair", "_eyes"))} == {"appearance"}
    assert {fields[t] for t in DEMO_TAGS if t.endswith("_shirt")} == {"clothing"}
    assert {fields[t] for t in ("left", "center", "right", "center_left")} == {"position"}
    assert lex.category("red_hair") == "hair_color" and lex.category("Blue Eyes") == "eye_color"
    assert len(lex.category_of) > 500
