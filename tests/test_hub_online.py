"""load_model against a Hub that answers: a local HTTP server speaking the Hub's resolve endpoint and error headers.
Hub errors become messages a person can act on, a download fills the cache for the next start, the default model is
found under either of its names, HF_TOKEN is sent, and a Hub that cannot be reached falls back to the shipped release.
Nothing reaches the network.
"""
import hashlib
import http.server
import json
import threading

import pytest
import torch
from huggingface_hub import constants

from hub_files import COMMIT_A, REPO, C, X, fill_cache, g_output, lornatang_files, official_files, release
from official_layout import reference_generator
from stargan_core.weights import hub

pytestmark = pytest.mark.usefixtures("hf_home")  # a fresh, empty, offline HF_HOME for every test


class _FakeHub(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (URL path -> bytes) as the Hub's resolve endpoint does; anything else gets ``reply``."""

    files: dict = {}
    reply: tuple[int, dict] = (404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT_A})
    auth: list = []  # the Authorization header of every request

    def _answer(self, body: bool) -> None:
        self.auth.append(self.headers.get("Authorization"))
        data = self.files.get(self.path.split("?")[0])  # the file listing comes with ?recursive=...
        if data is None:
            (status, headers), data = self.reply, b""
        else:
            status, headers = 200, {"X-Repo-Commit": COMMIT_A, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):  # noqa: N802 - http.server's naming
        self._answer(body=False)

    def do_GET(self):  # noqa: N802
        self._answer(body=True)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setattr(_FakeHub, "auth", [])
    monkeypatch.setattr(_FakeHub, "files", {})
    monkeypatch.setattr(_FakeHub, "reply", _FakeHub.reply)  # tests change it; each starts from the default
    yield _FakeHub
    server.shutdown()


@pytest.mark.parametrize("status, code, message", [
    (404, "RepoNotFound", "no Hub model owner/stargan-tiny (or it is private: set HF_TOKEN"),
    (403, "GatedRepo", "is gated: accept its conditions at https://huggingface.co/owner/stargan-tiny and set HF_TOKEN"),
    (404, "RevisionNotFound", "has no revision 'v9'; see the branches and tags"),
    (404, "EntryNotFound", "has no file 'g.pth'; see its files at https://huggingface.co/owner/stargan-tiny/tree/v9"),
])
def test_hub_errors_become_messages_a_person_can_act_on(fake_hub, tmp_path, status, code, message):
    release(tmp_path / "checkpoints" / "shipped")  # a wrong name is a mistake to report, not to paper over
    fake_hub.reply = (status, {"X-Error-Code": code, "X-Error-Message": code})
    with pytest.raises(hub.HubError, match=message.replace("(", r"\(").replace("?", r"\?")):
        hub.load_model(f"{REPO}:g.pth", revision="v9")


@pytest.mark.parametrize("fmt", ["official", "release without D"])
def test_a_download_fills_the_cache_and_the_next_load_makes_no_request(fake_hub, tmp_path, fmt):
    if fmt == "official":
        g, d, sd = official_files(tmp_path / "w")
        files, source = [g, d], f"{REPO}:{g.name}"
    else:
        rel, sd = release(tmp_path / "rel", with_d=False), None
        files, source = [rel / "config.json", rel / "model.safetensors"], REPO
    fake_hub.files = {f"/{REPO}/resolve/main/{p.name}": p.read_bytes() for p in files}
    loaded = hub.load_model(source)
    assert loaded.status.startswith(f"Loaded {REPO}:") and "@ aaaaaaa from the Hugging Face Hub, with" in loaded.status
    assert (loaded.D is not None) == (fmt == "official")  # the release has no discriminator.safetensors: fine
    if sd is not None:
        assert torch.allclose(g_output(loaded), reference_generator(sd, X, C, 1), atol=1e-5)
    asked = len(fake_hub.auth)
    again = hub.load_model(source)
    assert "from the Hub cache" in again.status and len(fake_hub.auth) == asked  # no request the second time
    assert torch.equal(g_output(again), g_output(loaded))


DEFAULT_REPO, DEFAULT_FILE = hub.DEFAULT_MODEL.split(":")


@pytest.mark.parametrize("name", [DEFAULT_FILE, "g_128x128-celeba.pth.tar"])  # the script's name, the README's
def test_the_default_model_is_found_under_either_of_its_names(fake_hub, tmp_path, name):
    g, d, sd = lornatang_files(tmp_path / "w")
    listing = [{"type": "file", "path": n, "size": 1, "oid": "0" * 40} for n in ("README.md", "d_" + name[2:], name)]
    fake_hub.files = {f"/{DEFAULT_REPO}/resolve/main/{name}": g.read_bytes(),
                      f"/{DEFAULT_REPO}/resolve/main/d_{name[2:]}": d.read_bytes(),
                      f"/api/models/{DEFAULT_REPO}/tree/main": json.dumps(listing).encode()}
    loaded = hub.load_model()
    assert not loaded.fallback and loaded.D is not None and loaded.source == f"{DEFAULT_REPO}:{name} @ aaaaaaa"
    assert torch.allclose(g_output(loaded), reference_generator(sd, X, C, 1), atol=1e-5)
    said = f"(the default file {DEFAULT_FILE} is not in the repo, so its 128 px CelebA generator was found by name)"
    assert (said in loaded.status) == (name != DEFAULT_FILE), loaded.status
    assert loaded.status.startswith(f"Loaded {DEFAULT_REPO}:{name} @ aaaaaaa from the Hugging Face Hub")
    assert loaded.status.count(". ") == 0 and loaded.status.endswith("attributes.")
    offline = hub.load_model()  # the next start, from the cache, finds it again by name without asking the Hub
    assert offline.source == loaded.source and "from the Hub cache" in offline.status


def test_the_default_found_by_name_in_the_cache_when_offline(hf_home, tmp_path):
    g, d, sd = lornatang_files(tmp_path / "w")
    fill_cache(hf_home, DEFAULT_REPO, {"g_128x128-celeba.pth.tar": g, "d_128x128-celeba.pth.tar": d})
    loaded = hub.load_model()
    assert not loaded.fallback and loaded.source == f"{DEFAULT_REPO}:g_128x128-celeba.pth.tar @ aaaaaaa"
    assert "found by name" in loaded.status and loaded.D is not None


def test_a_default_repo_without_any_celeba_generator_says_so(fake_hub, tmp_path):
    release(tmp_path / "checkpoints" / "shipped")  # a Hub that answers "no such file" is reported, not papered over
    fake_hub.files = {f"/api/models/{DEFAULT_REPO}/tree/main": json.dumps(
        [{"type": "file", "path": "g_rafd-128x128.pth.tar", "size": 1, "oid": "0" * 40}]).encode()}
    with pytest.raises(hub.HubError, match=f"has no file '{DEFAULT_FILE}'"):
        hub.load_model(hub.DEFAULT_MODEL)


def test_hf_token_is_sent_to_the_hub(fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    fake_hub.reply = (404, {"X-Error-Code": "RepoNotFound"})
    with pytest.raises(hub.HubError):
        hub.load_model(f"{REPO}:g.pth")
    assert fake_hub.auth == ["Bearer hf_test_token"]


def test_no_connection_falls_back_to_the_shipped_release(fake_hub, tmp_path, monkeypatch):
    release(tmp_path / "checkpoints" / "celeba-64")
    url = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once
    waits = []
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", waits.append)  # skip the 1+2+4+8 s back-off
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    loaded = hub.load_model(f"{REPO}:g.pth")
    assert loaded.fallback and "could not be fetched because the Hugging Face Hub could not be reached" in \
        loaded.status
    assert waits  # huggingface_hub really tried, and retried, before we fell back
