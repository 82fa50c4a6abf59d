import numpy as np
import pytest

from newbie.config import SPECS
from newbie.errors import NewbieError
from newbie.prompts import parse
from newbie.ui import compose, form


def test_cards_write_xml_one_block_per_character():
    cards = [
        {
            "n": "",
            "gender": "1girl",
            "appearance": "red_hair, blue_eyes",
            "clothing": "",
            "expression": "smile",
            "action": "",
            "position": "left",
        },
        {
            "n": "hatsune_miku",
            "gender": "1girl",
            "appearance": "",
            "clothing": "",
            "expression": "",
            "action": "waving",
            "position": "right",
        },
    ]
    xml = compose.cards_to_xml(cards, {"count": "2girls", "background": "night_sky", "other": ""})
    p = parse(xml)
    assert [c.gender for c in p.characters] == [["1girl"], ["1girl"]]
    assert p.characters[0].appearance == ["red_hair", "blue_eyes"] and p.characters[0].n == ["$character_1$"]
    assert p.characters[1].n == ["hatsune_miku"] and p.characters[1].action == ["waving"]
    assert p.general.count == ["2girls"] and p.general.background == ["night_sky"]
    assert "<other>" not in xml and "<clothing>" not in xml  # empty fields are left out


def test_bad_xml_is_reported_with_its_position():
    check = compose.check_prompt("<character_1>\n  <gender>1girl</gendr>\n</character_1>")
    assert check.error.startswith("bad XML at line 2, column ")
    assert compose.check_prompt("   ").error == "the prompt is empty"


def test_lint_warnings_and_kinds():
    five = "".join(f"<character_{i}><gender>1girl</gender></character_{i}>" for i in range(1, 6))
    check = compose.check_prompt(five)
    assert check.error is None and any("NB101" in w for w in check.warnings)
    assert compose.check_prompt("1girl, red_hair, blue_eyes").kind == "tags"
    assert compose.check_prompt("a girl with red hair waving at the sea.").kind == "text"


def test_expand_turns_a_sentence_into_xml():
    p = parse(compose.expand_to_xml("two girls, one with red hair on the left"))
    assert len(p.characters) == 2 and p.caption


def test_seed_parsing():
    assert form.parse_seed("") is None and form.parse_seed(" 42 ") == 42
    with pytest.raises(NewbieError, match="whole number"):
        form.parse_seed("4.2")
    with pytest.raises(NewbieError, match="between 0"):
        form.parse_seed("-1")


def test_defaults_come_from_the_model_spec():
    d = form.defaults(SPECS["newbie-exp0.1"])
    assert (d["size"].split()[0], d["steps"], d["cfg"], d["sampler"]) == ("1024x1024", 18, 5.0, "midpoint")
    s = form.settings(d)
    assert s.seed is None and (s.width, s.height) == (1024, 1024) and form.dtype(d) == "auto"
    assert (s.shift, s.cfg_trunc, s.noise) == (None, None, None)  # the model's own defaults


def test_number_widgets_take_the_request_rules_bounds():
    from newbie.pipeline.request import Settings

    assert form.bounds("steps")["min_value"] == 1 and form.bounds("steps")["max_value"] == 1000
    assert form.bounds("cfg")["max_value"] == Settings.rule("cfg").hi
    with pytest.raises(NewbieError, match="steps must be between 1 and 1000, got 0"):
        form.settings({**form.defaults(SPECS["newbie-exp0.1"]), "steps": 0})
    with pytest.raises(NewbieError, match="shift must be between 0.01 and 100, got -1"):
        form.settings({**form.defaults(SPECS["newbie-exp0.1"]), "advanced": {"shift": -1}})


def test_bad_settings_are_one_line_errors():
    d = {**form.defaults(SPECS["newbie-exp0.1"]), "size": "big"}
    with pytest.raises(NewbieError, match="size must look like WIDTHxHEIGHT"):
        form.settings(d)
    with pytest.raises(NewbieError, match="precision"):
        form.settings({**form.defaults(SPECS["newbie-exp0.1"]), "dtype": "int3"})


def test_use_these_settings_makes_the_same_image(tiny_pipeline):
    first = tiny_pipeline.generate(
        "1girl, red_hair",
        "blurry",
        seed=5,
        steps=2,
        cfg=3.0,
        sampler="euler",
        width=64,
        height=32,
        shift=2.0,
        cfg_trunc=0.5,
    )
    values = form.from_recipe(first.recipes[0])
    assert values["style_preset"] == "none" and values["mode"] == "Text"
    s = form.settings(values)
    again = tiny_pipeline.generate(values["prompt"], s.negative, **form.generate_kwargs(s))
    assert again.recipes[0] == first.recipes[0]
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(first.images[0]))
