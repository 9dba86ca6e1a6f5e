"""``python -m benchmarks train``: training images per second, the official way against the project's.

It times the training loop's own update (``training.loop.update``: a D step, and a G step every ``n_critic``) on
the loop's own nets and optimisers (``training.loop.build``) and real CelebA batches, two ways: the plain path
(fp32, eager, JPEGs decoded per step as the official code does) and the project's (images decoded once into a
uint8 cache on the device; with ``--compile`` a compiled G), and prints images/s and their ratio. An iteration is
averaged over whole ``n_critic`` periods, so it matches what the progress bar shows.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from . import SHARED_DATA
from .timing import machine_load

TRAIN_CONFIGS = {  # name -> TrainConfig overrides
    "shipped": dict(d_conv_dim=32),  # checkpoints/celeba128: the paper's G at 128 px, D at half width
    "paper": {},
    "cpu64": dict(image_size=64, g_conv_dim=32, d_conv_dim=32, d_repeat_num=5),  # the earlier CPU-trained model
    "tiny": dict(image_size=32, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=3, batch_size=8),
}


def time_train(cfg, device: torch.device, batches, periods: int = 1) -> float:
    """Seconds per iteration of ``train.update`` for a ``TrainConfig`` on ``device``, each step drawing its batch
    from ``batches`` (an iterator of ``(x, labels)``), after one warm-up ``n_critic`` period."""
    from stargan_core.domains import CELEBA5
    from stargan_core.nets.losses import Nets
    from stargan_core.training.loop import autocast, build, make_batch, update

    torch.manual_seed(cfg.seed)
    _, G, D, g_opt, d_opt = build(cfg, CELEBA5, device)  # exactly the training loop's nets and optimisers
    nets = Nets(torch.compile(G) if cfg.compile else G, D)
    amp = autocast(cfg, device)
    gen = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for period in range(1 + periods):
        if period == 1:  # the first period warms up (allocations, cudnn autotune, compilation, loader workers)
            sync()
            t0 = time.perf_counter()
        for i in range(cfg.n_critic):
            x, labels = next(batches)
            batch = make_batch(x, labels, CELEBA5, "celeba", gen, device)
            update(nets, d_opt, g_opt, batch, cfg, i == cfg.n_critic - 1, amp)
    sync()
    return (time.perf_counter() - t0) / (periods * cfg.n_critic)


def train(args: argparse.Namespace) -> None:
    """Images per second of the plain path (fp32, eager, JPEGs decoded per step by a one-worker loader, as the
    official code trains) and of the project's (images decoded once into a uint8 cache on the device, cuDNN
    autotuning), on real CelebA images, and their ratio."""
    from stargan_core.config import TrainConfig
    from stargan_core.data.datasets import CELEBA_CROP, ImageLabels, read_celeba
    from stargan_core.data.sampler import StepSampler
    from stargan_core.domains import CELEBA5_ATTRS
    from stargan_core.training.loop import batches, pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, device {device} ({where}), bf16={args.bf16}, compile={args.compile}, "
          f"{machine_load()}; data {args.data}")
    records, _ = read_celeba(args.data, CELEBA5_ATTRS)
    for name in args.config:
        cfg = TrainConfig(**{**TRAIN_CONFIGS[name], "bf16": args.bf16, "compile": args.compile})
        ds = ImageLabels(records[:max(64, cfg.batch_size * 4 * (1 + args.periods) * cfg.n_critic)], cfg.image_size,
                         CELEBA_CROP)
        sampler = StepSampler(len(ds), cfg.batch_size, cfg.seed)
        secs = {path: time_train(replace(cfg, compile=cfg.compile and path == "project"), device,  # plain: eager
                                 batches(ds, sampler, replace(cfg, cache=path == "project", num_workers=1), device,
                                         None), args.periods) for path in ("plain", "project")}
        ips = {path: cfg.batch_size / s for path, s in secs.items()}
        print(f"  {name:<8} {cfg.image_size} px, batch {cfg.batch_size}: plain {secs['plain']:.4f} s/iter "
              f"({ips['plain']:.1f} images/s), project {secs['project']:.4f} s/iter ({ips['project']:.1f} images/s)"
              f": {ips['project'] / ips['plain']:.2f}x", flush=True)


def add_parser(sub) -> None:
    """The ``train`` command and its options."""
    p = sub.add_parser("train", help="training images/s: plain (decode per step) vs the project's path")
    p.add_argument("--device", default="auto", help="auto = cuda > mps > cpu")
    p.add_argument("--periods", type=int, default=1, help="timed n_critic periods (5 iterations each)")
    p.add_argument("--config", nargs="+", default=["shipped"], choices=list(TRAIN_CONFIGS))
    p.add_argument("--data", default=str(SHARED_DATA / "celeba_subset"), help="a CelebA folder")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    p.set_defaults(func=train)
