"""The app from the outside, as an adversary drives it: every bad upload and every bad API value, through
``gradio_client`` only, against the app served on a free local port (a tiny random-weight model, so the figures
are about the app, not the model).

Each bad input must come back either as a correct result (a PNG a browser shows, of the upright input's size) or
as one sentence a person understands (no exception names, no paths, no "None"), and a normal edit must succeed
right after it: nothing a visitor sends may break the server for the next one.
"""
import base64
import re
from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageOps

from conftest import ASTRONAUT, CAT, LocalApp, write_tiny_release

pytestmark = pytest.mark.slow  # ~60 calls of the app, each detecting faces with MTCNN on 2 busy cores

BROWSER_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}  # PNG modes every browser displays


def astronaut(mode: str = "RGB", size: tuple[int, int] | None = None) -> Image.Image:
    with Image.open(ASTRONAUT) as im:
        im = im.convert("RGB")
    return (im.resize(size) if size else im).convert(mode)


def _save(im: Image.Image, path: Path, **kw) -> Path:
    im.save(path, **kw)
    return path


def _gray16(p: Path) -> Path:
    a = np.asarray(astronaut("L"), np.uint16) * 257
    return _save(Image.fromarray(a), p / "gray16.png")


def _rgba(p: Path) -> Path:
    im = astronaut("RGBA")
    im.putalpha(Image.linear_gradient("L").resize(im.size))
    return _save(im, p / "rgba.png")


def _float_tiff(p: Path) -> Path:
    return _save(Image.fromarray(np.asarray(astronaut("L"), np.float32)), p / "float.tiff")


def _exif_rotated(p: Path) -> Path:
    im = astronaut(size=(512, 384)).transpose(Image.Transpose.ROTATE_90)  # stored 384x512, upright 512x384
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    return _save(im, p / "rotated.jpg", exif=exif)


def _animated_gif(p: Path) -> Path:
    frames = [astronaut(), ImageOps.mirror(astronaut())]
    return _save(frames[0], p / "animated.gif", save_all=True, append_images=frames[1:], duration=200, loop=0)


def _bytes(name: str, data: bytes):
    def make(p: Path) -> Path:
        (p / name).write_bytes(data)
        return p / name
    return make


JPEG = ASTRONAUT.read_bytes()
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><circle cx="32" cy="32" r="30"/></svg>'
NOT_AN_IMAGE = "not an image we can read"
UPLOADS = {  # name -> (make the file in a folder, a regex of the expected sentence, or None: a correct result)
    "0 bytes": (_bytes("empty.jpg", b""), NOT_AN_IMAGE),
    "text named .jpg": (_bytes("notes.jpg", b"my shopping list: eggs, milk"), NOT_AN_IMAGE),
    "SVG renamed .png": (_bytes("drawing.png", SVG), NOT_AN_IMAGE),
    "HTML renamed .png": (_bytes("page.png", b"<html><body><script>alert(1)</script></body></html>"), NOT_AN_IMAGE),
    "JPEG header + garbage": (_bytes("garbage.jpg", JPEG[:20] + np.random.default_rng(0).bytes(5000)),
                              "not an image we can read|damaged or incomplete"),
    "truncated JPEG": (_bytes("truncated.jpg", JPEG[:len(JPEG) // 2]), "damaged or incomplete"),
    "decompression bomb": (lambda p: _save(Image.new("1", (20000, 20000)), p / "bomb.png"), "too large"),
    "huge image": (lambda p: _save(Image.new("L", (7000, 6000), 128), p / "huge.jpg"), "too large"),
    "8x8": (lambda p: _save(astronaut(size=(8, 8)), p / "tiny.png"), "No face was found"),
    "no face": (_bytes(CAT.name, CAT.read_bytes()), "No face was found"),
    "CMYK JPEG": (lambda p: _save(astronaut("CMYK"), p / "cmyk.jpg"), None),
    "16-bit PNG": (_gray16, None),
    "RGBA PNG": (_rgba, None),
    "float TIFF": (_float_tiff, None),
    "EXIF-rotated JPEG": (_exif_rotated, None),
    "animated GIF": (_animated_gif, None),
}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    served = LocalApp(write_tiny_release(tmp_path_factory.mktemp("battery")))
    yield served
    served.close()


@pytest.fixture(scope="module")
def client(app, tmp_path_factory):
    return app.client(tmp_path_factory.mktemp("downloads"))


def assert_one_sentence(message: str) -> None:
    """What a visitor sees: one plain sentence, no exception names, no file paths, no 'None'."""
    assert message and message.strip() == message, repr(message)
    assert "None" not in message and "Traceback" not in message, message
    assert not re.search(r"\b\w*(Error|Exception)\b", message), message
    assert not re.search(r"[/\\]\w+[/\\]", message), message  # no path
    assert message[-1] in ".!?" and len(re.findall(r"[.!?](?:\s|$)", message)) == 1, message


def edit(client, photo, **values):
    """The named endpoint; returns the edited photo's path and the timing sentence."""
    (_, after), download, _, _, info = client.predict(photo=photo, api_name="/edit", **values)
    assert Path(download).read_bytes() == Path(after).read_bytes()
    return after, info


def assert_still_serves(client) -> None:
    after, info = edit(client, handle_file(str(ASTRONAUT)), hair="Blond")
    assert Image.open(after).size == (512, 512) and info.startswith("Edited 1 face")


def assert_refused(client, pattern: str, photo=None, **values) -> None:
    with pytest.raises(AppError) as err:
        edit(client, handle_file(str(ASTRONAUT)) if photo is None else photo, **values)
    assert_one_sentence(str(err.value))
    assert re.search(pattern, str(err.value)), err.value
    assert_still_serves(client)


@pytest.mark.parametrize("kind", UPLOADS)
def test_every_bad_upload_gets_a_sentence_or_a_correct_result(client, tmp_path, kind):
    make, expected = UPLOADS[kind]
    path = make(tmp_path)
    if expected is not None:
        assert_refused(client, expected, photo=handle_file(str(path)), whole_image=False)
        return
    after, info = edit(client, handle_file(str(path)), hair="Blond", whole_image=True)
    with Image.open(path) as original, Image.open(after) as result:
        assert result.format == "PNG" and result.mode in BROWSER_MODES, result.mode
        assert result.size == ImageOps.exif_transpose(original).size  # upright, the input's size
    assert info.startswith("Edited 1 face")
    assert_still_serves(client)


BAD_VALUES = [  # (parameter values, a regex of the expected sentence)
    (dict(hair="Purple"), r"Hair colour must be one of Keep, Black, Blond, Brown"),
    (dict(hair=5), r"Hair colour must be one of"),
    (dict(gender=["Male"]), r"Gender must be one of Keep, Male, Female"),
    (dict(age="Ancient"), r"Age must be one of Keep, Young, Old"),
    (dict(hair="Blond", hair_strength="abc"), r"strength must be a number from 0 to 1\.5"),
    (dict(hair="Blond", hair_strength=100), r"strength must be a number from 0 to 1\.5"),
    (dict(gender="Male", gender_strength=-5), r"strength must be a number from 0 to 1\.5"),
    (dict(age="Old", age_strength=[1]), r"strength must be a number from 0 to 1\.5"),
    (dict(faces=["Face 99"]), r"has 1 face"),
    (dict(faces="Face 1"), r"faces to edit must be a list of face names"),
    (dict(faces=[3]), r"faces to edit must be a list of face names"),
    (dict(whole_image="yes"), r"whole_image must be true or false"),
    (dict(whole_image=[1]), r"whole_image must be true or false"),
]


@pytest.mark.parametrize("values, pattern", BAD_VALUES, ids=[repr(v)[1:-1] for v, _ in BAD_VALUES])
def test_every_bad_parameter_value_gets_a_sentence(client, values, pattern):
    assert_refused(client, pattern, **values)


BAD_PHOTOS = {  # photo payloads a program (not the page) can send -> the expected sentence
    "a server path": ({"path": "/etc/hostname"}, r"not a file uploaded to this app"),
    "a server image": ({"path": str(ASTRONAUT)}, r"not a file uploaded to this app"),  # never read for a visitor
    "a URL without data": ({"path": None, "url": "https://example.com/photo.jpg"}, r"must be an uploaded image"),
    "bad base64 in a data URL": ({"path": None, "url": "data:image/jpeg;base64,@@not base64@@"},
                                 r"picture could not be read"),
}


@pytest.mark.parametrize("kind", BAD_PHOTOS)
def test_every_bad_photo_payload_gets_a_sentence(client, kind):
    photo, pattern = BAD_PHOTOS[kind]
    assert_refused(client, pattern, photo=photo)


@pytest.mark.parametrize("photo", [42, [1, 2], "/etc/hostname"], ids=["a number", "a list", "a path as text"])
def test_a_photo_that_is_not_even_a_file_object_is_refused_by_gradio(client, photo):
    """Gradio validates the payload's shape (an ImageData object) before any app code runs, and answers with its
    own generic text; what matters here is that nothing is read and the server keeps serving."""
    with pytest.raises(AppError):
        edit(client, photo)
    assert_still_serves(client)


def test_a_webcam_data_url_is_edited(client):
    url = "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()
    after, _ = edit(client, {"path": None, "url": url}, age="Old")
    assert Image.open(after).size == (512, 512)


def test_a_valid_face_pick_edits_that_face(client):
    after, info = edit(client, handle_file(str(ASTRONAUT)), faces=["Face 1"], hair="Brown")
    assert info.startswith("Edited 1 face")


def test_sixteen_concurrent_edits_all_succeed(client):
    settings = [dict(hair=h, age=a, hair_strength=s) for h in ("Black", "Blond", "Brown", "Keep")
                for a in ("Young", "Old") for s in (0.5, 1.0)]
    jobs = [client.submit(photo=handle_file(str(ASTRONAUT)), api_name="/edit", **s) for s in settings]
    results = [job.result(timeout=300) for job in jobs]  # raises if any of them failed
    assert len(results) == 16 and all(Image.open(r[0][1]).size == (512, 512) for r in results)


def test_the_cache_stays_bounded_over_200_edits_of_50_photos(tmp_path, monkeypatch):
    """Gradio's delete_cache (here every 1 s, files older than 2 s; the app's default is every 15 min, older than
    2 h) keeps the upload/result cache to what the last few seconds made, however many photos come."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))  # this app's own cache, measured alone
    app = LocalApp(write_tiny_release(tmp_path / "model"), cache_expiry=(1, 2))
    photos = []
    for i in range(50):  # 50 different photos: 192 px crops of the astronaut at different places
        photos.append(_save(astronaut().crop((i * 6, i * 4, i * 6 + 192, i * 4 + 192)), tmp_path / f"p{i}.png"))
    try:
        client, written, sizes = app.client(tmp_path / "downloads"), 0, []
        for k in range(200):
            after, _ = edit(client, handle_file(str(photos[k % 50])), hair=("Black", "Blond")[k // 50 % 2],
                            age=("Young", "Old")[k // 100], whole_image=True)
            written += Path(after).stat().st_size
            sizes.append(cache_bytes(tmp_path / "cache"))
    finally:
        app.close()
    assert written > 10e6  # the results alone: what the cache would hold without expiry (plus uploads, crops)
    assert max(sizes) < 4e6, max(sizes)  # the bound: ~3 s of edits, whatever the number of photos


def cache_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
