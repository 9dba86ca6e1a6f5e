"""Shared fixtures and helpers: the real data beside the checkout (skipped with a reason when absent), fixed seeds,
torch's thread count kept, an empty offline HF_HOME, tiny random-weight models, images, data folders and training
runs, and the app served in-process. Test modules import the helpers with ``from conftest import ...``; the heavy
imports (the detector, Gradio, huggingface_hub) happen only when a helper is used.
"""
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stargan_core.classroom.shapes import ShapeWorld
from stargan_core.config import ModelConfig, TrainConfig
from stargan_core.domains import CELEBA5
from stargan_core.nets.model import build_discriminator, build_generator
from stargan_core.weights.formats import CKPT_NAME, save_release

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("STARGAN_SHARED_DATA", ROOT / "../shared/data"))
ASTRONAUT = ROOT / "demo" / "examples" / "astronaut.jpg"  # public domain, shipped with the demo
CAT = ROOT / "demo" / "examples" / "chelsea.jpg"  # CC0, no human face
TINY = ModelConfig(image_size=32, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=5)  # 32 px, 8 channels


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_threads():
    """Each test leaves torch's thread count as it found it (train(num_threads=1) sets it for the process)."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or $STARGAN_SHARED_DATA); tests that need it skip on a user's fresh clone."""
    if not (SHARED_DATA / "celeba_subset").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set STARGAN_SHARED_DATA)")
    return SHARED_DATA.resolve()


@pytest.fixture(scope="session")
def photos_dir(shared_data: Path) -> Path:
    return shared_data / "photos"


@pytest.fixture(scope="session")
def celeba_dir(shared_data: Path) -> Path:
    return shared_data / "celeba_subset"


@pytest.fixture(scope="session")
def detector():
    """One MTCNN for the whole session (creating it is what is slow)."""
    from stargan_core.edit.faces import FaceDetector
    return FaceDetector()


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """A fresh, empty HF_HOME, offline, no STARGAN_MODEL, and no shipped release unless a test adds one (the hub
    tests ask for it for every test)."""
    from stargan_core.weights import hub
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("STARGAN_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "SHIPPED_DIR", tmp_path / "checkpoints")
    return tmp_path / "hf"


# ----- tiny models --------------------------------------------------------------------------------------------
def tiny_pipeline(cfg: ModelConfig = TINY, with_d: bool = True, detector=None, path="fp32"):
    """A random-weight StarGANPipeline with G on the fp32 path, so hooks on G see every forward (the path choice
    has its own tests)."""
    from stargan_core.edit.pipeline import StarGANPipeline
    torch.manual_seed(0)
    return StarGANPipeline(build_generator(cfg), cfg, build_discriminator(cfg) if with_d else None, detector, path)


def write_tiny_release(folder: Path, schema=CELEBA5, with_d: bool = True) -> Path:
    """A random-weight release (32 px, 8 channels, G and D) that load_model reads like any other."""
    torch.manual_seed(0)
    cfg = ModelConfig(schema=schema, image_size=32, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=2)
    return save_release(build_generator(cfg), cfg, folder, D=build_discriminator(cfg) if with_d else None)


# ----- tiny images and data folders ---------------------------------------------------------------------------
def texture(w: int, h: int, seed: int = 0) -> Image.Image:
    """A smooth random RGB photo stand-in in [40, 215] (no clipping when edited by +-25)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, h // 16 + 2, w // 16 + 2, generator=g)
    x = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0].clamp(0, 1)
    return Image.fromarray((40 + 175 * x).permute(1, 2, 0).numpy().round().astype(np.uint8))


FAKE_CELEBA_ATTRS = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Smiling", "Young"]


def write_image(path: Path, size=(178, 218), value=None) -> None:
    """A random (or ``value``-filled) RGB image at ``path``, img_align_celeba-sized unless told."""
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(len(path.name))
    px = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8) if value is None \
        else torch.full((size[1], size[0], 3), value, dtype=torch.uint8)
    Image.fromarray(px.numpy()).save(path)


def fake_celeba(root: Path, n: int = 6, broken: bool = True) -> list[list[str]]:
    """A CelebA folder of ``n`` images (list_attr_celeba.txt with FAKE_CELEBA_ATTRS, images/); with ``broken``, the
    third image is unreadable. Returns the attribute file's rows."""
    rows = []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        vals = ["1" if (i + k) % 3 == 0 else "-1" for k in range(len(FAKE_CELEBA_ATTRS))]
        rows.append([name, *vals])
        if not (broken and i == 2):
            write_image(root / "images" / name)
    if broken:
        (root / "images" / "000003.jpg").write_bytes(b"not a jpeg")  # unreadable: skipped, counted
    lines = [str(n), " ".join(FAKE_CELEBA_ATTRS)] + [" ".join(r) for r in rows]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return rows


# ----- tiny training runs -------------------------------------------------------------------------------------
def tiny_cfg(tmp_path: Path, **kw) -> TrainConfig:
    """A TrainConfig on two tiny on-disk datasets (so the mask alternation runs too) and the smallest nets."""
    world = ShapeWorld(16)
    dirs = [world.write(tmp_path / "shapes", "shapes", 24, 1), world.write(tmp_path / "forms", "forms", 24, 2)]
    base = dict(csv_dirs=dirs, image_size=16, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=2,
                batch_size=4, num_workers=0, n_critic=2, num_iters=6, num_iters_decay=4, log_every=1,
                sample_every=3, n_samples=2, ckpt_every=100, out_dir=str(tmp_path / "run"), test_split=4,
                num_threads=1)  # one thread: reproducible, and far faster than two on a shared machine
    return TrainConfig(**{**base, **kw})


def run_state(run_dir) -> dict:
    """The training state a run saved last (its checkpoint.pt)."""
    return torch.load(Path(run_dir) / CKPT_NAME, weights_only=True)


# ----- the app, served in this process ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalApp:
    """build_demo(pipeline) served on a free local port in this process, as app.py serves it."""

    def __init__(self, release: Path, options=None, **build):
        from demo.models import ModelShelf
        from demo.ui import MAX_UPLOAD, build_demo
        from stargan_core.edit.pipeline import StarGANPipeline
        from stargan_core.weights.hub import load_model
        model = load_model(release)
        self.pipeline = StarGANPipeline(model.G, model.config, D=model.D)
        shelf = None if options is None else ModelShelf(options, {options[0].label: (self.pipeline, model.status)})
        self.demo = build_demo(self.pipeline, model.status, shelf=shelf, **build)
        self.demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                         max_file_size=MAX_UPLOAD)
        self.url = self.demo.local_url

    def client(self, download_dir: Path):
        from gradio_client import Client
        return Client(self.url, verbose=False, download_files=str(download_dir))

    def config(self) -> dict:
        import httpx
        return httpx.get(self.url + "config", timeout=30).json()

    def close(self) -> None:
        self.demo.close()
