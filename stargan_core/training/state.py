"""The training state on disk: every mutable thing a run needs to resume exactly, in one ``checkpoint.pt`` dict.

G, D, both optimisers, the step, both configs and the RNG states; written to a temp file that replaces the old one
in a single ``os.replace``, so a save killed half-way leaves the previous checkpoint intact, and read back with
``torch.load(weights_only=True)``. Releases are not training state: see ``weights/formats.py``.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig
from ..weights.formats import CheckpointError, read_state_dict


def rng_state() -> dict:
    """Every RNG the training process may use, as tensors and plain types (``weights_only``-loadable)."""
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(path: str | Path, state: dict) -> Path:
    """Write ``state`` atomically: a temp file beside ``path``, flushed to disk, then renamed over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old or the new file, never half
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_training_state(path: str | Path, nets: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                        model_config: ModelConfig) -> dict:
    """Restore nets, optimisers and RNGs from a training checkpoint (refusing another architecture); returns it."""
    state = read_state_dict(path)
    if not isinstance(state, dict) or "step" not in state or "g_opt" not in state:
        raise CheckpointError(f"{path}: not a training checkpoint (no optimiser state / step)")
    saved = ModelConfig.from_dict(state["model_config"])
    if saved != model_config:
        raise CheckpointError(f"{path}: was trained with another model or data schema ({saved}); "
                              "resume with the same data and sizes, or start a new --out-dir")
    for name, net in nets.items():
        net.load_state_dict(state[name], strict=True)
    for name, opt in optimizers.items():
        opt.load_state_dict(state[name])
    set_rng_state(state["rng"])
    return state
