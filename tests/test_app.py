"""The Gradio app, driven as a program would drive it: launched on a free local port, called with gradio_client.

The model is a tiny random-weight release written to a temporary folder (G and D with 8 channels): its edits are
noise, but they go through the real path (upload -> faces.load_image -> detection -> pipeline -> paste-back ->
PNG), which is what these tests check. Photos from ../shared/data are used where the test needs real faces.
"""
import base64
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageOps

from conftest import ASTRONAUT, CAT, ROOT, LocalApp, free_port, write_tiny_release
from demo import cycle, files, handlers
from demo.ui import build_demo
from stargan_core.domains import JOINT, RAFD_EXPRESSIONS


def component_text(config: dict, elem_id: str) -> str | None:
    """The value of the visible component with ``elem_id`` in the page's config (None when there is none)."""
    for c in config["components"]:
        if c.get("props", {}).get("elem_id") == elem_id and c["props"].get("visible", True) is not False:
            return str(c["props"].get("value"))
    return None


def edit(client: Client, photo: Path, **choices):
    """One call of the named endpoint; returns (before path, after path, download path, crops, label, info)."""
    (before, after), download, crops, label, info = client.predict(photo=handle_file(str(photo)), api_name="/edit",
                                                                   **choices)
    return before, after, download, crops, label, info


# ----- fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def celeba_app(tmp_path_factory):
    app = LocalApp(write_tiny_release(tmp_path_factory.mktemp("celeba5")))
    yield app
    app.close()


@pytest.fixture(scope="module")
def joint_app(tmp_path_factory):
    app = LocalApp(write_tiny_release(tmp_path_factory.mktemp("joint"), JOINT))
    yield app
    app.close()


@pytest.fixture
def client(celeba_app, tmp_path):
    return celeba_app.client(tmp_path)


def upright(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im))


def crop_footprint(face, size: tuple[int, int], margin: int = 2) -> tuple[slice, slice]:
    """Photo rows/cols the aligned crop of ``face`` covers: its corners mapped back through the inverse of
    ``face.matrix`` (photo px -> crop px), computed here independently of faces.py's paste-back."""
    a, b = face.matrix[:, :2], face.matrix[:, 2]
    s = face.crop_size
    corners = (np.array([[0, 0], [s, 0], [0, s], [s, s]]) - b) @ np.linalg.inv(a).T  # (4, 2) photo px
    (x0, y0), (x1, y1) = np.floor(corners.min(0)) - margin, np.ceil(corners.max(0)) + margin
    return slice(max(int(y0), 0), min(int(y1), size[1])), slice(max(int(x0), 0), min(int(x1), size[0]))


# ----- tests --------------------------------------------------------------------------------------------------
def test_edit_endpoint_returns_the_edited_photo_and_everything_the_page_shows(client):
    before, after, download, crops, label, info = edit(client, ASTRONAUT, hair="Blond", age="Old")
    original, edited = upright(ASTRONAUT), np.asarray(Image.open(after))
    assert edited.shape == original.shape  # same size and mode
    assert Path(download).read_bytes() == Path(after).read_bytes()  # the download is the shown result
    assert np.asarray(Image.open(before)).shape == original.shape
    assert not np.array_equal(edited, original)  # random weights: the face visibly changed
    assert [c["caption"] for c in crops] == ["Face 1 before", "Face 1 after"]
    assert {c["label"] for c in label["confidences"]} == {"Black hair", "Blond hair", "Brown hair", "Male", "Young"}
    assert all(0 <= c["confidence"] <= 1 for c in label["confidences"])
    assert info.startswith("Edited 1 face in")


@pytest.mark.data
@pytest.mark.slow
def test_every_shared_photo_keeps_its_size_and_changes_only_around_faces(celeba_app, photos_dir, tmp_path):
    client = celeba_app.client(tmp_path)
    photos = sorted(p for p in photos_dir.iterdir() if p.suffix in (".jpg", ".png") and "no-faces" not in p.name)
    assert len(photos) >= 9
    for photo in photos:
        _, after, *_ = edit(client, photo, hair="Blond", gender="Female")
        original, edited = upright(photo), np.asarray(Image.open(after))
        assert edited.shape == original.shape, photo.name
        faces = celeba_app.pipeline.detect(Image.fromarray(original).convert("RGB"))
        assert faces, photo.name
        outside = np.ones(original.shape[:2], bool)
        for face in faces:
            outside[crop_footprint(face, (original.shape[1], original.shape[0]))] = False
        assert np.array_equal(edited[outside], original[outside]), f"{photo.name}: pixels away from faces changed"
        assert not np.array_equal(edited, original), f"{photo.name}: nothing was edited"


@pytest.mark.data
def test_a_photo_without_faces_gets_one_clear_sentence(client, photos_dir):
    for photo in (photos_dir / "mtcnn_no-faces.jpg", CAT):
        with pytest.raises(AppError, match="No face was found") as err:
            edit(client, photo, hair="Black")
        assert str(err.value).count(".") == 1, err.value  # one sentence
    _, after, *_ = edit(client, CAT, hair="Black", whole_image=True)  # what the sentence suggests works
    assert Image.open(after).size == Image.open(CAT).size


@pytest.mark.data
def test_the_face_picker_edits_only_the_ticked_faces(celeba_app, photos_dir, tmp_path):
    photo = photos_dir / "fr_two_people.jpg"
    faces = celeba_app.pipeline.detect(Image.open(photo))
    assert len(faces) == 2
    original = upright(photo)
    _, after, _, crops, *_ = edit(celeba_app.client(tmp_path), photo, faces=["Face 2"], hair="Blond")
    edited = np.asarray(Image.open(after))
    assert [c["caption"] for c in crops] == ["Face 2 before", "Face 2 after"]
    first, second = (crop_footprint(f, (original.shape[1], original.shape[0]), margin=0) for f in faces)
    outside = np.ones(original.shape[:2], bool)
    outside[second] = False
    assert np.array_equal(edited[outside], original[outside])  # face 1 (and everything else) untouched
    assert not np.array_equal(edited[second], original[second])


def test_eight_concurrent_requests_all_succeed(celeba_app, tmp_path):
    client = celeba_app.client(tmp_path)
    settings = [dict(hair=h, age=a) for h in ("Black", "Blond", "Brown", "Keep") for a in ("Young", "Old")]
    start = time.perf_counter()
    jobs = [client.submit(photo=handle_file(str(ASTRONAUT)), api_name="/edit", **s) for s in settings]
    results = [job.result(timeout=120) for job in jobs]  # raises if any of them failed
    elapsed = time.perf_counter() - start
    assert all(Image.open(r[0][1]).size == (512, 512) for r in results)
    print(f"\n8 concurrent edits of a 512x512 photo: {elapsed:.2f} s in all")


def test_bad_uploads_get_a_sentence_and_the_server_keeps_serving(client, tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not a picture")
    with pytest.raises(AppError, match="not an image"):
        edit(client, not_image)
    huge = tmp_path / "huge.png"
    Image.new("1", (8000, 6000)).save(huge)  # 48 megapixels in a 6 kB file: over the 36 MP limit
    with pytest.raises(AppError, match="too large"):
        edit(client, huge)
    _, after, *_ = edit(client, ASTRONAUT, hair="Brown")
    assert Image.open(after).size == (512, 512)


def test_joint_model_shows_expressions_and_they_reach_the_generator(joint_app, tmp_path):
    params = {p["parameter_name"]: p for p in joint_app.client(tmp_path).view_api(print_info=False,
                                                                                 return_format="dict")
              ["named_endpoints"]["/edit"]["parameters"]}
    assert {"expression", "expression_strength"} <= set(params)
    assert component_text(joint_app.config(), "no-expressions") is None
    seen = []
    run = joint_app.pipeline.generate  # the generator on the path chosen at load (maybe not torch's G)
    joint_app.pipeline.generate = lambda x, c: seen.append(c.clone()) or run(x, c)
    try:
        client = joint_app.client(tmp_path)
        for expression in ("Happy", "Sad"):
            seen.clear()
            edit(client, ASTRONAUT, expression=expression, expression_strength=1.0)
            c = seen[-1][0]  # (c_dim,) = [celeba 5 | rafd 8 | mask 2]
            want = torch.zeros(8)
            want[RAFD_EXPRESSIONS.index(expression.lower())] = 1
            assert torch.allclose(c[5:13].float(), want), f"{expression}: the generator got {c.tolist()}"
            assert c[13:].tolist() == [0, 1]  # the mask says: RaFD labels
    finally:
        joint_app.pipeline.generate = run


def test_celeba_model_says_in_one_sentence_why_there_are_no_expressions(celeba_app, tmp_path):
    text = component_text(celeba_app.config(), "no-expressions")
    assert text and "not trained with facial expressions" in text and "README" in text
    params = celeba_app.client(tmp_path).view_api(print_info=False, return_format="dict")["named_endpoints"]["/edit"]
    assert "expression" not in {p["parameter_name"] for p in params["parameters"]}


def test_a_model_without_discriminator_asks_what_each_face_is_now(tmp_path):
    app = LocalApp(write_tiny_release(tmp_path / "no-d", with_d=False))
    try:
        params = app.client(tmp_path).view_api(print_info=False, return_format="dict")["named_endpoints"]["/edit"]
        names = {p["parameter_name"] for p in params["parameters"]}
        assert {"now_hair", "now_gender", "now_age"} <= names
        seen = []
        run = app.pipeline.generate  # the generator on the path chosen at load (maybe not torch's G)
        app.pipeline.generate = lambda x, c: seen.append(c.clone()) or run(x, c)
        try:
            edit(app.client(tmp_path), ASTRONAUT, hair="Blond", now_hair="Black", now_gender="Male")
        finally:
            app.pipeline.generate = run
        c_trg, c_org = seen[-1]  # detail mode, a new c_org: one batch of [c_trg; c_org] (hair 3 | Male | Young)
        assert c_org[:4].tolist() == [1, 0, 0, 1] and c_trg[:4].tolist() == [0, 1, 0, 1]
        assert c_org[4] == c_trg[4] == 0.5  # age: nobody said, so neither young nor old
    finally:
        app.close()


def test_classroom_cycle_and_all_domains_figure(celeba_app):
    pipeline = celeba_app.pipeline
    session = handlers.open_photo(pipeline, str(ASTRONAUT))
    handlers.edit(pipeline, session, None, {"hair": "Blond"})
    x_real, x_fake, x_rec, text = cycle.cycle(pipeline, session)
    size = pipeline.config.image_size
    assert x_real.size == x_fake.size == x_rec.size == (size, size)
    err = np.abs(np.asarray(x_real, float) - np.asarray(x_rec, float)).mean()
    shown = float(re.search(r"\*\*([\d.]+) / 255\*\*", text).group(1))
    assert shown == pytest.approx(err, abs=0.5)  # the images' mean absolute difference (up to uint8 rounding)
    grid = Image.open(handlers.all_domains(pipeline, session))
    assert grid.width == size * (1 + 3 + 2)  # input + Black/Blond/Brown + gender + age columns
    with pytest.raises(gr.Error, match="Upload a photo"):
        handlers.all_domains(pipeline, None)


def test_an_upload_given_as_a_data_url_is_decoded_by_load_image():
    data = base64.b64encode(ASTRONAUT.read_bytes()).decode()
    path = files.upload_path({"path": None, "url": f"data:image/jpeg;base64,{data}"})
    assert Path(path).read_bytes() == ASTRONAUT.read_bytes()
    assert files.upload_path({"path": path, "url": None}) == path  # an upload: Gradio's cache folder
    with pytest.raises(gr.Error, match="not a file uploaded to this app"):
        files.upload_path({"path": str(ASTRONAUT), "url": None})  # a server file is never read for a visitor


@pytest.mark.slow
def test_app_py_starts_with_the_model_in_stargan_model_and_serves_edits(tmp_path):
    release = write_tiny_release(tmp_path / "release")
    port = free_port()
    env = {**os.environ, "STARGAN_MODEL": str(release), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):  # importing torch and gradio on 2 busy cores can take a while
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stdout.read()
            time.sleep(0.5)
        status = component_text(httpx.get(url + "config", timeout=30).json(), "status")
        assert status and str(release) in status
        _, after, *_ = edit(Client(url, verbose=False, download_files=str(tmp_path)), ASTRONAUT, gender="Male")
        assert Image.open(after).size == (512, 512)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_without_any_model_the_page_opens_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("STARGAN_MODEL", str(tmp_path / "no-such-model"))  # not a file, not a folder, not a repo id
    sys.path.insert(0, str(ROOT))
    try:
        import app
    finally:
        sys.path.remove(str(ROOT))
    pipeline, status, shelf = app.load_pipeline()
    assert pipeline is None and shelf is None and status
    demo = build_demo(None, status)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        assert component_text(httpx.get(demo.local_url + "config", timeout=30).json(), "status").endswith(status)
        with pytest.raises(AppError, match="No model is loaded"):
            edit(Client(demo.local_url, verbose=False, download_files=str(tmp_path)), ASTRONAUT)
    finally:
        demo.close()


def test_the_model_picker_switches_models_and_refuses_an_unreachable_hub_model_in_a_sentence(tmp_path, monkeypatch):
    from demo.models import OFFLINE, ModelOption, ModelShelf
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hub cache, offline: the Hub model cannot come
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    joint, celeba = write_tiny_release(tmp_path / "joint", JOINT), write_tiny_release(tmp_path / "celeba")
    shelf = ModelShelf([ModelOption("Joint", str(joint), "with expressions"),
                        ModelOption("CelebA", str(celeba), "without"),
                        ModelOption("Hub", "owner/none:g_celeba-128x128.pth.tar", "from the Hub", hub=True)])
    assert shelf.unavailable("Hub") == f"Hub: {OFFLINE}." and shelf.unavailable("Joint") is None
    assert "Not available now" in shelf.describe().splitlines()[2] and "Not available" not in shelf.describe()[:80]
    pipeline, status = shelf.get("Joint")
    demo = build_demo(pipeline, status, shelf=shelf)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False, download_files=str(tmp_path))
        params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/edit"]["parameters"]
        assert {p["parameter_name"] for p in params} >= {"model", "expression", "hair"}
        _, joint_after, *_ = edit(client, ASTRONAUT, expression="Happy", model="Joint")
        _, celeba_after, *_ = edit(client, ASTRONAUT, hair="Blond", model="CelebA")  # loaded on first use
        assert not np.array_equal(upright(joint_after), upright(ASTRONAUT))
        assert not np.array_equal(upright(celeba_after), upright(joint_after))
        assert shelf.loaded == ["Joint", "CelebA"]
        with pytest.raises(AppError, match="This model has no expression control"):
            edit(client, ASTRONAUT, expression="Happy", model="CelebA")
        with pytest.raises(AppError, match="needs the internet once"):
            edit(client, ASTRONAUT, hair="Blond", model="Hub")
        with pytest.raises(AppError, match="There is no model called 'Nope'"):
            edit(client, ASTRONAUT, hair="Blond", model="Nope")
    finally:
        demo.close()
    # the page's own switch: the controls a model lacks are hidden and reset; a refused model puts the picker back
    controls = [(g, object(), object()) for g in JOINT.groups]
    label, chosen, status_md, note, verdict, *shown = handlers.switch_model(shelf, controls, "CelebA", "Joint")
    assert label == chosen == "CelebA" and "celeba" in status_md and note["visible"] is True
    expression = [g.name for g in JOINT.groups].index("expression")
    assert shown[2 * expression] == {"__type__": "update", "visible": False, "value": "Keep"}
    assert all(u["visible"] for i, u in enumerate(shown) if i // 2 != expression)
    label, chosen, *_ = handlers.switch_model(shelf, controls, "Hub", "CelebA")
    assert label == chosen == "CelebA"


def test_app_offers_the_servers_model_first_then_the_hub_and_shipped_ones(monkeypatch, tmp_path):
    release = write_tiny_release(tmp_path / "mine")
    monkeypatch.setenv("STARGAN_MODEL", str(release))
    sys.path.insert(0, str(ROOT))
    try:
        import app
    finally:
        sys.path.remove(str(ROOT))
    pipeline, status, shelf = app.load_pipeline()
    labels = list(shelf.options)
    assert shelf.default == labels[0] == f"STARGAN_MODEL ({release})" and shelf.loaded == [labels[0]]
    assert labels[1].endswith("128 px (Hub)") and labels[-1].endswith("256 px (Hub)")
    assert any(label.startswith("Shipped with the app") for label in labels[2:-1])
    assert shelf.get(labels[0])[0] is pipeline and str(release) in status
