"""The networks equal the paper/official architecture: parameter counts, functional reference, inference mode;
and the resize-convolution option."""
from pathlib import Path

import pytest
import torch

from official_layout import official_d_state_dict, official_g_state_dict, reference_discriminator, reference_generator
from stargan_core.config import ModelConfig
from stargan_core.domains import JOINT
from stargan_core.nets.model import Discriminator, Generator, build_discriminator, build_generator


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


# ----- the resize-convolution option (Odena et al. 2016) -----------------------------------------------------------
def test_resize_generator_keeps_shapes_and_swaps_each_4x4_deconv_for_a_3x3_conv():
    G = Generator(8, 5, 2, upsample="resize")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        y = G(x, torch.ones(2, 5))
    assert y.shape == (2, 3, 32, 32) and y.abs().max() <= 1
    # the paper's G minus, in each of the 2 up stages (256->128, 128->64 channels), a 4x4 kernel plus a 3x3 one
    assert n_params(Generator(64, 5, 6, "resize")) == 8_430_528 - (256 * 128 + 128 * 64) * (16 - 9)
    deconv = Generator(8, 5, 2).state_dict()
    assert [k.split(".")[1] for k in G.state_dict()] == [k.split(".")[1] for k in deconv]  # same main.N layout
    up = build_generator(ModelConfig(g_conv_dim=8, g_repeat_num=2, upsample="resize")).main[11]  # 9 + 2 blocks
    assert isinstance(up[0], torch.nn.Upsample) and isinstance(up[1], torch.nn.Conv2d) and up[1].kernel_size == (3, 3)


def _up_stage(upsample: str, kernel_1d: list[float]) -> torch.nn.Module:
    """G's first up-sampling conv (8 -> 4 channels, G(2, 1, 0)), every (in, out) kernel = outer(k, k)."""
    G = Generator(conv_dim=2, c_dim=1, repeat_num=0, upsample=upsample)
    up = G.main[9]  # stem 0-2, down 3-5 and 6-8, no residual block, then the first up stage
    conv = up if upsample == "deconv" else up[1]
    k = torch.tensor(kernel_1d)
    with torch.no_grad():
        conv.weight.copy_(torch.outer(k, k).expand_as(conv.weight))
    return up


def test_deconv_makes_a_period_2_checkerboard_and_resize_conv_does_not():
    """Constant input (1, 8, 6, 6) of ones. ConvTranspose2d(4, stride 2, pad 1): output o takes kernel tap
    o + 1 - 2i from input i, so even outputs use taps {1, 3}, odd ones {0, 2}, and an interior pixel is
    8 * A[y % 2] * A[x % 2] with A = (k1 + k3, k0 + k2). After a nearest resize every interior pixel sees the
    whole 3x3 kernel: 8 * (sum k)^2 everywhere; the border misses a row or column of taps."""
    x = torch.ones(1, 8, 6, 6)
    with torch.no_grad():
        d = _up_stage("deconv", [1.0, 2.0, 3.0, 4.0])(x)[0]  # (4, 12, 12)
        r = _up_stage("resize", [1.0, 2.0, 3.0])(x)[0]
        flat = _up_stage("deconv", [1.0, 1.0, 1.0, 1.0])(x)[0]
    assert d.shape == r.shape == (4, 12, 12)
    a = torch.tensor([2.0 + 4.0, 1.0 + 3.0])  # by parity of the output row / column
    want = 8 * a[torch.arange(1, 11) % 2][:, None] * a[torch.arange(1, 11) % 2][None, :]
    assert torch.equal(d[:, 1:11, 1:11], want.expand(4, 10, 10))  # 288, 192, 128: a checkerboard
    assert torch.equal(r[:, 1:11, 1:11], torch.full((4, 10, 10), 8 * 6.0 ** 2))  # uniform 288
    assert torch.equal(r[:, 0, 1:11], torch.full((4, 10), 8 * 6.0 * (2 + 3)))  # top row: no kernel row 0
    # Odena et al.'s point: a 4x4 stride-2 deconv overlaps evenly, so equal taps give no pattern; the
    # checkerboard comes from its four parity sub-kernels differing, as trained ones do.
    assert torch.equal(flat[:, 1:11, 1:11], torch.full((4, 10, 10), 8 * 4.0))


def test_resize_upsampling_is_nearest_neighbour():
    """One lit input pixel and a kernel with only its centre tap: the output is that pixel as a 2x2 block."""
    up = _up_stage("resize", [0.0, 1.0, 0.0])
    x = torch.zeros(1, 8, 4, 4)
    x[0, 0, 1, 2] = 1.0
    with torch.no_grad():
        y = up(x)[0, 0]
    want = torch.zeros(8, 8)
    want[2:4, 4:6] = 1.0
    assert torch.equal(y, want)


def test_upsample_is_validated_round_trips_and_defaults_to_the_papers_deconv(tmp_path):
    for make in (lambda: Generator(8, 5, 1, upsample="bilinear"), lambda: ModelConfig(upsample="bilinear")):
        with pytest.raises(ValueError, match="upsample must be one of 'deconv', 'resize', not 'bilinear'"):
            make()
    cfg = ModelConfig(image_size=32, g_conv_dim=8, upsample="resize")
    cfg.save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == cfg and cfg.to_dict()["upsample"] == "resize"
    old = {k: v for k, v in cfg.to_dict().items() if k != "upsample"}  # a config.json written before the option
    assert ModelConfig.from_dict(old).upsample == "deconv"
    assert isinstance(build_generator(ModelConfig.from_dict(old)).main[9 + 6], torch.nn.ConvTranspose2d)
    from stargan_core.weights.hub import shipped_release
    shipped = (shipped_release() or Path("-")) / "config.json"
    if shipped.is_file():  # the shipped release has the paper's transposed convolutions (field written or not)
        assert ModelConfig.load(shipped).upsample == "deconv"
