"""The networks equal the paper/official architecture: parameter counts, functional reference, inference mode."""
import pytest
import torch

from official_layout import official_d_state_dict, official_g_state_dict, reference_discriminator, reference_generator
from stargan_core.config import ModelConfig
from stargan_core.domains import JOINT
from stargan_core.model import Discriminator, Generator, build_discriminator, build_generator


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_paper():
    assert n_params(Generator(64, 5, 6)) == 8_430_528
    assert n_params(Discriminator(128, 64, 5, 6)) == 44_762_048
    assert n_params(Generator(64, 8, 6)) + n_params(Discriminator(128, 64, 8, 6)) == 53_226_560  # paper: 53.2M
    cfg = ModelConfig(schema=JOINT)
    assert n_params(build_generator(cfg)) == 8_461_888  # c_dim 15 = 5 + 8 + mask 2
    assert n_params(build_discriminator(cfg)) == 44_827_584  # predicts 13 labels


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_generator_equals_functional_reference(mode):
    sd = official_g_state_dict(conv_dim=8, c_dim=5, repeat_num=2)
    G = Generator(8, 5, 2)
    G.load_state_dict(sd, strict=True)
    getattr(G, mode)()
    x, c = torch.rand(3, 3, 32, 32) * 2 - 1, torch.randint(0, 2, (3, 5)).float()
    with torch.no_grad():
        out = G(x, c)
    ref = reference_generator(sd, x, c, repeat_num=2)
    assert out.shape == (3, 3, 32, 32)
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()


def test_eval_and_train_give_identical_output_and_running_stats_are_ignored():
    G = Generator(8, 5, 1)
    G.load_state_dict(official_g_state_dict(8, 5, 1), strict=True)  # running stats are garbage on purpose
    x, c = torch.randn(2, 3, 16, 16), torch.ones(2, 5)
    with torch.no_grad():
        a = G.train()(x, c)
        b = G.eval()(x, c)
    assert torch.equal(a, b)
    # a plain nn.InstanceNorm2d in eval mode would use those running stats and give a different image
    norm = torch.nn.InstanceNorm2d(8, affine=True, track_running_stats=True).eval()
    norm.load_state_dict(G.main[1].state_dict())
    h = torch.randn(2, 8, 16, 16)
    assert not torch.allclose(norm(h), G.main[1](h))


def test_discriminator_equals_functional_reference():
    sd = official_d_state_dict(image_size=64, conv_dim=8, c_dim=5, repeat_num=6)
    D = Discriminator(64, 8, 5, 6)
    D.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 64, 64)
    out_src, out_cls = D(x)
    ref_src, ref_cls = reference_discriminator(sd, x, 6)
    assert out_src.shape == (2, 1, 1, 1) and out_cls.shape == (2, 5)
    assert torch.allclose(out_src, ref_src, atol=1e-5) and torch.allclose(out_cls, ref_cls, atol=1e-5)


def test_patchgan_map_size_at_128px():
    out_src, out_cls = Discriminator(128, 4, 13, 6)(torch.randn(1, 3, 128, 128))
    assert out_src.shape == (1, 1, 2, 2) and out_cls.shape == (1, 13)
