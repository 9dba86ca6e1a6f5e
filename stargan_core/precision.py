"""Running the networks fast at inference: the generator in bf16 where the hardware has it, D's classifier as matmuls.

Measured on 2 cores of an AVX512-BF16 CPU (``python -m stargan_core.bench infer``): bf16 autocast halves the
128 px generator's time per face against fp32 eager, for a mean pixel error well under 1/255 (tanh output, uint8
photo). channels_last made it slower there, and ``torch.compile`` gained under 10% for ~25 s of compilation at
start-up, so neither is used. On a CPU without native bf16 (no AVX512-BF16 or AMX), bf16 is emulated and slower
than fp32, so fp32 is kept. Under autocast the whole generator (convolutions, InstanceNorm, tanh) runs in bf16;
the output is returned in fp32.

Threads: torch starts one per visible core, but a container (a 2-vCPU Space on a big host) may see every core of
the host while its cgroup quota allows two; ``fit_threads`` lowers torch's count to the quota, never raises it.

The discriminator is the opposite case: few FLOPs but large weights (the last 4x4 conv alone is 2048x1024x4x4)
applied to maps of 2x2 to 8x8 pixels, where oneDNN re-lays the weights out on every call. ``classify`` computes
those convolutions as ``unfold`` + one matrix product instead (the same sums, in fp32): about 6x faster per face.
"""
from __future__ import annotations

import math
import os
from contextlib import AbstractContextManager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles), not by emulation."""
    cpu = torch.cpu
    checks = (getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None))
    return torch.backends.mkldnn.is_available() and any(f is not None and f() for f in checks)


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


def best_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA that supports it and on CPUs with native bf16; fp32 otherwise (MPS included)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (a no-op for fp32)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


@torch.inference_mode()
def generate(G: nn.Module, x: torch.Tensor, c: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """G(x, c) in ``dtype`` on G's device; x: (N, 3, H, W), c: (N, c_dim) -> fp32 (N, 3, H, W) on that device."""
    device = next(G.parameters()).device
    with autocast(device, dtype):
        return G(x.to(device), c.to(device)).float()


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
