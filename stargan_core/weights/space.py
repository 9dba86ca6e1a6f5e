"""Publishing the app as a Hugging Face Space, through ``huggingface_hub``'s own API.

A ``git push`` of this repository to a Space is refused: the Hub rejects plain-git files over 10 MiB, and the
shipped release's weights are larger. ``HfApi.upload_folder`` stores large files properly, and its
``allow_patterns`` send only what the Space runs (the app, the package, the shipped model, the README whose front
matter configures the Space), never tests, notebooks or caches. ``space_files`` lists exactly what would be sent,
with the very filter ``upload_folder`` applies, so it can be checked without the network.
"""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

ROOT = Path(__file__).resolve().parents[2]
SPACE_FILES = ["README.md", "app.py", "requirements.txt", "stargan_core/*", "demo/*", "checkpoints/*", "docs/app.png"]
NOT_IN_SPACE = ["*.pyc", "*/__pycache__/*", "*/.ipynb_checkpoints/*", *DEFAULT_IGNORE_PATTERNS]


def space_files(root: str | Path = ROOT) -> list[str]:
    """The repository files a Space needs, relative to ``root``, as ``upload_folder`` will select them."""
    root = Path(root)
    files = sorted(p.relative_to(root).as_posix() for p in root.glob("**/*") if p.is_file())
    return list(filter_repo_objects(files, allow_patterns=SPACE_FILES, ignore_patterns=NOT_IN_SPACE))


def publish_space(repo_id: str, root: str | Path = ROOT, private: bool = False, token: str | None = None) -> str:
    """Create the Space ``repo_id`` (Gradio SDK) if needed and upload the app into it in one commit; its URL."""
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=str(root), allow_patterns=SPACE_FILES,
                      ignore_patterns=list(NOT_IN_SPACE), commit_message="Upload StarGAN studio")
    return str(url)
