"""A run's state: where it starts (its own checkpoint on ``--resume``, or a release with ``--init-from``) and how
it is saved.

Every mutable thing a run needs to resume exactly is in one ``checkpoint.pt`` dict: G, D, both optimisers, the
step, both configs and the RNG states; it is written to a temp file that replaces the old one in a single
``os.replace``, so a save killed half-way leaves the previous checkpoint intact, and read back with
``torch.load(weights_only=True)``. Releases are not training state: ``--init-from`` copies a release's weights
(made to fit this run's model by ``weights/surgery.py``) into fresh nets with fresh optimisers.
"""
from __future__ import annotations

import json
import os
import random
from collections.abc import Collection
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig, TrainConfig
from ..nets.model import Discriminator, Generator
from ..weights.formats import D_WEIGHTS_NAME, CheckpointError, load_discriminator, load_generator, read_state_dict
from ..weights.surgery import to_resize_upsampling, to_schema, widen_generator


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


def init_from_release(folder: str, G: Generator, D: Discriminator | None, mcfg: ModelConfig,
                      rank: int = 0) -> ModelConfig:
    """Copy a release's G (and D, when it ships one and ``D`` is given) into the fresh nets, converted to this
    run's model first. Returns the release's own model config (its datasets, before any surgery)."""
    G0, cfg0 = load_generator(folder)
    release = cfg0
    D0 = load_discriminator(folder)[0] if D is not None and (Path(folder) / D_WEIGHTS_NAME).is_file() else None
    say = print if rank == 0 else (lambda *a, **k: None)
    if cfg0.upsample == "deconv" and mcfg.upsample == "resize":  # the paper's G -> resize-conv
        G0, cfg0 = to_resize_upsampling(G0, cfg0)
        say(f"{folder}: its transposed convs became nearest-resize 3x3 convs (least-squares fit; the "
            "checkerboard part is dropped, so expect the first samples to be rough)", flush=True)
    if cfg0.g_conv_dim < mcfg.g_conv_dim:  # a wider G that starts as the release's function (Net2Net)
        old = cfg0.g_conv_dim
        G0, cfg0 = widen_generator(G0, cfg0, mcfg.g_conv_dim)
        say(f"{folder}: G widened from {old} to {cfg0.g_conv_dim} base channels "
            "(Net2Net: copies of its channels plus a little noise, so it starts close to the release)", flush=True)
    if cfg0.schema != mcfg.schema:  # more datasets: zero-initialised labels and mask (the release's edits intact)
        old = ", ".join(cfg0.schema.labels)
        G0, D0, cfg0 = to_schema(G0, D0, cfg0, mcfg.schema)
        say(f"{folder}: its labels ({old}) became [{' | '.join(ds.name for ds in mcfg.schema.datasets)}"
            f"{' | mask' if len(mcfg.schema.datasets) > 1 else ''}]; the new inputs start at zero", flush=True)
    if cfg0 != mcfg:
        raise CheckpointError(f"{folder}: its model ({cfg0}) differs from this run's ({mcfg}); pass the same "
                              "image size, widths, --upsample and attributes")
    G.load_state_dict(G0.state_dict())
    if D0 is not None:
        D.load_state_dict(D0.state_dict())
    elif D is not None:
        say(f"{folder} has no {D_WEIGHTS_NAME}: the discriminator starts from scratch", flush=True)
    return release


def save_config(run: Path, cfg: TrainConfig) -> None:
    """The run's ``train_config.json`` (what ``resume_config`` reads), written atomically: other ranks may be reading
    it."""
    tmp = run / f".train_config.json.{os.getpid()}"
    tmp.write_text(json.dumps(cfg.to_dict(), indent=2))
    os.replace(tmp, run / "train_config.json")


def resume_config(cfg: TrainConfig, given: Collection[str] | None = None) -> TrainConfig:
    """For ``--resume``: the run's saved config, overridden by the fields named in ``given`` (the flags a
    command line set) or, without ``given``, by every field of ``cfg`` that is not a default. So ``train --out-dir
    runs/x --resume`` continues as it was, ``--num-iters 300000`` extends it and ``--n-critic 5`` sets a field
    back to its default. ``minutes`` is not carried over: a deadline belongs to the session that set it (a run
    ended by a GPU's minutes goes on without one, here or on the next machine)."""
    saved = Path(cfg.out_dir) / "train_config.json"
    if not saved.is_file():
        return cfg
    defaults = TrainConfig().to_dict()
    ours = {k: v for k, v in cfg.to_dict().items() if (k in given if given is not None else v != defaults[k])}
    return TrainConfig.from_dict({**json.loads(saved.read_text()), "minutes": defaults["minutes"], **ours,
                                  "resume": True})
