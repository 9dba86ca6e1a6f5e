"""The training loop: ``train(cfg)`` trains StarGAN on one dataset or several (the paper's mask vector).

One plain function, commented by phase like the paper's Algorithm: set up; then at every step, for each dataset
in turn, one discriminator update and, every ``n_critic`` steps, one generator update (joint training alternates
datasets exactly like the official ``train_multi``); the learning rate is a pure function of the step (and of
the end, which ``--minutes`` plans from the measured speed: ``budget.py``); log, sample, checkpoint. All
randomness the loop uses (which images, flips, target labels, gradient-penalty weights) is drawn from generators
seeded by (seed, step, rank), so a run resumed at step k replays exactly what an uninterrupted run would have done,
under ``torchrun`` too. Ctrl-C finishes the current step, saves and returns.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torchvision.utils import save_image
from tqdm import tqdm

from ..config import ModelConfig, TrainConfig
from ..data.datasets import ImageLabels, cache_images, load_datasets
from ..data.sampler import StepSampler
from ..domains import DomainSchema
from ..nets.losses import Batch, Nets, d_loss, g_loss
from ..nets.model import Discriminator, Generator, build_discriminator, build_generator
from ..nets.translate import translate_domains
from ..weights.formats import CKPT_NAME
from .budget import Budget
from .state import init_from_release, load_training_state, resume_config, rng_state, save_config, save_training_state


class TrainResult(NamedTuple):
    G: Generator  # the plain modules (not DDP/compiled wrappers), on the training device
    D: Discriminator
    step: int  # steps completed
    logs: dict[str, float]  # the last step's losses


def learning_rate(base: float, step: int, num_iters: int, num_iters_decay: int, warmup: int = 0,
                  start: int = 0) -> float:
    """The paper's schedule: ``base``, then linear decay to 0 over the last ``num_iters_decay`` steps; with
    ``warmup``, a linear ramp over the first ``warmup`` steps after ``start`` (a run ``--init-from`` a release).

    The official code instead subtracts lr / num_iters_decay every 1,000 steps from the *current* lr, which over
    100k steps multiplies it by ~0.999: a near no-op since 2018. We follow the paper. The ramp is for fresh Adam
    state on trained weights: its first updates move every weight by about the full lr, whatever the gradient.
    """
    ramp = min(1.0, (step - start + 1) / warmup) if warmup else 1.0
    return base * ramp * min(1.0, (num_iters - step) / max(1, num_iters_decay))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` = cuda > mps > cpu; under torchrun each process takes GPU ``local_rank``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)


class Setup(NamedTuple):
    model_config: ModelConfig
    G: Generator
    D: Discriminator
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer


def build(cfg: TrainConfig, schema: DomainSchema, device: torch.device) -> Setup:
    """The run's model config, G and D on ``device`` and their Adam optimisers (lrs and betas from ``cfg``)."""
    mcfg = ModelConfig(schema, cfg.image_size, cfg.g_conv_dim, cfg.d_conv_dim, cfg.g_repeat_num, cfg.d_repeat_num,
                       cfg.upsample)
    G, D = build_generator(mcfg).to(device), build_discriminator(mcfg).to(device)
    g_opt = torch.optim.Adam(G.parameters(), cfg.g_lr, (cfg.beta1, cfg.beta2))
    d_opt = torch.optim.Adam(D.parameters(), cfg.d_lr, (cfg.beta1, cfg.beta2))
    return Setup(mcfg, G, D, g_opt, d_opt)


def autocast(cfg: TrainConfig, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """What each forward runs under: bf16 autocast with ``cfg.bf16`` on a CUDA device, else nothing."""
    if cfg.bf16 and device.type == "cuda":
        return lambda: torch.autocast(device.type, torch.bfloat16)
    return contextlib.nullcontext


def make_batch(x: torch.Tensor, labels: torch.Tensor, schema: DomainSchema, dataset: str,
               gen: torch.Generator, device: torch.device, flip: bool = True) -> Batch:
    """A loader's (x (N, 3, H, W), own labels (N, n)) -> Batch: random flip, labels placed in the schema's
    vector, targets = the labels of a shuffled batch (as the official code), gradient-penalty weights."""
    n = x.size(0)
    if flip:  # the official RandomHorizontalFlip, drawn from the step's generator so resume replays it
        x = torch.where((torch.rand(n, generator=gen) < 0.5).view(n, 1, 1, 1).to(x.device), x.flip(3), x)
    label_org = torch.zeros(n, schema.cls_dim)
    label_org[:, schema.dataset_slice(dataset)] = labels  # (N, cls_dim): other datasets' labels stay 0
    label_trg = label_org[torch.randperm(n, generator=gen)]
    alpha = torch.rand(n, 1, 1, 1, generator=gen)
    spec = next(ds for ds in schema.datasets if ds.name == dataset)
    groups = [(schema.group_slice(g.name), g.kind) for g in spec.groups]
    to = dict(device=device, non_blocking=True)
    return Batch(x.to(**to), label_org.to(**to), label_trg.to(**to), schema.condition(label_org, dataset).to(**to),
                 schema.condition(label_trg, dataset).to(**to), groups, alpha.to(**to))


def update(nets: Nets, d_opt: torch.optim.Optimizer, g_opt: torch.optim.Optimizer, batch: Batch,
           cfg: TrainConfig, g_step: bool, amp=contextlib.nullcontext) -> dict[str, torch.Tensor]:
    """The paper's inner loop on one batch: a D step and, if ``g_step``, a G step. Returns detached losses."""
    with amp():  # D: real -> high score and right labels, fake -> low score, gradient penalty
        loss, logs = d_loss(nets, batch, cfg)
    d_opt.zero_grad(set_to_none=True)
    loss.backward()
    d_opt.step()
    if g_step:
        with amp():  # G: fool D into "real, target labels" and reconstruct x_real from x_fake
            loss, g_logs = g_loss(nets, batch, cfg)
        g_opt.zero_grad(set_to_none=True)
        loss.backward()
        g_opt.step()
        logs.update(g_logs)
    return logs


CACHE_LIMIT = 8 * 2**30  # bytes: all of CelebA at 128 px (9.8 GB) would not fit a laptop or a small GPU


def batches(train_set: ImageLabels, sampler: StepSampler, cfg: TrainConfig, device: torch.device,
            cache_dir: Path | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(x (B, 3, S, S), labels (B, n))`` in the sampler's order: gathered from a uint8 cache on
    ``device`` (``cfg.cache``), else decoded per step by a ``DataLoader`` like the official code."""
    size = len(train_set) * 3 * cfg.image_size ** 2  # bytes of the uint8 cache
    if cfg.cache and size > CACHE_LIMIT:
        print(f"the image cache would take {size / 2**30:.1f} GiB (over {CACHE_LIMIT / 2**30:.0f} GiB): decoding "
              "images at every step instead", flush=True)
    if not cfg.cache or size > CACHE_LIMIT:
        yield from DataLoader(train_set, num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                              batch_sampler=sampler)
        return
    cached = cache_images(train_set, cache_dir, cfg.num_workers, progress=cache_dir is not None).to(device)
    for indices in sampler:
        yield cached.batch(indices)


def _step_generator(seed: int, step: int, rank: int, j: int) -> torch.Generator:
    """The RNG of dataset ``j`` at ``step`` on ``rank``: a pure function of them, nothing to save or restore."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1024 + rank) * 16 + j)


def _any_rank(flag: bool | torch.Tensor, world: int, device: torch.device) -> bool:
    """True if ``flag`` is set on any process (a collective under DDP, so that all ranks agree)."""
    if world == 1:
        return bool(flag)  # a tensor flag syncs with the GPU here; a Python one costs nothing
    t = torch.as_tensor(flag, dtype=torch.float32, device=device).reshape(1)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def _min_rank(value: int, world: int, device: torch.device) -> int:
    """The smallest of ``value`` over the processes (a collective under DDP)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def _ctrl_c(stop: threading.Event) -> object:
    """First Ctrl-C: set ``stop`` (finish the step, save, return); a second one aborts at once."""
    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nCtrl-C: finishing this step and saving (press again to abort without saving)", flush=True)
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, handler)


def _finite(nets: list[nn.Module]) -> torch.Tensor:
    return torch.stack([p.isfinite().all() for net in nets for p in net.parameters()]).all()


@torch.no_grad()
def _sample(G: Generator, fixed: list, schema: DomainSchema, path: Path) -> None:
    """Save one paper figure per dataset: each row an input image then its translation to every domain."""
    G.eval()  # no running-stat updates; outputs are the same (per-image normalisation, see model.py)
    for name, x_fixed, c_org in fixed:
        x_fakes = [x for _, x in translate_domains(G, x_fixed, c_org, schema)]
        grid = torch.cat([x_fixed, *x_fakes], dim=3)  # (N, 3, H, (1 + domains) * W)
        save_image((grid.float().cpu() + 1) / 2, path.with_name(f"{path.name}-{name}.jpg"), nrow=1, padding=0)
    G.train()


def train(cfg: TrainConfig, monitor: Callable[[int, Generator, dict], bool] | None = None,
          given: Collection[str] | None = None) -> TrainResult:
    """Train G and D as in the paper; see the module docstring. Returns the nets, the step and last losses.

    ``monitor(step, G, logs)``, if given, is called after every step (``classroom.learn`` watches a run with
    it); returning True stops the run like Ctrl-C (finish the step, save, return). It must not touch G's weights.
    ``given``: the fields a command line set, which override a resumed run's saved config (``resume_config``).
    """
    # ----- setup: processes, device, data, networks, optimisers, resume -------------------------------------------
    cfg = resume_config(cfg, given) if cfg.resume else cfg
    budget = Budget(cfg.minutes, cfg.num_iters) if cfg.minutes else None  # --minutes: the clock starts now
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(cfg.device, local_rank)
    torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest convolutions once
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    own_group = world > 1 and not dist.is_initialized()
    if own_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    schema, datasets = load_datasets(cfg)
    if cfg.image_size % 2 ** cfg.d_repeat_num or cfg.image_size % 4:
        raise ValueError(f"image_size {cfg.image_size} must be a multiple of 4 and of 2**d_repeat_num "
                         f"({2 ** cfg.d_repeat_num}): D's classifier kernel is image_size / 2**d_repeat_num")
    mcfg, G, D, g_opt, d_opt = build(cfg, schema, device)
    run, start = Path(cfg.out_dir), 0
    if cfg.resume:
        start = load_training_state(run / CKPT_NAME, {"G": G, "D": D}, {"g_opt": g_opt, "d_opt": d_opt},
                                    mcfg)["step"]
    elif (run / CKPT_NAME).exists():
        raise FileExistsError(f"{run / CKPT_NAME} exists: pass --resume to continue it, or another --out-dir")
    elif cfg.init_from:  # a run lost with its machine goes on from the committed release
        init_from_release(cfg.init_from, G, D, mcfg, rank)
        start = cfg.init_step  # the schedule and the data order go on from there
    keep = None  # lambda_keep: the release, frozen, and the datasets whose edits it keeps
    if cfg.lambda_keep:
        if not cfg.init_from:
            raise ValueError("--lambda-keep keeps the edits of the --init-from release: name that release")
        teacher = build_generator(mcfg).to(device)
        known = {ds.name for ds in init_from_release(cfg.init_from, teacher, None, mcfg, rank).schema.datasets}
        keep = (teacher.eval().requires_grad_(False), known)
    if rank == 0:
        (run / "samples").mkdir(parents=True, exist_ok=True)
        save_config(run, cfg)

    def state(step: int) -> dict:  # all mutable training state, in one weights_only-loadable dict
        return {"G": G.state_dict(), "D": D.state_dict(), "g_opt": g_opt.state_dict(), "d_opt": d_opt.state_dict(),
                "step": step, "model_config": mcfg.to_dict(), "train_config": cfg.to_dict(), "rng": rng_state()}

    # Wrappers share G's and D's parameters: DDP averages gradients across processes; torch.compile speeds up G
    # (not D: the gradient penalty needs a double backward, which compiled graphs do not support), on a GPU and
    # on the CPU alike (docs/EXPERIMENTS.md).
    G_run, D_run = G, D
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        G_run, D_run = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    if cfg.compile:
        G_run = torch.compile(G_run)
    nets = Nets(G_run, D_run)
    amp = autocast(cfg, device)

    # Data: one endless stream per dataset whose batches are a pure function of the step (see data.StepSampler),
    # from images decoded once (cfg.cache) or, as the official code, decoded again at every step.
    streams = [(name, batches(train_set, StepSampler(len(train_set), cfg.batch_size, cfg.seed, start, rank, world),
                              cfg, device, run / "cache" if rank == 0 or world == 1 else None))
               for name, train_set, _ in datasets]
    fixed = []  # held-out images for the sample grids: (dataset, x (n, 3, H, W), c_org (n, cls_dim))
    for name, _, test_set in datasets:
        x, labels = map(torch.stack, zip(*(test_set[i] for i in range(min(cfg.n_samples, len(test_set)))), strict=True))
        c_org = torch.zeros(len(x), schema.cls_dim)
        c_org[:, schema.dataset_slice(name)] = labels
        fixed.append((name, x.to(device), c_org.to(device)))
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter  # lazy: a slow import
        writer = SummaryWriter(run / "logs", purge_step=start)

    stop, bad = threading.Event(), torch.zeros((), dtype=torch.bool, device=device)
    old_handler = _ctrl_c(stop)
    logs: dict[str, torch.Tensor] = {}
    step, end = start, cfg.num_iters  # end: num_iters, or with --minutes the step the run reaches in time
    try:
        pbar = tqdm(range(start, cfg.num_iters), initial=start, total=cfg.num_iters, disable=rank != 0,
                    dynamic_ncols=True)
        for step in pbar:
            # ----- learning rate: a pure function of the step and the end (the paper's linear decay) ----------------
            for opt, base in ((g_opt, cfg.g_lr), (d_opt, cfg.d_lr)):
                for group in opt.param_groups:
                    group["lr"] = learning_rate(base, step, end, cfg.num_iters_decay, cfg.warmup_iters,
                                                cfg.init_step if cfg.init_from else 0)

            # ----- for each dataset: a D step, and every n_critic steps a G step (paper section 3.2 / appendix) ----
            for j, (name, stream) in enumerate(streams):
                x, labels = next(stream)
                batch = make_batch(x, labels, schema, name, _step_generator(cfg.seed, step, rank, j), device, cfg.flip)
                g_step = (step + 1) % cfg.n_critic == 0
                if g_step and keep is not None and name in keep[1]:
                    with torch.no_grad(), amp():
                        batch.x_keep = keep[0](batch.x_real, batch.c_trg)
                step_logs = update(nets, d_opt, g_opt, batch, cfg, g_step, amp)
                bad |= ~torch.stack([v for k, v in step_logs.items() if k in ("D/loss", "G/loss")]).isfinite().all()
                logs.update({k + (f"/{name}" if len(streams) > 1 else ""): v for k, v in step_logs.items()})

            # ----- NaN/inf guard, log, sample, checkpoint ------------------------------------------------------------
            if monitor is not None and monitor(step + 1, G, logs):
                stop.set()
            done, stopping = step + 1, _any_rank(stop.is_set(), world, device)
            if budget is not None:  # re-planned after every step from the speed measured so far; all ranks agree
                end = pbar.total = _min_rank(budget.end(done), world, device)
            finished = done >= end
            saving = done % cfg.ckpt_every == 0 or finished or stopping
            if done % cfg.log_every == 0 or saving:
                if _any_rank(bad | ~_finite([G, D]), world, device):
                    values = ", ".join(f"{k}={float(v):.4g}" for k, v in logs.items())
                    raise FloatingPointError(f"step {done}: a loss or weight became NaN/inf ({values}). Stopped; "
                                             f"the last good checkpoint {run / CKPT_NAME} is intact")
                if writer is not None:
                    floats = {k: float(v) for k, v in logs.items()}
                    for k, v in floats.items():
                        writer.add_scalar(k, v, done)
                    writer.add_scalar("lr/G", g_opt.param_groups[0]["lr"], done)
                    shown = ("D/loss", "G/loss_cls", "G/loss_rec")  # the rest is in TensorBoard
                    pbar.set_postfix({k: f"{v:.3f}" for k, v in floats.items() if "/".join(k.split("/")[:2]) in shown},
                                     refresh=False)
            if rank == 0 and done % cfg.sample_every == 0:
                _sample(G, fixed, schema, run / "samples" / f"{done:06d}")
            if finished and end < cfg.num_iters:  # --minutes ended it: the run's schedule ends here
                cfg = replace(cfg, num_iters=end)
                if rank == 0:
                    save_config(run, cfg)
            if rank == 0 and saving:
                save_training_state(run / CKPT_NAME, state(done))
            if stopping:
                if rank == 0:
                    print(f"saved {run / CKPT_NAME} at step {done}; continue with --resume", flush=True)
                break
            if finished:
                break
        else:
            done = cfg.num_iters
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
        if writer is not None:
            writer.close()
        if own_group:
            dist.destroy_process_group()
    return TrainResult(G, D, max(done, start), {k: float(v) for k, v in logs.items()})
