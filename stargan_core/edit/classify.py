"""Running the networks fast at inference: threads that fit the CPU quota, and D's classifier as matmuls.

The generator's paths (fp32, bf16, ONNX Runtime, int8) and the measurement that picks one live in ``inference.py``.

Threads: torch starts one per visible core, but a container (a 2-vCPU Space on a big host) may see every core of
the host while its cgroup quota allows two; ``fit_threads`` lowers torch's count to the quota, never raises it.

The discriminator has few FLOPs but large weights (the last 4x4 conv alone is 2048x1024x4x4)
applied to maps of 2x2 to 8x8 pixels, where oneDNN re-lays the weights out on every call. ``classify`` computes
those convolutions as ``unfold`` + one matrix product instead (the same sums, in fp32): about 6x faster per face.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def cpu_budget(cgroup: str | Path = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 (cpu.max) or v1 (cfs quota) limit."""
    cgroup, n = Path(cgroup), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            fields = (cgroup / quota_file).read_text().split()
            quota, period = fields[0], fields[1] if period_file is None else (cgroup / period_file).read_text()
        except (OSError, IndexError):
            continue
        if quota not in ("max", "-1"):
            return max(1, min(n or 1, math.ceil(int(quota) / int(period))))
    return max(1, n or 1)


def fit_threads() -> int:
    """Lower torch's intra-op threads to ``cpu_budget()`` when it is above it (oversubscription); returns the count."""
    if torch.get_num_threads() > cpu_budget():
        torch.set_num_threads(cpu_budget())
    return torch.get_num_threads()


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
