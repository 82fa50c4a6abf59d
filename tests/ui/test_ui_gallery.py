import pytest
from PIL import Image

from newbie.errors import NewbieError
from newbie.pipeline.recipe import PNG_KEY, Recipe, png_chunks
from newbie.ui.gallery import Gallery


def _image(colour=(200, 30, 30)):
    return Image.new("RGB", (64, 48), colour)


def _add(gallery, recipe, colour=(200, 30, 30)):
    return gallery.add(_image(colour), recipe, seconds=1.5, peak_gib=0.25, peak_kind="process RSS")


def test_entries_keep_image_recipe_and_measurements(tmp_path, recipe_factory):
    g = Gallery(tmp_path / "data")
    entry = _add(g, recipe_factory(seed=11))
    assert entry.image_path.is_file() and entry.thumb_path.is_file()
    assert Recipe.from_json(png_chunks(entry.image_path)[PNG_KEY]) == recipe_factory(
        seed=11
    )  # the download carries the recipe
    assert Image.open(entry.image_path).getpixel((0, 0)) == (200, 30, 30)
    got = g.get(entry.id)
    assert got.recipe == recipe_factory(seed=11)
    assert (got.seconds, got.peak_gib, got.peak_kind) == (1.5, 0.25, "process RSS")


def test_newest_first_search_and_restart(tmp_path, recipe_factory):
    g = Gallery(tmp_path)
    first = _add(g, recipe_factory(prompt="1girl, red_hair, 100%_cute"))
    second = _add(g, recipe_factory(prompt="<character_1><n>Miku</n></character_1>"))
    third = _add(g, recipe_factory(prompt="1boy, blue_hair"))
    assert [e.id for e in g.list()] == [third.id, second.id, first.id]
    assert [e.id for e in g.list("RED_HAIR")] == [first.id]  # case-insensitive
    assert [e.id for e in g.list("miku")] == [second.id]
    assert [e.id for e in g.list("100%")] == [first.id]
    assert [e.id for e in g.list("0%_c")] == [first.id]
    assert g.list("r_d") == []  # _ is literal, not a wildcard
    assert [e.id for e in g.list(limit=2)] == [third.id, second.id]
    reopened = Gallery(tmp_path)  # a restart of the page
    assert [e.id for e in reopened.list()] == [third.id, second.id, first.id]
    assert reopened.count() == 3


def test_delete_removes_row_and_files(tmp_path, recipe_factory):
    g = Gallery(tmp_path)
    keep, gone = _add(g, recipe_factory(seed=1)), _add(g, recipe_factory(seed=2))
    assert g.delete(gone.id)
    assert not gone.image_path.exists() and not gone.thumb_path.exists()
    assert g.get(gone.id) is None and [e.id for e in g.list()] == [keep.id]
    assert not g.delete(gone.id)


def test_failed_write_keeps_earlier_entries_and_leaves_nothing_behind(tmp_path, recipe_factory):
    g = Gallery(tmp_path)
    earlier = _add(g, recipe_factory(seed=1))

    class Broken:
        def save(self, *a, **k):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        g.add(Broken(), recipe_factory(seed=2), seconds=1.0, peak_gib=None, peak_kind="process RSS")
    assert [e.id for e in g.list()] == [earlier.id]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [earlier.image_path.name]
    assert sorted(p.name for p in (tmp_path / "thumbs").iterdir()) == [earlier.thumb_path.name]


def test_unusable_folder_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(NewbieError, match="cannot use the gallery folder"):
        Gallery(blocker / "data")


def test_a_missing_file_or_damaged_recipe_is_one_broken_entry_not_a_broken_gallery(tmp_path, recipe_factory):
    import sqlite3

    g = Gallery(tmp_path)
    old, bad, gone = (_add(g, recipe_factory(seed=s)) for s in (1, 2, 3))
    with sqlite3.connect(tmp_path / "gallery.sqlite3") as con:
        con.execute("UPDATE images SET recipe = '{not json' WHERE id = ?", (bad.id,))
    gone.image_path.unlink()
    old.thumb_path.unlink()
    entries = {e.id: e for e in g.list()}
    assert len(entries) == 3
    assert entries[old.id].problem is None and entries[old.id].picture == old.image_path  # thumbnail lost
    assert "unreadable" in entries[bad.id].problem and entries[bad.id].recipe is None
    assert "missing" in entries[gone.id].problem and entries[gone.id].picture == gone.thumb_path
    assert g.delete(bad.id) and g.delete(gone.id)  # removable from the page
    assert [e.id for e in g.list()] == [old.id]


def test_an_emptied_gallery_index_is_refused_not_shown_empty(tmp_path, recipe_factory):
    _add(Gallery(tmp_path), recipe_factory())
    (tmp_path / "gallery.sqlite3").write_bytes(b"")
    with pytest.raises(NewbieError, match="empty"):
        Gallery(tmp_path)


def test_uploads_are_checked_before_decoding():
    import io
    import struct
    import zlib

    from newbie.ui.workflows import confine_loras, open_upload

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 16_777_216, 8, 0, 0, 0, 0))
    bomb = b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(b"\0" * 8)) + chunk(b"IEND", b"")
    with pytest.raises(NewbieError, match="1x16777216"):
        open_upload(io.BytesIO(bomb), "init image")
    with pytest.raises(NewbieError, match="bytes; the limit"):
        open_upload(b"\0" * (33 * 1024 * 1024), "mask")
    assert confine_loras("", "/nowhere") == ""
    with pytest.raises(NewbieError, match="relative path inside adapters"):
        confine_loras("/etc/passwd:0.5", "/nowhere")
