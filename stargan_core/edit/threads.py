"""Threads that fit the CPU quota: torch starts one per visible core, but a container may see more than it may use.

A 2-vCPU Space on a big host sees every core of the host while its cgroup quota allows two; one thread per
visible core would oversubscribe the two it has. ``fit_threads`` lowers torch's count to the quota, never raises
it; the inference paths size their own thread pools from it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch


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
