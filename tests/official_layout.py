"""Independent references for the official StarGAN networks, written from the paper/official code's description.

These build state_dicts from the documented key names and shapes (never by saving the project's own model) and
run the networks with plain functional ops, so tests compare the project against something it did not compute.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def official_g_state_dict(conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6,
                          with_nbt: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """yunjey/stargan Generator keys: main.0 conv7, main.1 IN, main.3/6 down convs, main.9.. residual blocks
    (main.K.main.0 conv, .1 IN, .3 conv, .4 IN), then two ConvTranspose (+IN) and the last conv7."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(key, shape):
        sd[key + ".weight"] = torch.randn(shape, generator=g) * 0.05

    def norm(key, n):
        sd[key + ".weight"] = 1 + 0.1 * torch.randn(n, generator=g)
        sd[key + ".bias"] = 0.1 * torch.randn(n, generator=g)
        sd[key + ".running_mean"] = torch.randn(n, generator=g)  # garbage on purpose: must never be used
        sd[key + ".running_var"] = torch.rand(n, generator=g) + 5
        if with_nbt:
            sd[key + ".num_batches_tracked"] = torch.tensor(200000)

    d = conv_dim
    conv("main.0", (d, 3 + c_dim, 7, 7)); norm("main.1", d)
    conv("main.3", (2 * d, d, 4, 4)); norm("main.4", 2 * d)
    conv("main.6", (4 * d, 2 * d, 4, 4)); norm("main.7", 4 * d)
    for i in range(repeat_num):
        k = f"main.{9 + i}.main"
        conv(f"{k}.0", (4 * d, 4 * d, 3, 3)); norm(f"{k}.1", 4 * d)
        conv(f"{k}.3", (4 * d, 4 * d, 3, 3)); norm(f"{k}.4", 4 * d)
    j = 9 + repeat_num
    conv(f"main.{j}", (4 * d, 2 * d, 4, 4)); norm(f"main.{j + 1}", 2 * d)  # ConvTranspose: (in, out, k, k)
    conv(f"main.{j + 3}", (2 * d, d, 4, 4)); norm(f"main.{j + 4}", d)
    conv(f"main.{j + 6}", (3, d, 7, 7))
    return sd


def reference_generator(sd: dict, x: torch.Tensor, c: torch.Tensor, repeat_num: int) -> torch.Tensor:
    """The official G's forward with functional ops; InstanceNorm always uses per-image statistics."""
    def inorm(h, k):
        return F.instance_norm(h, weight=sd[k + ".weight"], bias=sd[k + ".bias"], eps=1e-5)

    h = torch.cat([x, c[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)
    h = F.relu(inorm(F.conv2d(h, sd["main.0.weight"], padding=3), "main.1"))
    h = F.relu(inorm(F.conv2d(h, sd["main.3.weight"], stride=2, padding=1), "main.4"))
    h = F.relu(inorm(F.conv2d(h, sd["main.6.weight"], stride=2, padding=1), "main.7"))
    for i in range(repeat_num):
        k = f"main.{9 + i}.main"
        r = F.relu(inorm(F.conv2d(h, sd[f"{k}.0.weight"], padding=1), f"{k}.1"))
        h = h + inorm(F.conv2d(r, sd[f"{k}.3.weight"], padding=1), f"{k}.4")
    j = 9 + repeat_num
    h = F.relu(inorm(F.conv_transpose2d(h, sd[f"main.{j}.weight"], stride=2, padding=1), f"main.{j + 1}"))
    h = F.relu(inorm(F.conv_transpose2d(h, sd[f"main.{j + 3}.weight"], stride=2, padding=1), f"main.{j + 4}"))
    return torch.tanh(F.conv2d(h, sd[f"main.{j + 6}.weight"], padding=3))


def official_d_state_dict(image_size: int = 128, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6,
                          seed: int = 0) -> dict[str, torch.Tensor]:
    """yunjey/stargan Discriminator keys: main.{0,2,4,..} 4x4 stride-2 convs with bias, conv1 (src), conv2 (cls)."""
    g = torch.Generator().manual_seed(seed)
    sd, cin, cout = {}, 3, conv_dim
    for i in range(repeat_num):
        sd[f"main.{2 * i}.weight"] = torch.randn(cout, cin, 4, 4, generator=g) * 0.05
        sd[f"main.{2 * i}.bias"] = torch.randn(cout, generator=g) * 0.05
        cin, cout = cout, cout * 2
    k = image_size // 2 ** repeat_num
    sd["conv1.weight"] = torch.randn(1, cin, 3, 3, generator=g) * 0.05
    sd["conv2.weight"] = torch.randn(c_dim, cin, k, k, generator=g) * 0.05
    return sd


def reference_discriminator(sd: dict, x: torch.Tensor, repeat_num: int) -> tuple[torch.Tensor, torch.Tensor]:
    h = x
    for i in range(repeat_num):
        h = F.leaky_relu(F.conv2d(h, sd[f"main.{2 * i}.weight"], sd[f"main.{2 * i}.bias"], stride=2, padding=1), 0.01)
    return F.conv2d(h, sd["conv1.weight"], padding=1), F.conv2d(h, sd["conv2.weight"]).flatten(1)


def lornatang_layout(sd: dict, prefix: str = "_orig_mod.") -> dict:
    """Rename official G keys to the goodfellowliu/Lornatang re-implementation's names (same order)."""
    # main.0/1 -> first_layer.0/1, main.3..7 -> down_sampling.0..4, blocks -> trunk.N.main.*, then up/last
    out = {}
    n_blocks = len({k.split(".")[1] for k in sd if k.count(".") >= 3})
    j = 9 + n_blocks
    for k, v in sd.items():
        parts = k.split(".")
        idx = int(parts[1])
        if idx <= 1:
            new = f"first_layer.{idx}." + ".".join(parts[2:])
        elif idx <= 7:
            new = f"down_sampling.{idx - 3}." + ".".join(parts[2:])
        elif idx < j:
            new = f"trunk.{idx - 9}." + ".".join(parts[2:])
        elif idx < j + 6:
            new = f"up_sampling.{idx - j}." + ".".join(parts[2:])
        else:
            new = "last_layer.0." + ".".join(parts[2:])
        out[prefix + new] = v
    return {"state_dict": out}
