import pytest

from newbie.prompts import CODES, Character, GeneralTags, Prompt, PromptError, lint


def char(n: int, body: str) -> str:
    return f"<character_{n}>\n<n>$character_{n}$</n>\n{body}\n</character_{n}>\n"


GIRL = "<gender>1girl</gender>"

CASES = {
    "NB101": "".join(char(i, GIRL) for i in range(1, 6))
    + "<general_tags><count>5girls</count></general_tags>",
    "NB102": char(1, f"{GIRL}\n<appearance>blue_hair, long_hair, red_hair</appearance>"),
    "NB103": "".join(char(i, GIRL) for i in range(1, 4))
    + "<general_tags><count>2girls, multiple_girls</count></general_tags>",
    "NB104": char(1, f"{GIRL}\n<apperance>blue_hair</apperance>"),
    "NB105": char(1, f"{GIRL}\n<clothing></clothing>"),
    "NB106": char(1, f"{GIRL}\n<appearance>smile</appearance>\n<expression>Smile</expression>"),
    "NB107": char(1, GIRL) + char(3, GIRL),
    "NB108": char(1, f"{GIRL}\n<appearance>" + ", ".join(f"tag_{i}" for i in range(400)) + "</appearance>"),
    "NB109": char(1, "<n>hatsune_miku_(vocaloid)</n><gender>1girl</gender><clothing>dress_(cut)</clothing>"),
}


def test_every_code_has_a_case():
    assert set(CASES) == set(CODES)


def test_clean_readme_prompt_has_no_warnings(readme_prompt):
    assert lint(readme_prompt) == []


@pytest.mark.parametrize("code", sorted(CASES))
def test_each_code_fires(code):
    warnings = lint(CASES[code])
    assert code in {w.code for w in warnings}, warnings
    assert all(w.message and "\n" not in w.message for w in warnings)


@pytest.mark.parametrize("code", sorted(CASES))
def test_each_case_fires_nothing_else(code):
    assert {w.code for w in lint(CASES[code])} == {code}


def test_warning_positions_and_character():
    [w] = lint(CASES["NB105"])
    assert (w.code, w.line, w.column, w.character) == ("NB105", 4, 1, "character_1")
    assert str(w) == "4:1: NB105 <clothing> is empty; leave it out [character_1]"
    [dup] = lint(CASES["NB106"])
    assert (dup.line, dup.column) == (5, 13) and dup.message == "Smile repeats smile at 4:13"
    [conflict] = lint(CASES["NB102"])
    assert (conflict.line, conflict.column) == (4, 35)  # the second colour


def test_unknown_names_suggest_the_nearest():
    [w] = lint(CASES["NB104"])
    assert "did you mean <appearance>?" in w.message
    [top] = lint("<general_tag><count>1girl</count></general_tag>")
    assert "did you mean <general_tags>?" in top.message
    [misplaced] = lint(char(1, f"{GIRL}<background>sky</background>"))
    assert "belongs in <general_tags>" in misplaced.message


def test_conflicts_respect_intent():
    assert lint(char(1, "<appearance>blue_hair, red_hair, multicolored_hair</appearance>")) == []
    assert lint(char(1, "<appearance>blue_eyes, red_eyes, heterochromia</appearance>")) == []
    [w] = lint(char(1, "<appearance>blue_eyes, green_eyes</appearance>"))
    assert "two eye colours" in w.message
    # A flat list binds nothing to anyone, so two colours are only a conflict with a single character.
    assert lint("1girl, blue_hair, red_hair")[0].code == "NB102"
    assert lint("2girls, blue_hair, red_hair") == []


def test_count_checks_genders_too():
    prompt = (
        char(1, GIRL)
        + char(2, "<gender>1boy</gender>")
        + "<general_tags><count>2girls</count></general_tags>"
    )
    [w] = lint(prompt)
    assert w.code == "NB103" and "1 boy, 1 girl" in w.message
    ok = (
        char(1, GIRL)
        + char(2, "<gender>1boy</gender>")
        + "<general_tags><count>1girl, 1boy</count></general_tags>"
    )
    assert lint(ok) == []
    assert (
        lint(char(1, GIRL) + "<general_tags><count>multiple_girls</count></general_tags>")[0].code == "NB103"
    )


def test_numbering_reports_missing_and_repeated():
    msgs = [w.message for w in lint(char(1, GIRL) + char(3, GIRL) + char(3, GIRL))]
    assert "character_3 appears twice" in msgs
    assert "characters are numbered 1, 3: character_2 missing" in msgs


def test_token_limit_uses_the_tokenizer_when_given():
    short = char(1, GIRL)
    assert lint(short, count_tokens=lambda s: 600)[0].message.startswith("prompt is 600 tokens")
    assert lint(short, count_tokens=lambda s: 100) == []
    assert "roughly" in lint(CASES["NB108"])[0].message
    assert lint(CASES["NB108"], count_tokens=lambda s: 500) == []


def test_parentheses_suggest_the_escaped_form():
    msgs = [w.message for w in lint(CASES["NB109"])]
    assert len(msgs) == 2 and "write dress_\\(cut\\)" in msgs[1]  # names too: hatsune_miku_\\(vocaloid\\)
    assert lint(char(1, "<clothing>dress_\\(cut\\)</clothing>")) == []
    assert lint("1girl, (blue_hair:1.2), smile")[0].code == "NB109"


def test_lint_accepts_a_built_prompt_and_raises_on_malformed_text():
    built = Prompt(
        characters=[Character(gender="1girl", appearance="blue_hair, red_hair"), Character(gender="1boy")],
        general=GeneralTags(count="1girl, 1boy", perspective="multiple_views"),
    )
    assert [(w.code, w.character) for w in lint(built)] == [("NB102", "character_1")]
    with pytest.raises(PromptError):
        lint("<character_1>")


def test_plain_text_is_only_checked_for_length():
    assert lint("a girl (smiling) with blue hair and red hair") == []
