from newbie.prompts import expand, lint, parse, to_xml


def _fields(prompt, name):
    return [getattr(ch, name) for ch in prompt.characters]


def test_two_girls_split_by_one_and_one():
    p = expand("two girls, one with red hair on the left, one with blue hair on the right, night sky")
    assert _fields(p, "gender") == [["1girl"], ["1girl"]]
    assert _fields(p, "appearance") == [["red_hair"], ["blue_hair"]]
    assert _fields(p, "position") == [["left"], ["right"]]
    assert p.general.count == ["2girls", "multiple_girls"]
    assert p.general.background == ["night_sky"]
    assert p.caption.startswith("two girls, one with red hair")
    assert lint(to_xml(p)) == []


def test_subjects_modifiers_and_scene():
    p = expand("A girl with long blue hair and a boy in a black shirt, white background, smiling.")
    assert _fields(p, "gender") == [["1girl"], ["1boy"]]
    assert _fields(p, "appearance") == [["long_hair", "blue_hair"], []]
    assert _fields(p, "clothing") == [[], ["black_shirt"]]
    assert _fields(p, "expression") == [["smile"], ["smile"]]  # a clause naming nobody: everyone
    assert p.general.background == ["white_background"]
    assert p.general.count == ["1girl", "1boy"]


def test_pointing_words():
    p = expand("a red-haired girl sitting in a classroom, the other girl is standing")
    assert _fields(p, "action") == [["sitting"], ["standing"]]
    assert _fields(p, "appearance") == [["red_hair"], []]
    p = expand(
        "three boys and a girl, the first boy waves, the second one sings, the girl is dancing on the right"
    )
    assert _fields(p, "action") == [["waving"], ["singing"], [], ["dancing"]]
    assert _fields(p, "position") == [[], [], [], ["right"]]


def test_between_number_and_subject_describes_them_all():
    p = expand("two blonde girls holding hands at sunset")
    assert _fields(p, "appearance") == [["blonde_hair"], ["blonde_hair"]]
    assert _fields(p, "interaction") == [["holding_hands"], ["holding_hands"]]
    assert p.general.environment == ["sunset"]


def test_a_pair_of():
    assert _fields(expand("a pair of boys in black shirts"), "clothing") == [["black_shirt"], ["black_shirt"]]


def test_tags_and_xml_are_not_rewritten_by_the_rules(readme_prompt):
    assert expand("1girl, blue_hair, smile").characters[0].appearance == ["blue_hair"]
    assert expand(readme_prompt) == parse(readme_prompt)


def test_one_of_those_already_introduced():
    text = "two girls and a boy, one girl with green eyes, the boy with a white shirt in the center"
    p = expand(text)
    assert _fields(p, "gender") == [["1girl"], ["1girl"], ["1boy"]]
    assert _fields(p, "appearance") == [["green_eyes"], [], []]
    assert _fields(p, "position") == [[], [], ["center"]]
    assert to_xml(expand(text)) == to_xml(p)  # deterministic
