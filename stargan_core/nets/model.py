"""StarGAN's generator and discriminator, layer for layer as in the paper's appendix and the official code.

Module order and names match yunjey/stargan, so an official ``NNNN-G.ckpt`` / ``NNNN-D.ckpt`` state_dict
(``main.N.*``, ``conv1.weight``, ``conv2.weight``, InstanceNorm running-stat buffers included) loads with
``strict=True``; ``upsample="resize"`` (see ``up_conv``) is an option of this project, off by default. This file
is pure: layers and ``forward`` only, no I/O and no device choice.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import UPSAMPLES, ModelConfig, check_choice


class InstanceNorm(nn.InstanceNorm2d):
    """InstanceNorm2d that always normalises with per-image statistics, in train() *and* eval().

    The official nets were built with ``track_running_stats=True``, so their files hold running stats and we
    keep the buffers to load them strictly. But the official test never calls ``.eval()``: it normalises each
    image by its own statistics, and using the running stats degrades the output (yunjey/stargan#102). So
    ``forward`` ignores the mode; the buffers are still updated in train() so our files stay official-compatible.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=True, track_running_stats=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        track = self.training
        return F.instance_norm(x, self.running_mean if track else None, self.running_var if track else None,
                               self.weight, self.bias, use_input_stats=True, momentum=self.momentum, eps=self.eps)


class ResidualBlock(nn.Module):
    """conv3x3-IN-ReLU-conv3x3-IN with an identity shortcut (dimensions unchanged)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim_in, dim_out, kernel_size=3, stride=1, padding=1, bias=False),
            InstanceNorm(dim_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim_out, dim_out, kernel_size=3, stride=1, padding=1, bias=False),
            InstanceNorm(dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


def up_conv(dim_in: int, dim_out: int, upsample: str) -> nn.Module:
    """Double H and W: the paper's 4x4 stride-2 transposed conv (``deconv``), or ``resize``: nearest-neighbour x2
    then a 3x3 conv (Odena, Dumoulin & Olah 2016, "Deconvolution and checkerboard artifacts"). A transposed conv
    makes each output pixel from one of four 2x2 subsets of its kernel, by the pixel's parity: unless training
    makes the four agree, the output carries a period-2 checkerboard. After a nearest resize every pixel sees the
    same whole 3x3 kernel. The resize pair is one module, so layer positions (``main.N``) match the deconv G's."""
    if upsample == "deconv":
        return nn.ConvTranspose2d(dim_in, dim_out, kernel_size=4, stride=2, padding=1, bias=False)
    check_choice("upsample", upsample, UPSAMPLES)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(dim_in, dim_out, kernel_size=3, stride=1, padding=1, bias=False))


class Generator(nn.Module):
    """G(x, c): 7x7 conv, 2 stride-2 down convs, ``repeat_num`` residual blocks, 2 up convs, 7x7 conv + tanh."""

    def __init__(self, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6, upsample: str = "deconv") -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3 + c_dim, conv_dim, kernel_size=7, stride=1, padding=3, bias=False),
            InstanceNorm(conv_dim), nn.ReLU(inplace=True)]
        curr_dim = conv_dim
        for _ in range(2):  # down-sampling: H -> H/4, channels x4
            layers += [nn.Conv2d(curr_dim, curr_dim * 2, kernel_size=4, stride=2, padding=1, bias=False),
                       InstanceNorm(curr_dim * 2), nn.ReLU(inplace=True)]
            curr_dim *= 2
        layers += [ResidualBlock(curr_dim, curr_dim) for _ in range(repeat_num)]  # bottleneck
        for _ in range(2):  # up-sampling: back to H
            layers += [up_conv(curr_dim, curr_dim // 2, upsample), InstanceNorm(curr_dim // 2), nn.ReLU(inplace=True)]
            curr_dim //= 2
        layers += [nn.Conv2d(curr_dim, 3, kernel_size=7, stride=1, padding=3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) in [-1, 1]; c: (N, c_dim) target condition -> (N, 3, H, W) in [-1, 1]."""
        c = c.to(x.dtype).view(c.size(0), c.size(1), 1, 1).expand(-1, -1, x.size(2), x.size(3))
        return self.main(torch.cat([x, c], dim=1))  # input (N, 3+c_dim, H, W)


class Discriminator(nn.Module):
    """D(x) -> (out_src, out_cls): a PatchGAN real/fake map and the domain classifier's logits."""

    def __init__(self, image_size: int = 128, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, conv_dim, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.01)]
        curr_dim = conv_dim
        for _ in range(1, repeat_num):  # each halves H and doubles channels
            layers += [nn.Conv2d(curr_dim, curr_dim * 2, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.01)]
            curr_dim *= 2
        kernel_size = image_size // 2 ** repeat_num  # the cls head sees the whole (H/64)x(W/64) map
        self.main = nn.Sequential(*layers)
        self.conv1 = nn.Conv2d(curr_dim, 1, kernel_size=3, stride=1, padding=1, bias=False)
        self.conv2 = nn.Conv2d(curr_dim, c_dim, kernel_size=kernel_size, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, 3, H, W) -> out_src (N, 1, H/64, W/64), out_cls (N, c_dim)."""
        h = self.main(x)
        return self.conv1(h), self.conv2(h).flatten(1)


def build_generator(cfg: ModelConfig) -> Generator:
    """G for a config: its condition has ``schema.c_dim`` entries (labels + mask)."""
    return Generator(cfg.g_conv_dim, cfg.schema.c_dim, cfg.g_repeat_num, cfg.upsample)


def build_discriminator(cfg: ModelConfig) -> Discriminator:
    """D for a config: its classifier predicts ``schema.cls_dim`` labels (no mask)."""
    return Discriminator(cfg.image_size, cfg.d_conv_dim, cfg.schema.cls_dim, cfg.d_repeat_num)
