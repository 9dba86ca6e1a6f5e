"""The number format the generator runs in at inference: bf16 autocast where the hardware has it, fp32 elsewhere.

Measured on 2 cores of an AVX512-BF16 CPU (``python -m stargan_core.bench infer``): bf16 autocast halves the
128 px generator's time per face against fp32 eager, for a mean pixel error well under 1/255 (tanh output, uint8
photo). channels_last made it slower there, and ``torch.compile`` gained under 10% for ~25 s of compilation at
start-up, so neither is used. On a CPU without native bf16 (no AVX512-BF16 or AMX), bf16 is emulated and slower
than fp32, so fp32 is kept. Under autocast the whole generator (convolutions, InstanceNorm, tanh) runs in bf16;
the output is returned in fp32.
"""
from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import nn


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles), not by emulation."""
    cpu = torch.cpu
    checks = (getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None))
    return torch.backends.mkldnn.is_available() and any(f is not None and f() for f in checks)


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
