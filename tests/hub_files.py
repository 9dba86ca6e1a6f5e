"""The Hub's cache layout and tiny model files in every format load_model reads, for test_hub.py and
test_hub_online.py (the HF_HOME they use is conftest's ``hf_home``)."""
import hashlib
import os
from pathlib import Path

import torch

from conftest import TINY
from official_layout import lornatang_layout, official_d_state_dict, official_g_state_dict
from stargan_core.nets.model import build_discriminator, build_generator
from stargan_core.weights.formats import save_release

REPO = "owner/stargan-tiny"
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40
X = torch.rand(1, 3, 32, 32) * 2 - 1
C = torch.tensor([[0.0, 1, 0, 1, 0]])


def fill_cache(hf_home: Path, repo_id: str, files: dict[str, Path], commit: str = COMMIT_A,
               ref: str | None = "main") -> Path:
    """Put ``files`` into the Hub cache the way huggingface_hub lays it out; returns the snapshot folder."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for name, src in files.items():
        data = src.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def official_files(folder: Path, seed: int = 0) -> tuple[Path, Path, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    g_sd = official_g_state_dict(conv_dim=8, c_dim=5, repeat_num=1, seed=seed)
    torch.save(g_sd, folder / "200000-G.ckpt")
    torch.save(official_d_state_dict(image_size=32, conv_dim=8, c_dim=5, repeat_num=5), folder / "200000-D.ckpt")
    return folder / "200000-G.ckpt", folder / "200000-D.ckpt", g_sd


def lornatang_files(folder: Path) -> tuple[Path, Path, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    g_sd = official_g_state_dict(conv_dim=8, c_dim=5, repeat_num=1)
    d_sd = official_d_state_dict(image_size=32, conv_dim=8, c_dim=5, repeat_num=5)
    torch.save(lornatang_layout(g_sd), folder / "g_celeba-128x128.pth.tar")
    torch.save({"state_dict": {f"_orig_mod.layer{i}": v for i, v in enumerate(d_sd.values())}},
               folder / "d_celeba-128x128.pth.tar")
    return folder / "g_celeba-128x128.pth.tar", folder / "d_celeba-128x128.pth.tar", g_sd


def release(folder: Path, with_d: bool = True, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_release(build_generator(TINY), TINY, folder, dtype=torch.float32,
                        D=build_discriminator(TINY) if with_d else None)


def g_output(loaded) -> torch.Tensor:
    with torch.no_grad():
        return loaded.G(X, C)
