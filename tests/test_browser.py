"""A real browser: headless Chromium (Debian's package, driven by Playwright; never downloaded) uses the page.

It opens the app served with a tiny random-weight model, uploads a photo, changes the hair colour, waits for the
new result and saves a screenshot (to pytest's temporary folder, printed, never inside the repository).
"""
import shutil
import time
from pathlib import Path

import pytest

from conftest import ASTRONAUT, LocalApp, write_tiny_release

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # a test-pattern webcam

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def playwright():
    """One Playwright for the module: a second ``sync_playwright()`` in one thread fails ("inside the asyncio loop")."""
    if not Path(CHROMIUM).is_file():
        pytest.skip("Chromium not found at /usr/bin/chromium: install Debian's package (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
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
    page.get_by_role("radio", name="Blond").first.check()  # the photo's control (the mirror tab has its own)
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
    assert page.get_by_role("radio", name="Blond").first.is_checked()
    assert not errors, errors


def test_a_webcam_picture_reaches_the_app(browser, app):
    """Chromium's fake camera shows a test pattern, which has no face: the page says so in one sentence."""
    context = browser.new_context(permissions=["camera"])
    page = context.new_page()
    page.goto(app.url)
    page.locator("#photo button[aria-label='Capture from camera']").click()
    page.locator("#photo").get_by_text("Click to Access Webcam").click()  # the mirror tab has a webcam too
    page.wait_for_function("document.querySelector('#photo video')?.readyState >= 2", timeout=30_000)  # streaming
    page.locator("#photo button[aria-label='capture photo']").click()
    page.get_by_text("No face was found in this photo").wait_for(timeout=60_000)
    context.close()


def write_y4m(path: Path, photo: Path, frames: int = 10, size=(640, 480)) -> Path:
    """A short fake-webcam clip (Y4M, 4:2:0) of ``photo`` drifting a few pixels per frame: Chromium loops it."""
    import numpy as np
    from PIL import Image
    src = Image.open(photo).convert("RGB")
    canvas = Image.new("RGB", (size[0] + 40, size[1] + 40), (128, 128, 128))
    canvas.paste(src.resize((420, 420)), (130, 50))
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{size[0]} H{size[1]} F10:1 Ip A1:1 C420jpeg\n".encode())
        for k in range(frames):
            rgb = np.asarray(canvas.crop((2 * k, k, 2 * k + size[0], k + size[1])), np.float32)
            y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
            u = (rgb[..., 2] - y) * 0.564 + 128
            v = (rgb[..., 0] - y) * 0.713 + 128
            sub = [p.reshape(size[1] // 2, 2, size[0] // 2, 2).mean((1, 3)) for p in (u, v)]
            f.write(b"FRAME\n" + b"".join(np.clip(p, 0, 255).round().astype(np.uint8).tobytes() for p in (y, *sub)))
    return path


def test_the_mirror_edits_the_fake_webcam_and_the_learn_tab_trains(playwright, app, tmp_path):
    clip = write_y4m(tmp_path / "clip.y4m", ASTRONAUT)
    b = playwright.chromium.launch(  # its own Chromium: the fake camera plays the clip
        executable_path=CHROMIUM, args=[*ARGS, f"--use-file-for-fake-video-capture={clip}"])
    page = b.new_context(permissions=["camera"], viewport={"width": 1400, "height": 1400}).new_page()
    page.goto(app.url)
    page.get_by_role("tab", name="Webcam mirror").click()
    page.locator("#mirror-choice").get_by_role("radio", name="Blond").check()
    page.locator("#mirror-cam").get_by_text("Click to Access Webcam").click()
    page.wait_for_function("document.querySelector('#mirror-cam video')?.readyState >= 2", timeout=30_000)
    page.locator("#mirror-cam button[aria-label='capture photo']").click()  # with streaming=True: starts it
    page.wait_for_function("document.querySelector('#mirror-info')?.innerText.includes('frames per second')",
                           timeout=60_000)
    page.locator("#mirror-out img").wait_for(timeout=30_000)
    page.wait_for_timeout(3000)
    info = page.locator("#mirror-info").inner_text()
    page.screenshot(path=str(tmp_path / "mirror.png"), full_page=True)
    print(f"\nmirror: {info} (screenshot {tmp_path / 'mirror.png'})")
    assert "1 face(s)" in info and "640x480" in info

    page.get_by_role("tab", name="Watch it learn").click()
    page.locator("#learn-train").click()  # a short run: the steps slider's smallest value is too long for a test
    page.wait_for_function("document.querySelector('#learn-status')?.innerText.includes('step')", timeout=30_000)
    page.locator("#learn-figure img").wait_for(timeout=60_000)
    page.locator("#learn-curves canvas, #learn-curves svg").first.wait_for(timeout=60_000)
    page.locator("#learn-stop").click()
    page.wait_for_function("document.querySelector('#learn-status')?.innerText.includes('stopped')",
                           timeout=60_000)
    page.screenshot(path=str(tmp_path / "learn.png"), full_page=True)
    print(f"learn tab: {page.locator('#learn-status').inner_text()} (screenshot {tmp_path / 'learn.png'})")
    b.close()
