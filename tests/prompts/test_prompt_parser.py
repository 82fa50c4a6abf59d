import pytest

from newbie.prompts import PromptError, parse, prompt_kind


def test_readme_example_parses_into_fields(readme_prompt):
    p = parse(readme_prompt)
    assert p.kind == "xml"
    assert [ch.index for ch in p.characters] == [1, 2]
    first, second = p.characters
    assert first.n == ["$character_1$"]
    assert first.gender == ["1girl"]
    assert first.appearance[:3] == ["chibi", "red_eyes", "blue_hair"]
    assert first.position == ["center_left"]
    assert second.action[-1] == "waving"
    assert p.general.count == ["2girls", "multiple_girls"]
    assert p.general.background == ["white_background", "simple_background"]
    assert p.positions[("character", 1)] == (11, 1)
    assert p.positions[("character", 0, "appearance", 2)] == (4, 30)  # blue_hair


@pytest.mark.parametrize(
    "text, kind",
    [
        ("<character_1><n>a</n></character_1>", "xml"),
        ("  \n<general_tags></general_tags>", "xml"),
        ("<caption>a girl</caption>", "xml"),
        ("<image><caption>x</caption></image>", "xml"),
        ("<?xml version='1.0'?><caption>x</caption>", "xml"),  # so that the parser can refuse it
        ("1girl, blue_hair, smile", "text"),
        ("a girl with blue hair", "text"),
        ("<lora:style:0.8> 1girl", "text"),
        ("<3 hearts", "text"),
        ("", "text"),
    ],
)
def test_prompt_kind(text, kind):
    assert prompt_kind(text) == kind


def test_prompt_kind_never_raises():
    assert prompt_kind(None) == "text"  # type: ignore[arg-type]


def test_plain_text_and_tag_lists_pass_through():
    text = parse("A girl with blue hair stands in the rain.")
    assert text.kind == "text" and text.source.startswith("A girl")
    tags = parse("1girl, blue_hair,\nschool_uniform, smile")
    assert tags.kind == "tags"
    assert tags.tags == ["1girl", "blue_hair", "school_uniform", "smile"]
    assert tags.positions[("tags", 2)] == (2, 1)


def test_image_root_caption_style_entities_and_unknown_blocks():
    p = parse(
        "<image>\n<character_1><n>a &amp; b</n><hair>long</hair></character_1>\n"
        "<style>anime_style</style><caption>  two &lt;3 friends  </caption><note>x</note>\n</image>"
    )
    assert p.image_root
    assert p.characters[0].n == ["a & b"]
    assert p.characters[0].extra == {"hair": ["long"]}
    assert p.style == ["anime_style"]
    assert p.caption == "two <3 friends"
    assert p.unknown[0].name == "note" and p.unknown[0].text == "x"


def test_literal_angle_brackets_and_ampersands_are_text():
    p = parse("<character_1><expression>>_<, smile</expression><n>d&d</n></character_1>")
    assert p.characters[0].expression == [">_<", "smile"]
    assert p.characters[0].n == ["d&d"]


def test_repeated_field_is_merged():
    p = parse("<character_1><appearance>a</appearance><appearance>b, c</appearance></character_1>")
    assert p.characters[0].appearance == ["a", "b", "c"]
    assert p.positions[("character", 0, "appearance", 2)] == (1, 55)


ERRORS = [
    # (prompt, line, column, words in the message)
    ("<character_1>\n<n>x</n>\n<gender>1girl", 3, 1, "<gender> is never closed"),
    (
        "<character_1>\n<gender>1girl</character_1>",
        2,
        1,
        "<gender> is not closed before </character_1> at 2:14",
    ),
    (
        "<character_1>\n  <n>x</n>\n</charcter_1>",
        3,
        1,
        "</charcter_1> does not match <character_1> opened at 1:1",
    ),
    ("<caption>x</caption>\n</general_tags>", 2, 1, "</general_tags> has no matching <general_tags>"),
    (
        "<character_1>\nblue hair\n</character_1>",
        2,
        1,
        "stray text 'blue hair' directly inside <character_1>",
    ),
    ("<caption>x</caption> and more", 1, 22, "stray text 'and more' outside any tag"),
    ("<character_1><appearance>\n<hair>x</hair></appearance></character_1>", 2, 1, "nests too deep"),
    ("<image><character_1><n><b>x</b></n></character_1></image>", 1, 24, "nests too deep"),
    ("<character_1><image></image></character_1>", 1, 14, "<image> can only wrap the whole prompt"),
    ("<caption>a <b>girl</b></caption>", 1, 12, "<caption> holds plain text, not <b>"),
    ("<character_1 id='1'></character_1>", 1, 14, "has attributes"),
    ("<character_1><n>x</n", 1, 18, "</n is not closed with '>'"),
    ("<character_1><n>&nbsp;</n></character_1>", 1, 17, "unknown entity &nbsp;"),
    ("<character_1><n>x<!-- note --></n></character_1>", 1, 18, "comments are not allowed"),
    ("<caption><![CDATA[x]]></caption>", 1, 10, "CDATA"),
    ('<?xml version="1.0"?>\n<caption>x</caption>', 1, 1, "processing instructions"),
]


@pytest.mark.parametrize("text, line, column, words", ERRORS)
def test_malformed_xml_names_problem_and_position(text, line, column, words):
    with pytest.raises(PromptError) as info:
        parse(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.line, err.column) == (line, column), str(err)
    assert words in err.message
    assert str(err) == f"{line}:{column}: {err.message}"
    assert "\n" not in str(err)
