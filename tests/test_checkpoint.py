"""Every weight format loads strictly and gives the official network's output; every bad file gets a clear error."""
import os
import pickle
import random
from dataclasses import replace

import pytest
import torch

from official_layout import (
    lornatang_layout,
    official_d_state_dict,
    official_g_state_dict,
    reference_discriminator,
    reference_generator,
)
from stargan_core.config import ModelConfig
from stargan_core.domains import CELEBA5, JOINT, DomainSchema, celeba_schema
from stargan_core.nets.model import Discriminator, Generator
from stargan_core.weights.formats import CheckpointError, load_discriminator, load_generator, save_release
from stargan_core.weights.surgery import resize_from_deconv, to_resize_upsampling, widen_generator

X = torch.rand(2, 3, 32, 32) * 2 - 1
C5 = torch.tensor([[1.0, 0, 0, 1, 1], [0, 1, 0, 0, 0]])


@pytest.mark.parametrize("with_nbt", [True, False])
def test_official_generator_checkpoint_loads_strictly_and_matches_reference(tmp_path, with_nbt):
    sd = official_g_state_dict(conv_dim=8, c_dim=5, repeat_num=2, with_nbt=with_nbt)
    torch.save(sd, tmp_path / "200000-G.ckpt")
    G, cfg = load_generator(tmp_path / "200000-G.ckpt")
    assert cfg.schema == CELEBA5 and (cfg.g_conv_dim, cfg.g_repeat_num) == (8, 2)
    with torch.no_grad():
        assert torch.allclose(G(X, C5), reference_generator(sd, X, C5, 2), atol=1e-5)


@pytest.mark.parametrize("prefix", ["", "_orig_mod.", "module."])
def test_lornatang_layout_loads_and_equals_official(tmp_path, prefix):
    sd = official_g_state_dict(conv_dim=8, c_dim=5, repeat_num=2)
    torch.save(lornatang_layout(sd, prefix), tmp_path / "g_celeba-128x128.pth.tar")
    torch.save(sd, tmp_path / "official-G.ckpt")
    G1, cfg = load_generator(tmp_path / "g_celeba-128x128.pth.tar")
    G2, _ = load_generator(tmp_path / "official-G.ckpt")
    assert cfg.image_size == 128  # read from the file name
    with torch.no_grad():
        assert torch.equal(G1(X, C5), G2(X, C5))


def test_joint_official_generator_gets_the_joint_schema(tmp_path):
    torch.save(official_g_state_dict(8, 15, 1), tmp_path / "j-G.ckpt")
    assert load_generator(tmp_path / "j-G.ckpt")[1].schema == JOINT


def test_unknown_label_size_needs_a_schema(tmp_path):
    torch.save(official_g_state_dict(8, 4, 1), tmp_path / "x-G.ckpt")
    with pytest.raises(CheckpointError, match="schema"):
        load_generator(tmp_path / "x-G.ckpt")
    schema = DomainSchema((celeba_schema(["Black_Hair", "Blond_Hair", "Male", "Smiling"]),))
    assert load_generator(tmp_path / "x-G.ckpt", schema=schema)[1].schema == schema


@pytest.mark.parametrize("layout", ["official", "lornatang"])
def test_discriminators_load_and_match_reference(tmp_path, layout):
    sd = official_d_state_dict(image_size=64, conv_dim=4, c_dim=5, repeat_num=6)
    obj = sd if layout == "official" else {"state_dict": {"_orig_mod." + k: v for k, v in sd.items()}}
    torch.save(obj, tmp_path / "d.pth.tar")
    D, cfg = load_discriminator(tmp_path / "d.pth.tar")
    assert (cfg.image_size, cfg.d_conv_dim, cfg.schema) == (64, 4, CELEBA5)
    x = torch.randn(2, 3, 64, 64)
    for a, b in zip(D(x), reference_discriminator(sd, x, 6), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_release_round_trip_is_bit_identical_in_fp32(tmp_path):
    cfg = ModelConfig(schema=JOINT, image_size=32, g_conv_dim=8, g_repeat_num=1, d_conv_dim=4, d_repeat_num=5)
    G = Generator(8, JOINT.c_dim, 1)
    D = Discriminator(32, 4, JOINT.cls_dim, 5)
    save_release(G, cfg, tmp_path / "rel", dtype=torch.float32, D=D)
    G2, cfg2 = load_generator(tmp_path / "rel")
    D2, _ = load_discriminator(tmp_path / "rel")
    assert cfg2 == cfg
    c = JOINT.condition(torch.zeros(2, 13), "rafd")
    with torch.no_grad():
        assert torch.equal(G(X, c), G2(X, c))
        assert torch.equal(D(X)[1], D2(X)[1])
    assert load_generator(tmp_path / "rel" / "model.safetensors")[1] == cfg  # the file itself works too


def test_fp16_release_loads_as_fp32_close_to_original(tmp_path):
    G = Generator(8, 5, 1)
    save_release(G, ModelConfig(image_size=32, g_conv_dim=8, g_repeat_num=1), tmp_path, dtype=torch.float16)
    size32 = sum(v.numel() * 4 for v in G.state_dict().values() if v.is_floating_point())
    assert (tmp_path / "model.safetensors").stat().st_size < 0.6 * size32
    G2, _ = load_generator(tmp_path)
    assert next(G2.parameters()).dtype == torch.float32
    with torch.no_grad():
        assert (G(X, C5) - G2(X, C5)).abs().max() < 5e-3


def test_config_versions(tmp_path):
    cfg = ModelConfig(schema=JOINT, image_size=64)
    d = cfg.to_dict()
    assert ModelConfig.from_dict(d) == cfg
    old = {k: v for k, v in d.items() if k not in ("version", "d_conv_dim")}  # an older file lacks new fields
    assert ModelConfig.from_dict(old).d_conv_dim == 64
    with pytest.raises(ValueError, match="newer"):
        ModelConfig.from_dict({**d, "version": 99})


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def _write_bad(tmp_path, kind):
    p = tmp_path / f"{kind}.ckpt"
    good = tmp_path / "good.ckpt"
    torch.save(official_g_state_dict(8, 5, 1), good)
    if kind == "wrong_shape":
        sd = official_g_state_dict(8, 5, 1)
        sd["main.3.weight"] = torch.zeros(16, 8, 3, 3)
        torch.save(sd, p)
    elif kind == "truncated":
        p.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "random":
        p.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "text":
        p.write_text("this is not a checkpoint\n")
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "code":
        with open(p, "wb") as f:
            pickle.dump({"state_dict": _Evil()}, f)
    elif kind == "not_tensors":
        torch.save({"hello": 1, "world": [2, 3]}, p)
    elif kind == "other_net":
        torch.save(torch.nn.Linear(3, 4).state_dict(), p)
    return p


@pytest.mark.parametrize("kind,message", [
    ("wrong_shape", "wrong shape"), ("truncated", "corrupt or truncated"), ("random", "not a"),
    ("text", "not a"), ("empty", "corrupt or truncated|not a"), ("code", "would run Python code"),
    ("not_tensors", "not a StarGAN checkpoint"), ("other_net", "not a StarGAN generator"),
])
def test_bad_files_raise_one_clear_error_naming_the_file(tmp_path, kind, message):
    p = _write_bad(tmp_path, kind)
    with pytest.raises(CheckpointError, match=message) as e:
        load_generator(p)
    assert str(p) in str(e.value)


def test_corrupt_safetensors_and_missing_config(tmp_path):
    save_release(Generator(8, 5, 1), ModelConfig(g_conv_dim=8, g_repeat_num=1), tmp_path / "r")
    data = (tmp_path / "r" / "model.safetensors").read_bytes()
    (tmp_path / "r" / "model.safetensors").write_bytes(data[:1000])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_generator(tmp_path / "r")
    (tmp_path / "r" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        load_generator(tmp_path / "r")


def test_a_resize_generator_saved_as_a_bare_state_dict_is_recognised_by_its_3x3_up_convs(tmp_path):
    G = Generator(8, 5, 2, upsample="resize")
    torch.save(G.state_dict(), tmp_path / "1000-G.ckpt")
    G2, cfg = load_generator(tmp_path / "1000-G.ckpt")
    assert cfg.upsample == "resize" and (cfg.g_conv_dim, cfg.g_repeat_num) == (8, 2)
    assert load_generator(save_release(G, cfg, tmp_path / "rel", dtype=torch.float32))[1].upsample == "resize"
    with torch.no_grad():
        assert torch.equal(G2(X, C5), G(X, C5))
    torch.save(official_g_state_dict(8, 5, 2), tmp_path / "200000-G.ckpt")  # the paper's 4x4 transposed convs
    assert load_generator(tmp_path / "200000-G.ckpt")[1].upsample == "deconv"


def _deconv_weight_of(up: torch.nn.Module, c_in: int) -> torch.Tensor:
    """The (in, out, 4, 4) transposed-conv weight that does what ``up`` does, read off its impulse responses: an
    input pixel at (m, m) reaches outputs 2m-1 .. 2m+2 through kernel taps 0..3 (stride 2, padding 1)."""
    delta = torch.zeros(c_in, c_in, 5, 5)
    delta[range(c_in), range(c_in), 2, 2] = 1
    with torch.no_grad():
        return up(delta)[:, :, 3:7, 3:7]


def test_resize_from_deconv_is_exact_for_a_deconv_a_resize_conv_can_express():
    torch.manual_seed(0)
    up = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="nearest"), torch.nn.Conv2d(6, 4, 3, 1, 1,
                                                                                              bias=False))
    deconv = torch.nn.ConvTranspose2d(6, 4, 4, 2, 1, bias=False)
    with torch.no_grad():
        deconv.weight.copy_(_deconv_weight_of(up, 6))
        x = torch.randn(2, 6, 7, 9)
        assert torch.allclose(deconv(x), up(x), atol=1e-5)  # the impulse-response reading is right
        assert torch.allclose(resize_from_deconv(deconv.weight), up[1].weight, atol=1e-5)
        deconv.weight.normal_()  # a deconv whose four parities disagree: the fit keeps less than all of it
        err = (resize_from_deconv(deconv.weight) - up[1].weight)
        assert err.abs().max() > 0.1


def test_to_resize_upsampling_copies_every_other_weight_and_converts_the_up_convs():
    torch.manual_seed(0)
    G = Generator(8, 5, 2)
    cfg = ModelConfig(schema=CELEBA5, image_size=16, g_conv_dim=8, g_repeat_num=2)
    R, cfg_r = to_resize_upsampling(G, cfg)
    assert cfg_r.upsample == "resize" and cfg_r.g_conv_dim == 8 and isinstance(R.main[11][0], torch.nn.Upsample)
    g, r = G.state_dict(), R.state_dict()
    ups = ["main.11.weight", "main.14.weight"]  # stem, 2 down, 2 residual blocks, then the two transposed convs
    assert all(isinstance(G.main[int(k.split(".")[1])], torch.nn.ConvTranspose2d) for k in ups)
    for k in ups:
        assert torch.equal(r[k.replace(".weight", ".1.weight")], resize_from_deconv(g[k]))
    assert all(torch.equal(r[k], v) for k, v in g.items() if k not in ups)
    with torch.no_grad():
        assert R(X, C5).shape == G(X, C5).shape


@pytest.mark.parametrize("upsample", ["deconv", "resize"])
def test_widen_generator_keeps_the_function_and_noise_breaks_the_copies_apart(upsample):
    torch.manual_seed(0)
    G = Generator(8, 5, 2, upsample=upsample)  # 8 base channels = 3 + 5 input channels: widths must not be confused
    for m in G.modules():
        if isinstance(m, torch.nn.InstanceNorm2d):  # non-trivial affine params and running stats to carry over
            m.weight.data.normal_(1, 0.3), m.bias.data.normal_(0, 0.3), m.running_mean.normal_()
    cfg = ModelConfig(schema=CELEBA5, image_size=16, g_conv_dim=8, g_repeat_num=2, upsample=upsample)
    W, cfg_w = widen_generator(G, cfg, 13, noise=0)
    assert cfg_w.g_conv_dim == 13 and cfg_w == replace(cfg, g_conv_dim=13)
    assert [p.shape[0] for p in W.main[0].parameters()] == [13] and W.main[9].main[0].weight.shape[:2] == (52, 52)
    ws = W.state_dict()
    assert torch.equal(ws["main.0.weight"][:8], G.state_dict()["main.0.weight"])  # originals kept as they were
    assert torch.equal(ws["main.1.running_mean"][:8], G.state_dict()["main.1.running_mean"])
    G.eval(), W.eval()  # outputs are the same in train() (per-image norm); eval() keeps the running stats as set
    with torch.no_grad():
        assert torch.allclose(W(X, C5), G(X, C5), atol=1e-5)

    Wn, _ = widen_generator(G, cfg, 13, noise=0.05)
    w = Wn.state_dict()["main.0.weight"]
    copies = w[8:]  # each copy's incoming weights: near its original, not equal (or it would never diverge)
    dist = (copies[:, None] - w[None, :8]).flatten(2).norm(dim=2).min(dim=1).values
    assert (dist > 0).all() and (dist < 0.2 * w[:8].flatten(1).norm(dim=1).min()).all()
    with torch.no_grad():  # it starts far closer to G than a wide G of its own would
        fresh = (Generator(13, 5, 2, upsample=upsample)(X, C5) - G(X, C5)).abs().mean()
        assert (Wn(X, C5) - G(X, C5)).abs().mean() < 0.2 * fresh
    with pytest.raises(ValueError, match="narrower"):
        widen_generator(G, cfg, 4)


def test_to_schema_adds_datasets_with_zero_inputs_so_the_release_edits_exactly_as_before():
    """A CelebA release made joint [celeba(5) | london(2) | mask(2)]: with the CelebA mask it is the same G, and D
    keeps its CelebA logits, bit for bit (the surgery is exact at step 0)."""
    from stargan_core.domains import DatasetSpec, Group
    from stargan_core.weights.surgery import to_schema
    cfg = ModelConfig(schema=CELEBA5, image_size=32, g_conv_dim=8, d_conv_dim=8, g_repeat_num=2, d_repeat_num=3)
    G, D = Generator(8, 5, 2), Discriminator(32, 8, 5, 3)
    london = DatasetSpec("london", (Group("expression", "categorical", ("neutral", "smiling")),))
    joint = DomainSchema((CELEBA5.datasets[0], london))
    G2, D2, cfg2 = to_schema(G, D, cfg, joint)
    assert cfg2.schema == joint and (joint.c_dim, joint.cls_dim) == (9, 7)
    w, w2 = G.main[0].weight, G2.main[0].weight
    assert w2.shape == (8, 12, 7, 7) and torch.equal(w2[:, :8], w) and not w2[:, 8:].any()
    c_joint = joint.condition(torch.cat([C5, torch.tensor([[0.0, 1], [1, 0]])], 1), "celeba")  # london ignored
    with torch.no_grad():
        assert torch.equal(G2(X, c_joint), G(X, C5))
        (src, cls), (src2, cls2) = D(X), D2(X)
    assert torch.equal(src2, src) and torch.equal(cls2[:, :5], cls) and not cls2[:, 5:].any()
    with pytest.raises(CheckpointError, match="do not contain"):  # labels the release has must survive
        to_schema(G, D, cfg, DomainSchema((london,)))
