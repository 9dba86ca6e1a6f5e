"""Model surgery: a release's weights made to fit another architecture, so that a new run starts from them.

``train --init-from`` uses these when the run's model differs from the release's: transposed convolutions become
resize convolutions (``to_resize_upsampling``), a narrow G becomes a wider one that computes the same function
(``widen_generator``, Net2Net), and a single-dataset release becomes joint with zero-initialised inputs for the new
labels and the mask vector (``to_schema``, exact at step 0).
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..config import ModelConfig
from ..domains import DomainSchema
from ..nets.model import Discriminator, Generator, build_discriminator, build_generator
from .formats import CheckpointError


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
    deconv G uses its checkerboard, which the fit drops (how far the output moves: ``docs/EXPERIMENTS.md``)."""
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
    identical updates and stay copies forever; at the default the output barely moves (``docs/EXPERIMENTS.md``).
    A wider G can then be fine-tuned from a release on a CPU instead of trained from scratch."""
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
