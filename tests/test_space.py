"""Putting the app on a Space: exactly the files it runs, through huggingface_hub's create_repo + upload_folder."""
from pathlib import Path

import pytest
import yaml
from huggingface_hub import CommitOperationAdd, HfApi

from stargan_core.weights import space

ROOT = Path(__file__).resolve().parents[1]


def test_the_space_gets_the_app_the_package_and_the_shipped_model_and_nothing_else():
    files = space.space_files()
    for needed in ("README.md", "app.py", "requirements.txt", "demo/ui.py", "stargan_core/pipeline.py",
                   "stargan_core/edit/probe_faces.png", "demo/examples/astronaut.jpg", "docs/app.png",
                   "checkpoints/segmenter/selfie_segmentation.onnx", "checkpoints/segmenter/LICENSE"):
        assert needed in files, needed
    shipped = [f for f in files if f.startswith("checkpoints/")]
    assert any(f.endswith("/model.safetensors") for f in shipped) and any(f.endswith("/config.json") for f in shipped)
    assert not [f for f in files if f.startswith(("tests/", "notebooks/", ".ci/", ".git/")) or "__pycache__" in f]
    front = yaml.safe_load((ROOT / "README.md").read_text().split("---")[1])  # the Space's configuration
    assert front["sdk"] == "gradio" and front["app_file"] in files


def test_publish_creates_a_gradio_space_and_uploads_only_those_files(monkeypatch, tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("")
    (tmp_path / "stargan_core" / "__pycache__").mkdir(parents=True)
    (tmp_path / "stargan_core" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (tmp_path / "stargan_core" / "x.py").write_text("")
    (tmp_path / "checkpoints" / "m").mkdir(parents=True)
    (tmp_path / "checkpoints" / "m" / "model.safetensors").write_bytes(b"\0" * 1024)
    (tmp_path / "app.py").write_text("")
    (tmp_path / "README.md").write_text("---\nsdk: gradio\napp_file: app.py\n---\n# x\n")
    calls, sent = [], []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append((repo_id, kw)) or
                        f"https://huggingface.co/spaces/{repo_id}")

    real = HfApi._prepare_upload_folder_additions

    class Sent(Exception):
        pass

    def additions(self, *args, **kw):  # upload_folder's own selection of files; stop before anything is sent
        sent.extend(op.path_in_repo for op in real(self, *args, **kw) if isinstance(op, CommitOperationAdd))
        raise Sent
    monkeypatch.setattr(HfApi, "_prepare_upload_folder_additions", additions)
    monkeypatch.setattr(HfApi, "_validate_yaml", lambda self, **kw: None)  # the Hub checks the card; no network
    with pytest.raises(Sent):
        space.publish_space("me/studio", root=tmp_path)
    assert calls == [("me/studio", {"repo_type": "space", "space_sdk": "gradio", "private": False, "exist_ok": True})]
    assert sorted(sent) == sorted(space.space_files(tmp_path)) == [
        "README.md", "app.py", "checkpoints/m/model.safetensors", "stargan_core/x.py"]
