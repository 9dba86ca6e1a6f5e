"""D's classifier at inference, computed as matrix products: what the pipeline asks D about each face.

The discriminator has few FLOPs but large weights (the last 4x4 conv alone is 2048x1024x4x4) applied to maps of
2x2 to 8x8 pixels, where oneDNN re-lays the weights out on every call. ``classify`` computes those convolutions as
``unfold`` + one matrix product instead (the same sums, in fp32), and skips the real/fake head it does not need.
How much faster: ``docs/EXPERIMENTS.md``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv(conv: nn.Conv2d, h: torch.Tensor) -> torch.Tensor:
    """``conv(h)``; on small outputs (<= 8x8) as unfold + matmul, which skips oneDNN's per-call weight re-layout."""
    n, _, H, W = h.shape
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    oh, ow = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    if oh * ow > 64 or conv.groups != 1 or conv.dilation != (1, 1):
        return conv(h)
    cols = F.unfold(h, conv.kernel_size, padding=conv.padding, stride=conv.stride)  # (N, Cin*kh*kw, oh*ow)
    out = conv.weight.flatten(1) @ cols  # (N, Cout, oh*ow)
    out = out if conv.bias is None else out + conv.bias[:, None]
    return out.view(n, -1, oh, ow)


@torch.inference_mode()
def classify(D: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """D's out_cls logits (N, cls_dim) for x (N, 3, H, W), equal to ``D(x)[1]`` (out_src is not computed)."""
    h = x.to(D.conv2.weight.device)
    for layer in D.main:  # stride-2 4x4 convs and LeakyReLUs
        h = _conv(layer, h) if isinstance(layer, nn.Conv2d) else layer(h)
    return _conv(D.conv2, h).flatten(1)
