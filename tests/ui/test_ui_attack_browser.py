"""Issue 27 in a real headless Chromium: a gallery with its newest PNG deleted and one damaged recipe row still
shows the other images, says what is wrong with the broken ones and deletes them; a page started with an access
key shows nothing without it."""

import sqlite3
import subprocess
import sys

import pytest
from PIL import Image

from newbie.ui.gallery import Gallery
from tests.ui.test_ui_browser import CHROMIUM, _free_port, _wait_healthy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)"),
]
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-sync",
]


def _ui(tmp_path, data, *extra):
    port = _free_port()
    log = tmp_path / f"ui-{port}.log"
    with open(log, "w") as out:
        argv = [sys.executable, "-m", "newbie", "ui", "--port", str(port), "--data-dir", str(data), *extra]
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, proc, log, 60)
    return url, proc


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_broken_entries_and_the_access_key_in_chromium(tmp_path, recipe_factory):
    from playwright.sync_api import expect, sync_playwright

    data = tmp_path / "gallery"
    g = Gallery(data)
    add = lambda seed: g.add(  # noqa: E731
        Image.new("RGB", (64, 64), (40 * seed, 80, 120)),
        recipe_factory(prompt=f"1girl, number_{seed}", seed=seed),
        seconds=1.0,
        peak_gib=None,
        peak_kind="process RSS",
    )
    kept, damaged, gone = add(1), add(2), add(3)
    with sqlite3.connect(data / "gallery.sqlite3") as con:
        con.execute("UPDATE images SET recipe = '{' WHERE id = ?", (damaged.id,))
    gone.image_path.unlink()
    gone.thumb_path.unlink()
    url, proc = _ui(tmp_path, data)
    keyed_url, keyed = _ui(tmp_path, tmp_path / "other", "--access-key", "s3cret")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1400})
                page.goto(url)
                warning = page.get_by_text(f"Image #{gone.id} cannot be shown")
                warning.wait_for(timeout=120_000)
                expect(page.get_by_text("something went wrong")).to_have_count(0)
                expect(page.locator(".st-key-gallery [data-testid='stImage'] img")).to_have_count(
                    1, timeout=60_000
                )
                page.get_by_role("button", name="Delete", exact=True).click()
                page.get_by_role("button", name="Yes, delete").click()
                page.get_by_role("button", name=f"#{damaged.id}").click()
                page.get_by_text(f"Image #{damaged.id} cannot be shown: the recipe is unreadable").wait_for(
                    timeout=60_000
                )
                page.get_by_role("button", name="Delete", exact=True).click()
                page.get_by_role("button", name="Yes, delete").click()
                expect(page.get_by_text("Gallery · 1")).to_be_visible(timeout=60_000)
                assert page.locator("[data-testid='stException']").count() == 0

                page.goto(keyed_url)
                page.get_by_text("This page needs its access key").wait_for(timeout=120_000)
                expect(page.get_by_role("button", name="Generate")).to_have_count(0)
                page.goto(keyed_url + "/?key=s3cret")
                page.get_by_role("button", name="Generate").wait_for(timeout=120_000)
            finally:
                browser.close()
    finally:
        _stop(proc)
        _stop(keyed)
    assert [e.id for e in Gallery(data).list()] == [kept.id]
