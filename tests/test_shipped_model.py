"""The model committed in checkpoints/: it loads offline through load_model and visibly does what it promises on
CelebA faces it never trained on (the official held-out split of celeba_30k), judged from the pixels."""
import pytest
import torch

from stargan_core.data.datasets import OFFICIAL_CELEBA_TEST, ImageLabels, read_celeba, split
from stargan_core.domains import CELEBA5_ATTRS
from stargan_core.evaluation.evaluate import laplacian_energy
from stargan_core.weights.hub import load_model, shipped_release

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def loaded(monkeypatch_module):
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch_module.delenv("STARGAN_MODEL", raising=False)
    return load_model()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def held_out(shared_data):
    records, _ = read_celeba(shared_data / "celeba_30k", CELEBA5_ATTRS)
    _, test = split(records, 0, OFFICIAL_CELEBA_TEST)  # never trained on
    ds = ImageLabels(test[:24], 128, 178)
    return torch.stack([ds[i][0] for i in range(len(ds))]), torch.stack([ds[i][1] for i in range(len(ds))])


def test_the_shipped_release_loads_offline_with_its_discriminator(loaded):
    assert loaded.fallback and loaded.source == str(shipped_release())  # offline: the Hub default falls back
    assert loaded.config.image_size == 128 and loaded.D is not None
    assert "shipped with the app" in loaded.status


@torch.inference_mode()
def test_hair_targets_change_the_hair_and_outputs_are_not_speckle(loaded, held_out):
    x, labels = held_out
    G = loaded.G.eval()
    out = {}
    for k, name in enumerate(("black", "blond", "brown")):
        c = torch.zeros(len(labels), loaded.config.schema.cls_dim)
        c[:, :5] = labels
        c[:, :3] = 0
        c[:, k] = 1
        out[name] = G(x, loaded.config.schema.condition(c, "celeba"))  # a joint model: CelebA's mask
    # hair sits in the top quarter and the sides of a CelebA crop: compare its brightness across targets
    def hair(y):
        top = y[:, :, :32, 16:112]
        return ((top + 1) / 2).mean((1, 2, 3))  # (N,) mean brightness in [0, 1]
    blond_brighter = (hair(out["blond"]) - hair(out["black"]) > 0.05).float().mean().item()
    assert blond_brighter >= 0.9, blond_brighter  # blond is lighter than black on (nearly) every face
    # no checkerboard speckle: the 64 px model this one replaced had 1.96x the real images' Laplacian energy; this
    # one has ~1.4x (the target, within 25%, is not met yet: see the model card)
    ratio = (laplacian_energy(torch.cat(list(out.values()))).mean() / laplacian_energy(x).mean()).item()
    assert 0.6 < ratio < 1.5, ratio
