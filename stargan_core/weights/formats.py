"""Reading and writing network weights: our releases, the official checkpoints, and re-implementations.

A **release** is a folder with ``model.safetensors`` (the generator), ``config.json`` (``ModelConfig``) and
optionally ``discriminator.safetensors`` (for attribute estimation). Releases load with ``strict=True``.
We also read, always with ``torch.load(weights_only=True)`` so no file can run code on load:

* the official ``NNNN-G.ckpt`` / ``NNNN-D.ckpt`` (a plain state_dict with our exact key names);
* the goodfellowliu/Lornatang layout ``{"state_dict": ...}`` (same layers, same order, other names, maybe
  prefixed ``_orig_mod.`` or ``module.``), mapped onto ours by position with every shape checked;
* a training checkpoint of ours (a dict with ``G``, ``D`` and ``model_config``).

It also writes and reads the **training state** (``RUN_DIR/checkpoint.pt``: G, D, both optimisers, step,
configs, RNG states) that makes resume exact; it is written to a temp file that replaces the old one in a single
``os.replace``, so a save killed half-way leaves the previous checkpoint intact.

Every failure is a ``CheckpointError`` whose message names the file and what is wrong with it.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
from dataclasses import replace
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


def resize_from_deconv(weight: torch.Tensor) -> torch.Tensor:
    """A 4x4 stride-2 transposed conv's weight (in, out, 4, 4) -> the 3x3 conv weight (out, in, 3, 3) that, after
    a nearest x2 resize, comes closest to it in least squares. The deconv makes each output parity (a, b) from its
    own 2x2 sub-kernel; a resize conv's four sub-kernels are sums of one 3x3 kernel, so what the four share is kept
    and their disagreement, the period-2 checkerboard, is dropped (exact when they already agree)."""
    # Per axis, rows = (parity, input offset) (0,-1), (0,0), (1,0), (1,+1): the deconv tap there is W[3], W[1],
    # W[2], W[0]; the resize conv's is V[0], V[1]+V[2], V[0]+V[1], V[2] (it sees x[m-1], x[m], x[m], x[m+1]).
    per_axis = torch.tensor([[1., 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=torch.float64)
    taps = [3, 1, 2, 0]
    fit = torch.linalg.pinv(torch.kron(per_axis, per_axis))  # (9, 16): 2-D taps are products of the per-axis ones
    c_in, c_out = weight.shape[:2]
    target = weight.double()[:, :, taps][:, :, :, taps].reshape(c_in, c_out, 16)
    return (target @ fit.T).reshape(c_in, c_out, 3, 3).transpose(0, 1).to(weight.dtype).contiguous()


def to_resize_upsampling(G: Generator, cfg: ModelConfig) -> tuple[Generator, ModelConfig]:
    """A paper (deconv) generator as a ``--upsample resize`` one: every other weight copied, each transposed conv
    replaced by ``resize_from_deconv``. A starting point for fine-tuning, not the same function: a trained
    deconv G uses its checkerboard: the fit leaves 64% of the shipped model's up-conv weights, and its output on 8
    CelebA faces moves by 0.4 on average (on the [-1, 1] scale)."""
    new_cfg = replace(cfg, upsample="resize")
    R = build_generator(new_cfg)
    up = {f"{name}.weight" for name, m in G.named_modules() if isinstance(m, nn.ConvTranspose2d)}
    sd = {(k.replace(".weight", ".1.weight") if k in up else k): (resize_from_deconv(v) if k in up else v)
          for k, v in G.state_dict().items()}
    R.load_state_dict(sd, strict=True)
    return R, new_cfg


def widen_generator(G: Generator, cfg: ModelConfig, conv_dim: int, noise: float = 0.05,
                    seed: int = 0) -> tuple[Generator, ModelConfig]:
    """G with ``conv_dim`` base channels instead of ``cfg.g_conv_dim``, computing the same function: Net2WiderNet
    (Chen, Goodfellow & Shlens 2016, "Net2Net"). Each widened layer keeps its channels and adds copies of randomly
    chosen ones (the same choice for every tensor of one width, so the residual sums line up); the layer reading
    them divides each copied input channel's weights by its number of copies. InstanceNorm normalises each channel
    on its own, so a copy is normalised exactly like its original. With ``noise`` 0 the output is unchanged; the
    copies' incoming weights get Gaussian noise of ``noise`` times the layer's weight std, or they would receive
    identical updates and stay copies forever: at 0.05, the 35,400-iteration release widened from 64 to 96 base
    channels (8.4M to 18.9M parameters) moves by 0.006 on average on 8 CelebA faces ([-1, 1] scale). A wider G can
    then be fine-tuned from a release on a CPU instead of trained from scratch."""
    if conv_dim < cfg.g_conv_dim:
        raise ValueError(f"widen_generator: {conv_dim} base channels is narrower than the model's {cfg.g_conv_dim}")
    new_cfg = replace(cfg, g_conv_dim=conv_dim)
    rng = torch.Generator().manual_seed(seed)
    maps: dict[int, torch.Tensor] = {}

    def copies_of(width: int) -> torch.Tensor:
        """For each channel of the wider tensor, the channel of the old one it copies."""
        if width not in maps:
            extra = width // cfg.g_conv_dim * conv_dim - width
            maps[width] = torch.cat([torch.arange(width), torch.randint(width, (extra,), generator=rng)])
        return maps[width]

    convs = [name for name, m in G.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    sd = {}
    for name, m in G.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            assert m.bias is None, "StarGAN's G has no conv biases"
            w0 = m.weight.detach()
            w, (o_dim, i_dim) = w0, ((1, 0) if isinstance(m, nn.ConvTranspose2d) else (0, 1))
            if name != convs[0]:  # the first conv reads the image and the condition: not widened
                src = copies_of(w.shape[i_dim])
                shape = [1] * w.dim()
                shape[i_dim] = -1
                w = w.index_select(i_dim, src) / torch.bincount(src)[src].view(shape).to(w.dtype)
            if name != convs[-1]:  # the last conv writes RGB: not widened
                n_old, src = w.shape[o_dim], copies_of(w.shape[o_dim])
                w = w.index_select(o_dim, src).clone()
                new = w.narrow(o_dim, n_old, len(src) - n_old)
                new += noise * w0.float().std().item() * torch.randn(new.shape, generator=rng).to(w.dtype)
            sd[f"{name}.weight"] = w
        elif isinstance(m, nn.InstanceNorm2d):
            src = copies_of(m.num_features)
            for k, v in m.state_dict().items():
                sd[f"{name}.{k}"] = v if k == "num_batches_tracked" else v[src]
    W = build_generator(new_cfg)
    W.load_state_dict(sd, strict=True)
    return W, new_cfg


def _positions(schema: DomainSchema, condition: bool) -> list[tuple[str, str]]:
    """What each position of the label vector (or, with ``condition``, the generator's condition) means."""
    out = [(ds.name, lab) for ds in schema.datasets for lab in ds.labels]
    if condition and len(schema.datasets) > 1:
        out += [(ds.name, "<mask>") for ds in schema.datasets]
    return out


def _regrow(weight: torch.Tensor, dim: int, old: list, new: list) -> torch.Tensor:
    """``weight`` with slices along ``dim`` moved from the ``old`` layout to the ``new`` one; new slices are 0."""
    shape = list(weight.shape)
    shape[dim] = len(new) + (weight.shape[dim] - len(old))
    out = weight.new_zeros(shape)
    off = weight.shape[dim] - len(old)  # G's first conv reads 3 image channels before the condition
    out.narrow(dim, 0, off).copy_(weight.narrow(dim, 0, off))
    for i, key in enumerate(old):
        out.select(dim, off + new.index(key)).copy_(weight.select(dim, off + i))
    return out


def to_schema(G: Generator, D: Discriminator | None, cfg: ModelConfig,
              schema: DomainSchema) -> tuple[Generator, Discriminator | None, ModelConfig]:
    """A release made joint with more datasets (the paper's mask vector): G's first conv gets zero weights for the
    new labels and mask channels, D's classifier zero rows for the new labels. Every old label keeps its weights,
    so G(x, [old labels | 0 | mask of the old dataset]) is exactly the release's G(x, old labels)."""
    old_g, new_g = _positions(cfg.schema, True), _positions(schema, True)
    old_d, new_d = _positions(cfg.schema, False), _positions(schema, False)
    if not set(old_d) <= set(new_d) or len(cfg.schema.datasets) > 1 and not set(old_g) <= set(new_g):
        raise CheckpointError(f"the new labels ({', '.join(schema.labels)}) do not contain the release's "
                              f"({', '.join(cfg.schema.labels)})")
    new_cfg = replace(cfg, schema=schema)
    G2, sd = build_generator(new_cfg), G.state_dict()
    first = next(k for k, v in sd.items() if v.ndim == 4)  # main.0.weight: (conv_dim, 3 + c_dim, 7, 7)
    G2.load_state_dict({**sd, first: _regrow(sd[first], 1, old_g, new_g)}, strict=True)
    D2 = None
    if D is not None:
        D2, sd = build_discriminator(new_cfg), D.state_dict()
        D2.load_state_dict({**sd, "conv2.weight": _regrow(sd["conv2.weight"], 0, old_d, new_d)}, strict=True)
    return G2, D2, new_cfg


# ----- training state ---------------------------------------------------------------------------------------------
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
