import pytest

from newbie.prompts import Character, GeneralTags, Prompt, canonical, lint, parse, to_xml

MESSY = """
  <character_3>   <position>left</position>
  <appearance> Blue Hair ,  long_hair,blue hair , </appearance>
  <gender>1girl</gender><n>$character_3$</n>
  <clothing></clothing>
  </character_3>
<general_tags><background>white_background</background><count>2girls</count></general_tags>
<caption>  two   friends &amp; a cat </caption>
<character_1><n>saber_(fate)</n><gender>1girl</gender></character_1>
"""


def test_canonical_orders_fields_renumbers_and_normalises():
    assert canonical(MESSY) == "\n".join(
        [
            "<character_1>",
            "<n>saber_\\(fate\\)</n>",
            "<gender>1girl</gender>",
            "</character_1>",
            "<character_2>",
            "<n>$character_2$</n>",
            "<gender>1girl</gender>",
            "<appearance>Blue_Hair, long_hair</appearance>",
            "<position>left</position>",
            "</character_2>",
            "<general_tags>",
            "<count>2girls</count>",
            "<background>white_background</background>",
            "</general_tags>",
            "<caption>two friends & a cat</caption>",  # escaped only where it would read as markup
        ]
    )


@pytest.mark.parametrize(
    "text",
    [
        MESSY,
        "<image><caption>x</caption><character_1><expression>>_<</expression></character_1></image>",
        "<character_1><n>a &lt;b&gt; &amp;amp;</n></character_1><notes><a>1</a></notes><odd>t</odd>",
        "1girl,  blue hair, (smile), 1girl",
        "  A girl   in the rain.  ",
    ],
)
def test_canonical_is_idempotent_and_parses_back(text):
    once = canonical(text)
    assert canonical(once) == once
    parse(once)


def test_canonical_readme_prompt_is_lint_clean(readme_prompt):
    out = canonical(readme_prompt)
    assert lint(out) == []
    assert parse(out).characters[1].clothing == parse(readme_prompt).characters[1].clothing


def test_canonical_flat_prompts():
    assert canonical("1girl,  blue hair, (smile), 1girl") == "1girl, blue_hair, \\(smile\\)"
    assert canonical("  A girl   in the rain.  ") == "A girl in the rain."


def test_to_xml_from_dataclasses_round_trips():
    prompt = Prompt(
        characters=[
            Character(n="hatsune_miku", gender="1girl", appearance="aqua_hair, twintails", position="left"),
            Character(gender=["1boy"], clothing=["black_shirt"], position=["right"]),
        ],
        general=GeneralTags(count="1girl, 1boy", background="white_background"),
        caption="a girl and a boy",
    )
    xml = to_xml(prompt)
    back = parse(xml)
    assert back.characters[0].appearance == ["aqua_hair", "twintails"]
    assert back.characters[1].n == ["$character_2$"]
    assert back.general.count == ["1girl", "1boy"]
    assert back.caption == "a girl and a boy"
    assert lint(xml) == []
    assert to_xml(back) == xml
