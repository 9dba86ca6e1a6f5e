"""Shared fixtures: the real data beside the checkout (skipped with a reason when absent) and fixed seeds."""
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED_DATA = Path(os.environ.get("STARGAN_SHARED_DATA", Path(__file__).resolve().parents[1] / "../shared/data"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


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
