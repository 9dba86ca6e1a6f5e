"""A real browser: headless Chromium (Debian's package, driven by Playwright; never downloaded) uses the page.

It opens the app served with a tiny random-weight model, uploads a photo, changes the hair colour, waits for the
new result and saves a screenshot (to pytest's temporary folder, printed, never inside the repository).
"""
import shutil
import time
from pathlib import Path

import pytest
from test_app import ASTRONAUT, LocalApp, write_tiny_release

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # a test-pattern webcam

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip("Chromium not found at /usr/bin/chromium: install Debian's package (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app = LocalApp(write_tiny_release(tmp_path_factory.mktemp("release")))
    yield app
    app.close()


def test_upload_change_hair_colour_and_see_the_result(browser, app, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1700})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app.url)
    page.get_by_text("StarGAN studio").first.wait_for(timeout=60_000)

    page.locator("#photo input[type=file]").set_input_files(str(ASTRONAUT))
    page.wait_for_function("document.querySelector('#info').innerText.includes('Edited 1 face')",
                           timeout=60_000)
    first = page.locator("#result img").last.get_attribute("src")

    start = time.perf_counter()
    page.get_by_role("radio", name="Blond").check()
    page.wait_for_function("src => document.querySelector('#result img:last-of-type') &&"
                           " [...document.querySelectorAll('#result img')].at(-1).src !== src",
                           arg=first, timeout=60_000)
    seconds = time.perf_counter() - start

    page.get_by_text("All domains at once").click()  # the paper's figure, on request
    page.get_by_role("button", name="Show every domain").click()
    page.get_by_text("Classroom: how StarGAN works").click()  # opening it shows the cycle of the latest edit
    page.get_by_text("Reconstruction error").wait_for(timeout=60_000)
    page.locator("#all-domains img").wait_for(timeout=60_000)
    page.wait_for_timeout(500)  # let the images finish painting before the screenshot
    shot = tmp_path / "stargan-studio.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot: {shot} (hair colour change shown after {seconds:.2f} s)")

    result = page.locator("#result img").last
    assert result.is_visible()
    assert result.evaluate("img => img.complete && img.naturalWidth") == 512
    assert page.get_by_role("radio", name="Blond").is_checked()
    assert not errors, errors


def test_a_webcam_picture_reaches_the_app(browser, app):
    """Chromium's fake camera shows a test pattern, which has no face: the page says so in one sentence."""
    context = browser.new_context(permissions=["camera"])
    page = context.new_page()
    page.goto(app.url)
    page.locator("#photo button[aria-label='Capture from camera']").click()
    page.get_by_text("Click to Access Webcam").click()
    page.wait_for_function("document.querySelector('#photo video')?.readyState >= 2", timeout=30_000)  # streaming
    page.locator("#photo button[aria-label='capture photo']").click()
    page.get_by_text("No face was found in this photo").wait_for(timeout=60_000)
    context.close()
