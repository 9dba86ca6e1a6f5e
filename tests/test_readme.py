"""The README's Python examples run as written: the ten-line API example on a photo with the shipped model, offline,
and the program example against a running app (only the server's address is the test's own)."""
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import ASTRONAUT, ROOT, LocalApp, write_tiny_release

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def block(marker: str) -> str:
    found = [b for b in BLOCKS if marker in b]
    assert len(found) == 1, f"the README should hold one Python example with {marker!r}"
    return found[0]


@pytest.fixture
def photo_dir(tmp_path, monkeypatch):
    """A folder holding the README's photo.jpg (the astronaut), made the working directory."""
    shutil.copy(ASTRONAUT, tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_python_api_example_edits_a_photo_offline_with_the_shipped_model(photo_dir, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(photo_dir / "hf"))  # an empty Hub cache, offline: the shipped model
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("STARGAN_MODEL", raising=False)
    exec(block("StarGANPipeline.from_pretrained()"), {})
    photo, edited = (np.asarray(Image.open(photo_dir / n).convert("RGB"), np.float32) for n in ("photo.jpg",
                                                                                               "edited.jpg"))
    assert edited.shape == photo.shape and np.abs(edited - photo).mean() > 0.5  # the face was edited
    figure = Image.open(photo_dir / "all_domains.jpg")
    assert figure.width > figure.height  # the paper's figure: the face, then one column per domain
    printed = capsys.readouterr().out
    assert "shipped with the app" in printed and "Black_Hair" in printed  # the status, then face 0's attributes


def test_the_program_example_edits_a_photo_through_a_running_app(photo_dir):
    app = LocalApp(write_tiny_release(photo_dir / "release"))
    try:
        code = block("api_name=\"/edit\"").replace("http://127.0.0.1:7860/", app.url)
        scope: dict = {}
        exec(code, scope)
        assert Image.open(scope["after"]).size == Image.open(photo_dir / "photo.jpg").size
        assert scope["info"].startswith("Edited 1 face in ")
    finally:
        app.close()
