"""Reading and writing network weights: our releases, the official checkpoints, and re-implementations.

A **release** is a folder with ``model.safetensors`` (the generator), ``config.json`` (``ModelConfig``) and
optionally ``discriminator.safetensors`` (for attribute estimation). Releases load with ``strict=True``.
We also read, always with ``torch.load(weights_only=True)`` so no file can run code on load:

* the official ``NNNN-G.ckpt`` / ``NNNN-D.ckpt`` (a plain state_dict with our exact key names);
* the goodfellowliu/Lornatang layout ``{"state_dict": ...}`` (same layers, same order, other names, maybe
  prefixed ``_orig_mod.`` or ``module.``), mapped onto ours by position with every shape checked;
* a training checkpoint of ours (a dict with ``G``, ``D`` and ``model_config``).

Writing and reading the training state that makes resume exact is ``training/state.py``; fitting a release's
weights to another architecture is ``surgery.py``.

Every failure is a ``CheckpointError`` whose message names the file and what is wrong with it.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import ModelConfig
from ..domains import CELEBA5, JOINT, JOINT_LONDON, RAFD8, DomainSchema
from ..nets.model import Discriminator, Generator, build_discriminator, build_generator

WEIGHTS_NAME, CONFIG_NAME, D_WEIGHTS_NAME = "model.safetensors", "config.json", "discriminator.safetensors"
CKPT_NAME = "checkpoint.pt"  # training state inside a run folder
_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and (Distributed)DataParallel wrappers
_G_SCHEMAS = {5: CELEBA5, 8: RAFD8, 9: JOINT_LONDON, 15: JOINT}  # c_dim -> schema (generator condition length)
_D_SCHEMAS = {5: CELEBA5, 8: RAFD8, 7: JOINT_LONDON, 13: JOINT}  # c_dim -> schema (discriminator label count)


class CheckpointError(ValueError):
    """A weights file that cannot be used; the message says which file and why."""


def read_state_dict(path: str | Path) -> dict:
    """Read a .safetensors file or a torch pickle safely (``weights_only=True``); wrap every failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(f"{path}: refused: not a plain weights file (loading it would run Python "
                                  "code; only tensors are loaded)") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (unreadable pickle)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated weights file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120] if str(e) else 'unexpected end of file'})") from None
    except Exception as e:  # the unpickler fed random bytes can fail in any way (KeyError, IndexError, ...)
        raise CheckpointError(f"{path}: not a weights file ({type(e).__name__} while reading it)") from None


def _unwrap(obj: object, path: Path, net: str) -> tuple[dict, ModelConfig | None]:
    """Find the state_dict of ``net`` ('G' or 'D') inside whatever the file held."""
    cfg = None
    if isinstance(obj, dict) and net in obj and "model_config" in obj:  # our training checkpoint
        cfg, obj = ModelConfig.from_dict(obj["model_config"]), obj[net]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # Lornatang / goodfellowliu
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a StarGAN checkpoint (no tensor state_dict inside)")
    sd = {}
    for k, v in obj.items():
        for p in _PREFIXES:
            k = k.removeprefix(p)
        sd[k] = v
    return sd, cfg


def _conv_weights(sd: dict) -> list[torch.Tensor]:
    return [v for v in sd.values() if v.ndim == 4]


def _infer_config(sd: dict, net: str, path: Path, schema: DomainSchema | None,
                  image_size: int | None) -> ModelConfig:
    """Read the architecture off the weight shapes (official and re-implementation layouts)."""
    convs = _conv_weights(sd)
    if len(convs) < 3:
        raise CheckpointError(f"{path}: not a StarGAN {'generator' if net == 'G' else 'discriminator'} "
                              "(too few convolution weights)")
    if net == "G":  # 1 stem + 2 down + 2 per residual block + 2 up + 1 last conv
        conv_dim, c_dim, repeat = convs[0].shape[0], convs[0].shape[1] - 3, (len(convs) - 6) // 2
        table, size = _G_SCHEMAS, image_size or _size_from_name(path) or 128
    else:  # (repeat) stride-2 convs, then conv1 (src) and conv2 (cls, kernel = image_size / 2**repeat)
        conv_dim, c_dim, repeat = convs[0].shape[0], convs[-1].shape[0], len(convs) - 2
        table, size = _D_SCHEMAS, convs[-1].shape[-1] * 2 ** repeat
    if schema is None:
        if c_dim not in table:
            raise CheckpointError(f"{path}: label size {c_dim} matches no built-in schema; pass the schema "
                                  "the model was trained with")
        schema = table[c_dim]
    want = schema.c_dim if net == "G" else schema.cls_dim
    if want != c_dim:
        raise CheckpointError(f"{path}: the weights expect {c_dim} labels but the schema has {want}")
    dims = dict(d_conv_dim=conv_dim, d_repeat_num=repeat)
    if net == "G":  # the last up conv: 4x4 transposed (the paper) or 3x3 after a resize (model.up_conv)
        dims = dict(g_conv_dim=conv_dim, g_repeat_num=repeat, upsample="resize" if convs[-2].shape[-1] == 3
                    else "deconv")
    return ModelConfig(schema=schema, image_size=size, **dims)


def _size_from_name(path: Path) -> int | None:
    m = re.search(r"(\d{2,4})x\1", path.name)
    return int(m.group(1)) if m else None


def _match_keys(sd: dict, model: nn.Module, path: Path) -> dict:
    """Map a state_dict onto ``model``'s keys: by name if they agree, else by position; shapes checked."""
    ours = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    theirs = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    if set(theirs) != set(ours):  # another implementation's names: same layers in the same order
        if len(theirs) != len(ours):
            raise CheckpointError(f"{path}: has {len(theirs)} weight tensors, this architecture needs {len(ours)}")
        theirs = dict(zip(ours, theirs.values(), strict=True))
    for k, v in ours.items():
        if theirs[k].shape != v.shape:
            raise CheckpointError(f"{path}: wrong shape for {k}: file has {tuple(theirs[k].shape)}, "
                                  f"the model needs {tuple(v.shape)}")
    # num_batches_tracked is bookkeeping that older PyTorch versions did not save; it never affects output.
    extra = {k: torch.tensor(0) for k in model.state_dict() if k.endswith("num_batches_tracked")}
    return {**extra, **{k: v.float() for k, v in theirs.items()}}


def _load(path: str | Path, net: str, schema: DomainSchema | None, image_size: int | None):
    path = Path(path)
    if path.is_dir() or path.suffix == ".safetensors":  # our release
        folder = path if path.is_dir() else path.parent
        cfg_file = folder / CONFIG_NAME
        if not cfg_file.is_file():
            raise CheckpointError(f"{folder}: no {CONFIG_NAME} next to the weights")
        try:
            cfg = ModelConfig.load(cfg_file)
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{cfg_file}: unreadable config ({e})") from None
        weights = folder / (WEIGHTS_NAME if net == "G" else D_WEIGHTS_NAME) if path.is_dir() else path
        sd = read_state_dict(weights)
        path = weights
    else:
        sd, cfg = _unwrap(read_state_dict(path), path, net)
        cfg = cfg or _infer_config(sd, net, path, schema, image_size)
    model = build_generator(cfg) if net == "G" else build_discriminator(cfg)
    model.load_state_dict(_match_keys(sd, model, path), strict=True)
    return model, cfg


def load_generator(path: str | Path, schema: DomainSchema | None = None,
                   image_size: int | None = None) -> tuple[Generator, ModelConfig]:
    """Load a generator (fp32, CPU) from a release folder/file, an official .ckpt or a re-implementation's file.

    ``schema`` is needed only for official-layout files whose label size matches no built-in schema.
    """
    return _load(path, "G", schema, image_size)


def load_discriminator(path: str | Path, schema: DomainSchema | None = None) -> tuple[Discriminator, ModelConfig]:
    """Load a discriminator the same way (its image size is read off the classifier kernel)."""
    return _load(path, "D", schema, None)


def save_release(G: Generator, config: ModelConfig, folder: str | Path, dtype: torch.dtype = torch.float16,
                 D: Discriminator | None = None) -> Path:
    """Write a release: ``model.safetensors`` + ``config.json`` (+ ``discriminator.safetensors`` if D given)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for net, name in ((G, WEIGHTS_NAME), (D, D_WEIGHTS_NAME)):
        if net is not None:
            sd = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous().cpu()
                  for k, v in net.state_dict().items()}
            save_file(sd, folder / name, metadata={"format": "pt", "stargan_config_version": str(config.version)})
    config.save(folder / CONFIG_NAME)
    return folder


def export_run(run_dir: str | Path, out_dir: str | Path, dtype: str = "float16",
               with_discriminator: bool = True) -> Path:
    """Turn a training run (``RUN_DIR/checkpoint.pt``, or that file) into a release folder."""
    ckpt = Path(run_dir) / CKPT_NAME if Path(run_dir).is_dir() else Path(run_dir)
    G, cfg = load_generator(ckpt)
    D = load_discriminator(ckpt)[0] if with_discriminator else None
    return save_release(G, cfg, out_dir, dtype=getattr(torch, dtype), D=D)
