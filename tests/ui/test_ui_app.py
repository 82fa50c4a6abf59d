"""The page under Streamlit's AppTest (no browser), with the embedded demo model and a temporary gallery."""

import re
from pathlib import Path

import pytest
from PIL import Image

import newbie.ui
from newbie.ui.gallery import Gallery

APP = Path(newbie.ui.__file__).parent / "app.py"
st_testing = pytest.importorskip("streamlit.testing.v1")


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    data = tmp_path / "gallery"
    monkeypatch.setenv("NEWBIE_UI_DATA_DIR", str(data))
    monkeypatch.delenv("NEWBIE_UI_MODEL", raising=False)
    monkeypatch.setenv("NEWBIE_UI_DEVICE", "cpu")
    return data


@pytest.fixture
def app(data_dir):
    at = st_testing.AppTest.from_file(str(APP), default_timeout=300)
    at.run()
    assert not at.exception
    return at


def button(at, label):
    return next(b for b in at.button if b.label == label)


def labels(elements):
    return [e.value for e in elements]


def generate(at, prompt, steps=2):
    at.text_area(key="prompt").input(prompt)
    at.number_input(key="steps").set_value(steps)
    button(at, "Generate").click().run()
    job = at.session_state["job"]
    assert job.wait(300)
    at.run()
    return job


def add_entry(data_dir, recipe, colour=(10, 20, 30)):
    return Gallery(data_dir).add(
        Image.new("RGB", (128, 128), colour), recipe, seconds=2.0, peak_gib=0.5, peak_kind="process RSS"
    )


def test_first_view(app):
    assert [t.label for t in app.text_area][:2] == ["Prompt", "Description"]
    assert [b.label for b in app.button].count("Generate") == 1 and not button(app, "Generate").disabled
    assert "No images yet." in labels(app.caption)
    assert not app.error
    assert app.session_state["size"].startswith("128x128")  # the demo model's one trained size
    # a CPU: no GPU plan for the real model's 15.7 GiB, but what the demo's weights take (fp32 on a CPU)
    [memory] = [c for c in labels(app.caption) if c.startswith("Memory")]
    assert re.fullmatch(
        r"Memory: demo_model on the CPU, \d\d MB of weights in RAM \(GPU memory plans apply on a GPU\)",
        memory,
    )
    assert app.session_state["style_preset"] == "none" and app.session_state["style_tags"] == ""


def test_generate_keep_reuse_and_delete(app, data_dir):
    job = generate(app, "1girl, red_hair, blue_eyes")
    assert job.status == "done", job.message
    assert labels(app.success)[0].startswith("done in")
    gallery = Gallery(data_dir)
    [entry] = gallery.list()
    assert entry.recipe.prompt == "1girl, red_hair, blue_eyes"  # no style preset unless one is picked
    assert entry.recipe.steps == 2
    assert len(app.get("image")) == 2  # the hero and its thumbnail
    assert any(m.startswith("### Gallery · 1") for m in labels(app.markdown))

    app.text_input(key="seed").input("99")
    app.selectbox(key="style_preset").set_value("cyberpunk").run()
    button(app, "Use these settings").click().run()
    assert app.session_state["prompt"] == entry.recipe.prompt
    assert app.session_state["seed"] == str(entry.recipe.seed)
    assert (app.session_state["style_preset"], app.session_state["style_tags"]) == ("none", "")

    button(app, "Delete").click().run()
    assert labels(app.warning) == ["Delete this image and its recipe for good?"]
    assert gallery.count() == 1
    button(app, "Yes, delete").click().run()
    assert gallery.count() == 0 and not entry.image_path.exists()
    assert "No images yet." in labels(app.caption)


def test_bad_xml_shows_its_position_and_starts_nothing(app):
    app.text_area(key="prompt").input("<character_1>\n<gender>1girl</gendr>\n</character_1>").run()
    assert labels(app.error)[0].startswith("bad XML at line 2, column ")
    button(app, "Generate").click().run()
    assert "job" not in app.session_state
    errors = labels(app.error)
    assert any(e.startswith("bad XML at line 2") for e in errors)
    assert not app.exception and not any(e.startswith("something went wrong") for e in errors)


def test_failed_generation_keeps_the_gallery(app, data_dir, recipe_factory):
    kept = add_entry(data_dir, recipe_factory(prompt="1boy, blue_hair"))
    app.text_area(key="prompt").input("1girl")
    app.text_input(key="seed").input("lucky").run()
    button(app, "Generate").click().run()
    assert "seed must be a whole number (or empty for a random one), got 'lucky'" in labels(app.error)
    assert [e.id for e in Gallery(data_dir).list()] == [kept.id]
    assert [b.label for b in app.button if b.label.startswith("#")] == [f"#{kept.id}"]  # still listed


def test_search_and_view(app, data_dir, recipe_factory):
    red = add_entry(data_dir, recipe_factory(prompt="1girl, red_hair", seed=1))
    blue = add_entry(data_dir, recipe_factory(prompt="1boy, blue_hair", seed=2))
    app.run()
    assert [b.label for b in app.button if b.label.startswith("#")] == [f"#{blue.id}", f"#{red.id}"]
    app.text_input(key="search").input("RED").run()
    assert [b.label for b in app.button if b.label.startswith("#")] == [f"#{red.id}"]
    button(app, f"#{red.id}").click().run()
    assert any("seed 1 " in c for c in labels(app.caption))  # the detail view shows the chosen one
    app.text_input(key="search").input("green").run()
    assert "No images match." in labels(app.caption)


def test_dice_and_style_preset(app):
    app.button(key="dice").click().run()
    assert app.session_state["seed"].isdigit()
    app.selectbox(key="style_preset").set_value("ink wash").run()
    assert "ink_wash_painting" in app.session_state["style_tags"]


def test_structured_editor_writes_xml_live(app):
    app.session_state["mode"] = "Structured"
    app.number_input(key="cards").set_value(2)
    app.run()
    app.text_input(key="card0_gender").input("1girl")
    app.text_input(key="card0_appearance").input("red_hair, blue_eyes")
    app.text_input(key="card1_gender").input("1boy")
    app.text_input(key="general_count").input("1girl, 1boy").run()
    xml = next(c.value for c in app.code if "<character_1>" in c.value)
    assert "<gender>1girl</gender>" in xml and "<appearance>red_hair, blue_eyes</appearance>" in xml
    assert "<character_2>" in xml and "<count>1girl, 1boy</count>" in xml
    assert "✓ xml prompt, no lint warnings" in labels(app.caption)


def test_expand_mode_and_edit_as_xml(app):
    app.session_state["mode"] = "Expand"
    app.text_area(key="describe").input("two girls under the night sky, one with red hair").run()
    xml = next(c.value for c in app.code if "<character_2>" in c.value)
    button(app, "Edit as XML").click().run()
    assert app.session_state["mode"] == "Text" and app.session_state["prompt"] == xml


def test_cancel_keeps_the_gallery(app, data_dir, recipe_factory):
    kept = add_entry(data_dir, recipe_factory())
    app.text_area(key="prompt").input("1girl, red_hair")
    app.number_input(key="steps").set_value(100)
    button(app, "Generate").click().run()
    job = app.session_state["job"]
    button(app, "Cancel").click().run()
    assert job.wait(300)
    app.run()
    assert job.status == "cancelled"
    assert "cancelled" in labels(app.info)
    assert [e.id for e in Gallery(data_dir).list()] == [kept.id]


def test_hires_toggle_reaches_the_request(app, data_dir):
    assert "Artist workflows" in [e.label for e in app.expander]
    assert app.selectbox(key="hires_scale").disabled  # the scale only matters with the pass on
    app.toggle(key="hires").set_value(True).run()
    app.selectbox(key="hires_scale").set_value(1.5)
    job = generate(app, "1girl, red_hair", steps=2)
    assert job.kwargs["hires"] == 1.5
    assert job.status == "done", job.message
    [entry] = Gallery(data_dir).list()
    assert (entry.recipe.hires["width"], entry.recipe.hires["height"]) == (192, 192)


def test_a_broken_entry_is_shown_as_such_and_can_be_deleted(app, data_dir, recipe_factory):
    """The newest PNG deleted and a damaged recipe row (issue 27): the page, the other images and a way to
    remove the broken ones remain."""
    import sqlite3

    kept = add_entry(data_dir, recipe_factory(prompt="1girl, kept", seed=1))
    damaged = add_entry(data_dir, recipe_factory(prompt="1girl, damaged", seed=2))
    gone = add_entry(data_dir, recipe_factory(prompt="1girl, gone", seed=3))
    with sqlite3.connect(data_dir / "gallery.sqlite3") as con:
        con.execute("UPDATE images SET recipe = '{' WHERE id = ?", (damaged.id,))
    gone.image_path.unlink()
    gone.thumb_path.unlink()
    app.run()
    assert not app.exception and not any(e.startswith("something went wrong") for e in labels(app.error))
    assert [b.label for b in app.button if b.label.startswith("#")] == [
        f"#{i}" for i in (gone.id, damaged.id, kept.id)
    ]
    assert any("cannot be shown" in w and "missing" in w for w in labels(app.warning))
    button(app, "Delete").click().run()
    button(app, "Yes, delete").click().run()
    button(app, f"#{damaged.id}").click().run()
    assert any("unreadable" in w for w in labels(app.warning))
    button(app, "Delete").click().run()
    button(app, "Yes, delete").click().run()
    assert [e.id for e in Gallery(data_dir).list()] == [kept.id]


def test_the_access_key_guards_the_page(data_dir, monkeypatch):
    monkeypatch.setenv("NEWBIE_UI_ACCESS_KEY", "s3cret")
    at = st_testing.AppTest.from_file(str(APP), default_timeout=300)
    at.run()
    assert any("access key" in e for e in labels(at.error)) and not list(at.button)
    at.query_params["key"] = "s3cret"
    at.run()
    assert not at.exception and any(b.label == "Generate" for b in at.button)
