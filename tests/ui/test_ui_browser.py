"""End to end in a real headless Chromium: `newbie ui` with the demo model, Prompt -> Generate -> the image in
the gallery, still there after a reload. Set NEWBIE_UI_SCREENSHOT=docs/ui-screenshot.png to refresh the
README's screenshot; otherwise it goes to the test's temporary folder."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
PROMPT = (
    "<character_1> <n>$character_1$</n> <gender>1girl</gender> <appearance>red_hair, blue_eyes</appearance>\n"
    "<clothing>yellow_shirt</clothing> <position>left</position> </character_1>\n"
    "<character_2> <n>$character_2$</n> <gender>1boy</gender>\n"
    "<appearance>blue_hair, green_eyes</appearance>\n"
    "<clothing>white_shirt</clothing> <position>right</position> </character_2>\n"
    "<general_tags> <count>1girl, 1boy</count> <background>green_background</background> </general_tags>"
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium "
        "(apt-get install -y chromium; .ci/run installs it)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"newbie ui exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("newbie ui did not answer in time")


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    data, log = tmp_path / "gallery", tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "newbie", "ui", "--port", str(port), "--data-dir", str(data)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log, 60)
        yield url, data
    finally:
        proc.terminate()  # `newbie ui` exec'd Streamlit, so this reaches the server itself
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_generate_in_chromium_and_find_it_after_reload(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, data = server
    shot = Path(os.environ.get("NEWBIE_UI_SCREENSHOT") or tmp_path / "ui.png")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1400})
            page.goto(url)
            prompt = page.get_by_label("Prompt", exact=True)
            prompt.wait_for(timeout=120_000)  # the first run loads the model
            prompt.fill(PROMPT)
            page.get_by_role("button", name="Generate").click()
            gallery_images = page.locator(".st-key-gallery [data-testid='stImage'] img")
            expect(gallery_images).to_have_count(1, timeout=300_000)
            expect(page.locator(".st-key-hero [data-testid='stImage'] img")).to_have_count(1)
            expect(page.get_by_text("done in")).to_be_visible()
            assert page.locator("[data-testid='stException']").count() == 0
            page.wait_for_timeout(1500)  # let the images finish painting
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))

            page.reload()  # a new session: only the gallery on disk can bring the image back
            expect(gallery_images).to_have_count(1, timeout=120_000)
            expect(page.get_by_text("Gallery · 1")).to_be_visible()
            expect(page.locator(".st-key-hero [data-testid='stImage'] img")).to_have_count(1)
        finally:
            browser.close()
    assert len(list((data / "images").glob("*.png"))) == 1
    assert shot.stat().st_size > 10_000
