"""The Expand tab's "Write with Gemma": the demo model's own Gemma writes the XML (AppTest, no browser)."""

from pathlib import Path

import pytest

import newbie.ui
from newbie.prompts import parse
from newbie.ui import compose

APP = Path(newbie.ui.__file__).parent / "app.py"
st_testing = pytest.importorskip("streamlit.testing.v1")
TEXT = "two girls under the night sky, one with red hair"


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWBIE_UI_DATA_DIR", str(tmp_path / "gallery"))
    monkeypatch.delenv("NEWBIE_UI_MODEL", raising=False)
    monkeypatch.setenv("NEWBIE_UI_DEVICE", "cpu")
    monkeypatch.setattr(compose, "GEMMA_MAX_NEW_TOKENS", 24)  # the page reads it at each click
    at = st_testing.AppTest.from_file(str(APP), default_timeout=300)
    at.run()
    assert not at.exception
    return at


def button(at, label):
    return next(b for b in at.button if b.label == label)


def test_write_with_gemma_replaces_the_rules_and_can_be_edited(app):
    app.session_state["mode"] = "Expand"
    app.text_area(key="describe").input(TEXT).run()
    rules = next(c.value for c in app.code if "<character_" in c.value)
    button(app, "Write with Gemma").click().run()
    assert not app.exception and not app.error
    line = next(c.value for c in app.caption if c.value.startswith("written by Gemma"))
    assert "greedy" in line and "tok/s" in line
    xml = next(c.value for c in app.code if "<caption>" in c.value)
    assert parse(xml).kind == "xml" and xml != rules
    button(app, "Write with Gemma").click().run()
    assert next(c.value for c in app.code if "<caption>" in c.value) == xml  # greedy: the same again
    button(app, "Edit as XML").click().run()
    assert app.session_state["mode"] == "Text" and app.session_state["prompt"] == xml


def test_gemma_answer_goes_when_the_description_changes_and_bad_seed_is_one_line(app):
    app.session_state["mode"] = "Expand"
    app.text_area(key="describe").input(TEXT).run()
    app.text_input(key="gemma_seed").input("x1").run()
    button(app, "Write with Gemma").click().run()
    assert [e.value for e in app.error] == [
        "the Gemma seed must be a whole number or empty (greedy), not 'x1'"
    ]
    app.text_input(key="gemma_seed").input("4").run()
    button(app, "Write with Gemma").click().run()
    assert any("seed 4" in c.value for c in app.caption)
    app.text_area(key="describe").input("a boy").run()
    assert not any(c.value.startswith("written by Gemma") for c in app.caption)  # the rules again
    assert any("<character_1>" in c.value for c in app.code)
