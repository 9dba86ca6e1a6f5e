"""Benchmarks, measured rather than assumed: ``python -m stargan_core.bench {infer,train,blend}``.

``infer`` prints the path the pipeline chose at load (``inference.choose_path``) with each candidate's time, times
the official 128 px generator ``Generator(64, 5, 6)`` (random weights, or a model given with ``--model``) the
naive way (fp32, eager, one face per forward, as the official test does) against the chosen path (faces
batched), measures that path's pixel error against fp32 on real aligned faces, times whole edits of photos from
``../shared/data/photos`` (detection computes each face's x_ref; a re-edit is one forward per face), and reports
the process's peak memory. Timings are medians over interleaved repeats, so a busy machine slows both sides alike;
on a shared machine ``--threads 1 --cpu-time`` gives figures that other processes do not inflate.

``train`` times the training loop's own update (``train.update``: a D step, and a G step every ``n_critic``)
on real CelebA batches, two ways: the plain path (fp32, eager, JPEGs decoded per step as the official code does)
and the project's (images decoded once into a uint8 cache on the device; with ``--compile`` a compiled G), and
prints images/s and their ratio;
an iteration is averaged over whole ``n_critic`` periods, so it matches what the progress bar shows.

``serve`` starts ``app.py`` in its own process (the paper's 128 px nets with random weights, or ``--model``), runs
N concurrent ``gradio_client`` users that each edit photos through the ``/edit`` endpoint, and prints latency
percentiles, throughput and the server's peak RSS (``VmHWM``) for N = 1, 8, 16.

``blend`` measures the head-shaped, denoised, edge-aware paste-back (``blend.paste_back``) against the square one it
replaced, on every photo of ``../shared/data/photos`` with a face and each of the paper's test edits (blended as the
pipeline blends them: through the hair region for a hair colour, the head mask otherwise): the mean change in the
crop square outside the mask, the high-frequency (Laplacian) energy of the pasted change inside it, and how often an
attribute classifier still finds the target attribute after re-detecting and re-aligning the edited photo (against
the classifier on the model's raw crop, and on crops that need no paste: the real face plus the model's change,
raw, denoised (the best any blend that adds the denoised change can do), and denoised through the mask: what is
left to lose is the paste and the re-detection). One more row adds the same denoised change to the model's own
reconstruction G(x, c_org) instead of the photo: the judge, trained on real photos, finds a hair colour there far
more often than on the photo with the very same change (83% against 67% on 503 held-out hair edits with the
31,400-iteration model, 90.5% against 77.7% on 148 with the 32,450 one), so part of the gap between the raw crop
and any blend is the model's rendering of the whole crop, which no blend that keeps the photo can carry over.
``--celeba N`` adds N held-out CelebA images (the photos give about 75 edits, a small sample: one edit is 1.3
points); G runs on a named path (``--path``), not the load-time race, so the figures do not depend on how busy the
machine is. ``--pictures DIR`` saves before / square / head-shaped side-by-sides.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

PHOTOS = Path(os.environ.get("STARGAN_SHARED_DATA", Path(__file__).resolve().parents[1] / "../shared/data")) / "photos"


CLOCK = time.perf_counter  # wall clock; --cpu-time switches to process CPU time (meaningful with --threads 1)


def _timings(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each function, run in turn ``repeats`` times after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = CLOCK()
            fn()
            times[k].append(CLOCK() - t)
    return times


def _median_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function over interleaved repeats."""
    return {k: statistics.median(v) for k, v in _timings(fns, repeats).items()}


def _pipeline(model: str | None, with_d: bool):
    from .config import ModelConfig
    from .model import build_discriminator, build_generator
    from .pipeline import StarGANPipeline

    if model:
        return StarGANPipeline.from_pretrained(model)
    cfg = ModelConfig()  # the paper's 128 px nets: Generator(64, 5, 6), Discriminator(128, 64, 5, 6)
    torch.manual_seed(0)
    return StarGANPipeline(build_generator(cfg), cfg, build_discriminator(cfg) if with_d else None)


def infer(args: argparse.Namespace) -> None:
    """Per-face generator latency (naive vs pipeline), pixel error, end-to-end photo edits, peak memory."""
    from .faces import align
    from .images import load_image

    if args.threads:  # before the pipeline: its paths size their thread pools at load
        torch.set_num_threads(args.threads)
    pipe = _pipeline(args.model, not args.no_d)
    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    G, size, c_dim, generate = pipe.G, pipe.config.image_size, pipe.config.schema.c_dim, pipe.generate
    print(f"torch {torch.__version__}, {_versions()}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
          f"CPUs, {'CPU' if args.cpu_time else 'wall'} time")
    print(f"\nload-time choice (wall clock, probe faces): {pipe.path.summary()}")
    from .inference import choose_path
    print(f"\nevery candidate, without the time budget: {choose_path(G, size, budget_s=600).summary()}")
    photo = load_image(PHOTOS / "facenet_multiface.jpg")
    x6 = align(photo, pipe.detect(photo), size)  # 6 real aligned faces (N, 3, S, S)
    c6 = torch.eye(c_dim)[torch.arange(len(x6)) % c_dim]

    def naive(x: torch.Tensor) -> None:  # the official test: fp32, eager, no_grad, one face at a time
        with torch.no_grad():
            for i in range(len(x)):
                G(x[i:i + 1], c6[i:i + 1])

    t = _timings({"naive": lambda: naive(x6[:1]), "pipe1": lambda: generate(x6[:1], c6[:1]),
                  "naive6": lambda: naive(x6), "pipe6": lambda: generate(x6, c6)}, args.repeats)
    med, best = ({k: f(v) for k, v in t.items()} for f in (statistics.median, min))
    print(f"\ngenerator, ms per face, median (best)   naive fp32 eager   {pipe.path.name:<16} speed-up")
    for n, a, b in ((1, "naive", "pipe1"), (len(x6), "naive6", "pipe6")):
        print(f"  {n} face(s) per forward             {med[a] / n * 1e3:7.1f} ({best[a] / n * 1e3:5.1f})"
              f"   {med[b] / n * 1e3:6.1f} ({best[b] / n * 1e3:5.1f})"
              f"   {med[a] / med[b]:4.2f}x ({best[a] / best[b]:4.2f}x)")
    with torch.no_grad():
        diff = (generate(x6, c6) - G(x6, c6)).abs() * 127.5  # in 0..255 pixel levels
    print(f"pixel error of the pipeline path vs fp32 on 6 real faces: mean {diff.mean():.3f}/255, "
          f"99.9th percentile {diff.flatten().quantile(0.999):.2f}/255")
    _end_to_end(pipe, args.repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"\npeak memory (max RSS of this process, torch and MTCNN included): {peak:.0f} MiB")


def _versions() -> str:
    """The ONNX Runtime version, or that it is missing (its paths are then not candidates)."""
    try:
        import onnxruntime
    except ImportError:
        return "no onnxruntime"
    return f"onnxruntime {onnxruntime.__version__}"


def _end_to_end(pipe, repeats: int) -> None:
    """Whole edits: decode + detect + align + estimate + translate (x_fake and x_ref) + paste back."""
    print("\nend to end, hair -> blond (detect: MTCNN + crops + D's estimate + x_ref, 1 forward per face;"
          "\n  first edit: detect + x_fake, 2 forwards per face; re-edit with the faces kept: x_fake only)")
    print("  photo                       faces   detect    first edit   re-edit (faces kept)")
    choices = {"hair": "blond"}
    for name in ("skimage_astronaut.png", "fr_obama-1080p.jpg", "facenet_multiface.jpg"):
        path = PHOTOS / name
        faces = pipe.detect(path)
        t = _median_times({"detect": lambda p=path: pipe.detect(p), "full": lambda p=path: pipe(p, choices),
                           "again": lambda p=path, f=faces: pipe(p, choices, faces=f)}, repeats)
        print(f"  {name:<24} {len(faces):5d}   {t['detect']:6.3f} s   {t['full']:8.3f} s   {t['again']:8.3f} s")


TRAIN_CONFIGS = {  # name -> TrainConfig overrides
    "shipped": dict(d_conv_dim=32),  # checkpoints/celeba128: the paper's G at 128 px, D at half width
    "paper": {},
    "cpu64": dict(image_size=64, g_conv_dim=32, d_conv_dim=32, d_repeat_num=5),  # the earlier CPU-trained model
    "tiny": dict(image_size=32, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=3, batch_size=8),
}


def time_train(cfg, device: torch.device, batches, periods: int = 1) -> float:
    """Seconds per iteration of ``train.update`` for a ``TrainConfig`` on ``device``, each step drawing its batch
    from ``batches`` (an iterator of ``(x, labels)``), after one warm-up ``n_critic`` period."""
    import contextlib

    from .config import ModelConfig
    from .domains import CELEBA5
    from .losses import Nets
    from .model import build_discriminator, build_generator
    from .train import make_batch, update

    torch.manual_seed(cfg.seed)
    mcfg = ModelConfig(CELEBA5, cfg.image_size, cfg.g_conv_dim, cfg.d_conv_dim, cfg.g_repeat_num, cfg.d_repeat_num,
                       cfg.upsample)
    G, D = build_generator(mcfg).to(device), build_discriminator(mcfg).to(device)
    g_opt = torch.optim.Adam(G.parameters(), cfg.g_lr, (cfg.beta1, cfg.beta2))
    d_opt = torch.optim.Adam(D.parameters(), cfg.d_lr, (cfg.beta1, cfg.beta2))
    nets = Nets(torch.compile(G) if cfg.compile else G, D)
    amp = (lambda: torch.autocast(device.type, torch.bfloat16)) if cfg.bf16 and device.type == "cuda" \
        else contextlib.nullcontext
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
    from .config import TrainConfig
    from .data import ImageLabels, StepSampler, read_celeba
    from .train import batches, pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, device {device} ({where}), bf16={args.bf16}, compile={args.compile}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; data {args.data}")
    records, _ = read_celeba(args.data, ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"])
    for name in args.config:
        cfg = TrainConfig(**{**TRAIN_CONFIGS[name], "bf16": args.bf16, "compile": args.compile})
        ds = ImageLabels(records[:max(64, cfg.batch_size * 4 * (1 + args.periods) * cfg.n_critic)], cfg.image_size,
                         178)
        sampler = StepSampler(len(ds), cfg.batch_size, cfg.seed)
        secs = {path: time_train(replace(cfg, compile=cfg.compile and path == "project"), device,  # plain: eager
                                 batches(ds, sampler, replace(cfg, cache=path == "project", num_workers=1), device,
                                         None), args.periods) for path in ("plain", "project")}
        ips = {path: cfg.batch_size / s for path, s in secs.items()}
        print(f"  {name:<8} {cfg.image_size} px, batch {cfg.batch_size}: plain {secs['plain']:.4f} s/iter "
              f"({ips['plain']:.1f} images/s), project {secs['project']:.4f} s/iter ({ips['project']:.1f} images/s)"
              f": {ips['project'] / ips['plain']:.2f}x", flush=True)


def _write_bench_release(folder: Path) -> Path:
    """The paper's 128 px G and D (random weights) as a release, so ``serve`` needs no download."""
    from .checkpoint import save_release
    from .config import ModelConfig
    from .model import build_discriminator, build_generator

    cfg = ModelConfig()
    torch.manual_seed(0)
    return save_release(build_generator(cfg), cfg, folder, D=build_discriminator(cfg))


def _server_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory field in KiB: VmRSS (now) or VmHWM (peak since start)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def serve(args: argparse.Namespace) -> None:
    """Latency percentiles, throughput and server peak RSS of the app under N concurrent users."""
    import socket
    import subprocess
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from gradio_client import Client, handle_file

    root = Path(__file__).resolve().parents[1]
    photos = sorted(p for p in PHOTOS.glob("*.[jp][pn]g") if "no-faces" not in p.name) or \
        [root / "demo" / "examples" / "astronaut.jpg"]
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        model = args.model or str(_write_bench_release(Path(tmp) / "model"))
        env = {**os.environ, "STARGAN_MODEL": model, "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1",
               "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": tmp}
        start = time.perf_counter()
        server = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/"
        try:
            for _ in range(600):
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.5)
            ready = time.perf_counter() - start
            Client(url, verbose=False, download_files=tmp).predict(photo=handle_file(str(photos[0])), hair="Blond",
                                                                  api_name="/edit")
            print(f"app start to first edit: {time.perf_counter() - start:.1f} s (the server answered after "
                  f"{ready:.1f} s; the edit: {photos[0].name}, hair -> blond, through the API)")
            print(f"{len(photos)} photos, {args.edits} edits per user, load average {os.getloadavg()[0]:.1f} on "
                  f"{os.cpu_count()} CPUs; server RSS after start {_server_kib(server.pid, 'VmRSS') / 1024:.0f} MiB")
            print("users   edits   p50 s   p90 s   p99 s   max s   edits/s   server peak RSS   RSS after")
            for n in args.users:
                _serve_round(server.pid, url, n, args.edits, photos, Client, handle_file, ThreadPoolExecutor, tmp)
        finally:
            server.terminate()
            server.wait(timeout=30)


def _serve_round(pid, url, n, edits, photos, Client, handle_file, pool, tmp) -> None:  # noqa: N803 - classes
    """One round: ``n`` users, each with its own client, ``edits`` edits each of photos in turn."""
    hair = ("Black", "Blond", "Brown")

    def user(u: int) -> list[float]:
        client, times = Client(url, verbose=False, download_files=tmp), []
        for k in range(edits):
            t = time.perf_counter()
            client.predict(photo=handle_file(str(photos[(u + k) % len(photos)])), hair=hair[(u + k) % 3],
                           api_name="/edit")
            times.append(time.perf_counter() - t)
        return times

    start = time.perf_counter()
    with pool(n) as ex:
        lat = sorted(t for times in ex.map(user, range(n)) for t in times)
    wall = time.perf_counter() - start
    q = statistics.quantiles(lat, n=100, method="inclusive")
    print(f"{n:5d}   {len(lat):5d}   {q[49]:5.2f}   {q[89]:5.2f}   {q[98]:5.2f}   {lat[-1]:5.2f}   "
          f"{len(lat) / wall:7.2f}   {_server_kib(pid, 'VmHWM') / 1024:11.0f} MiB   "
          f"{_server_kib(pid, 'VmRSS') / 1024:5.0f} MiB", flush=True)


def _square_paste_back(image, faces, x_fake, x_ref):
    """The paste-back before ``blend.py`` (detail mode), kept as the baseline: the raw change x_fake - x_ref,
    upsampled bicubic, through a square mask feathered over 10% of the crop side."""
    from PIL import Image

    from .faces import _at_size, _sample, _to_tensor, footprint

    size = x_fake.shape[-1]
    t = torch.arange(size) + 0.5
    r = ((torch.minimum(t, size - t) - 1) / (0.1 * size)).clamp(0, 1)
    r = r * r * (3 - 2 * r)
    feather = (r[:, None] * r[None, :])[None]  # (1, s, s)
    faces = [_at_size(f, size) for f in faces]
    boxes = [footprint(f, image.size) for f in faces]
    X0, Y0, X1, Y1 = (f(b[i] for b in boxes) for f, i in ((min, 0), (min, 1), (max, 2), (max, 3)))
    photo = _to_tensor(image.crop((X0, Y0, X1, Y1)))
    num, den = torch.zeros_like(photo), torch.zeros_like(photo[:1])
    for face, s, (x0, y0, x1, y1) in zip(faces, (x_fake - x_ref) * 127.5, boxes, strict=True):
        if x1 <= x0 or y1 <= y0:
            continue
        to_crop = face.matrix + face.matrix[:, :2] @ [[0, 0, x0], [0, 0, y0]]
        mask = _sample(feather, to_crop, (y1 - y0, x1 - x0), "bilinear", "zeros")
        part = (slice(None), slice(y0 - Y0, y1 - Y0), slice(x0 - X0, x1 - X0))
        num[part] += mask * _sample(s, to_crop, (y1 - y0, x1 - x0), "bicubic", "zeros")
        den[part] += mask
    out = (photo + den.clamp(max=1) * num / den.clamp(min=1e-8)).round().clamp(0, 255)
    result = image.copy()
    result.paste(Image.fromarray(out.permute(1, 2, 0).numpy().astype("uint8")), (X0, Y0))
    return result


def _regions(image, faces, size: int, region: str = "head"):
    """(H, W) maps of the photo: inside some face's crop square (bool), and the largest of the faces' masks of
    ``region`` (``blend.region_mask``: "head", or "hair" for hair colours)."""
    from .blend import _crop_coords, region_mask
    from .faces import _at_size

    square = torch.zeros(image.height, image.width, dtype=torch.bool)
    head = torch.zeros(image.height, image.width)
    for f in (_at_size(f, size) for f in faces):
        u, v = _crop_coords(f.matrix, (image.height, image.width))
        square |= (u >= 0) & (u < size) & (v >= 0) & (v < size)
        head = torch.maximum(head, region_mask(f, u, v, region).float())
    return square, head


def _laplacian_energy(d: torch.Tensor, where: torch.Tensor) -> float:
    """Mean squared 4-neighbour Laplacian of d (3, H, W) (levels^2) over the pixels ``where`` (H, W). The edge is
    replicated, not zero-padded: a change that reaches the photo's edge (a face cut off by it) is not a step there."""
    k = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    lap = torch.nn.functional.conv2d(torch.nn.functional.pad(d[None], (1, 1, 1, 1), mode="replicate"), k, groups=3)[0]
    return float((lap ** 2).mean(0)[where].mean()) if where.any() else 0.0


def _survived(detector, clf, idx, spec, edited, faces, group, want) -> list[bool]:
    """Whether the classifier finds ``want`` for ``group`` on every face re-detected and re-aligned in ``edited``."""
    import numpy as np

    from .classifier import decide
    from .faces import align

    found = detector.detect(edited, crop_size=clf.image_size)
    centres = np.array([(f.box[:2] + f.box[2:]) / 2 for f in found]).reshape(-1, 2)
    ok = []
    for i, face in enumerate(faces):
        c, w = (face.box[:2] + face.box[2:]) / 2, face.box[2] - face.box[0]
        near = np.hypot(*(centres - c).T) if len(found) else np.array([np.inf])
        if near.min() > w / 2:  # the face is no longer found: the edit did not survive
            ok.append(False)
            continue
        x = align(edited, [found[int(near.argmin())]], clf.image_size)
        ok.append(bool(decide(clf.probs(x)[:, idx], spec)[group][0] == want[i]))
    return ok


# ----- colour: skin turned green or blue, the edit's strength in the face, the glow on the backdrop ---------------
SKIN_AB = 5.0  # a photo pixel is skin-coloured where CIELAB a* > 5 and b* > 5 (the measure, issue 29)
BACKDROP_DE = 8.0  # a pixel beside the hair is backdrop where it is within this CIELAB distance of the ring outside


def _lab(image) -> torch.Tensor:
    """A PIL RGB image as CIELAB (3, H, W): L* in [0, 100], a* and b* in about [-128, 127]."""
    import numpy as np
    from kornia.color import rgb_to_lab

    return rgb_to_lab(torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)[None])[0]


def _backdrop_beside_hair(lab: torch.Tensor, faces, size: int) -> torch.Tensor:
    """(H, W) bool: the photo's pixels inside some face's hair region (``blend.HAIR_*``'s outline, above the mouth)
    that are neither face (``blend.face_mask``) nor hair: their colour is within ``BACKDROP_DE`` of the backdrop
    just outside that outline in the same direction from the head's centre (median colour of a ring at 1.05 to 1.25
    of its radius, in 48 sectors). Hair that stops inside the outline differs from the backdrop it stops against;
    this map depends on the photo alone, never on the blend that is measured."""
    import math

    from . import blend
    from .blend import _crop_coords, _face_frame, face_mask
    from .faces import _at_size

    faces = [_at_size(f, size) for f in faces]
    hw = tuple(lab.shape[1:])
    coords = [_crop_coords(f.matrix, hw) for f in faces]
    face = torch.zeros(hw, dtype=torch.bool)
    polar = []
    for f, (u, v) in zip(faces, coords, strict=True):
        face |= face_mask(f, u, v) > 0
        eyes, down, m = _face_frame(f)
        cx, cy = eyes - blend.HAIR_RISE * down
        (dx, dy), du, dv = down / m, u - cx, v - cy
        x, y = (du * dy - dv * dx) / (blend.HAIR_HALF_W * m), (du * dx + dv * dy) / m  # across, along (m units)
        y = torch.where(y > 0, y / blend.HAIR_HALF_H_LOW, y / blend.HAIR_HALF_H)
        p = torch.where(y > 0, blend.LOW_POWER, 2.0)
        rho = (x.abs() ** p + y.abs() ** p) ** (1 / p)
        sector = ((torch.atan2(y, x) + math.pi) / (2 * math.pi) * 48).long().clamp(0, 47)
        above = ((u - eyes[0]) * down[0] + (v - eyes[1]) * down[1]) / m ** 2 < 1  # above the mouth
        polar.append((rho, sector, above))
    inside_any = torch.stack([rho < 1 for rho, _, _ in polar]).any(0)
    backdrop = torch.zeros(hw, dtype=torch.bool)
    for rho, sector, above in polar:
        ring = (rho >= 1.05) & (rho <= 1.25) & above & ~inside_any
        zone = (rho < 1) & above & ~face
        for k in range(48):
            ring_k, zone_k = ring & (sector == k), zone & (sector == k)
            if ring_k.sum() < 20 or not zone_k.any():
                continue
            ref = lab[:, ring_k].median(1).values[:, None]  # (3, 1)
            backdrop[zone_k] = (lab[:, zone_k] - ref).norm(dim=0) < BACKDROP_DE
    return backdrop


def _colour_figures(rgb, lab, out, faces, backdrop) -> tuple[list[float | None], list[float], float | None]:
    """Per face: the share of its skin-coloured pixels (photo a* > 5 and b* > 5 inside its detector box) that the
    edit turns green or blue (a* < 0 or b* < 0; None without skin, e.g. a greyscale photo), and the mean CIELAB
    colour change (dE76) inside the box; and the mean change (levels of 255, mean over RGB) on ``backdrop``."""
    import numpy as np

    lab_out = _lab(out)
    green, de = [], []
    for f in faces:
        x0, y0 = (max(0, int(t)) for t in f.box[:2])
        x1, y1 = min(lab.shape[2], int(np.ceil(f.box[2]))), min(lab.shape[1], int(np.ceil(f.box[3])))
        a, b = lab[1:, y0:y1, x0:x1], lab_out[1:, y0:y1, x0:x1]
        skin = (a[0] > SKIN_AB) & (a[1] > SKIN_AB)
        turned = (b[0] < 0) | (b[1] < 0)
        green.append(float(turned[skin].float().mean()) if skin.float().mean() > 0.01 else None)
        de.append(float((lab_out[:, y0:y1, x0:x1] - lab[:, y0:y1, x0:x1]).norm(dim=0).mean()))
    glow = None
    if backdrop is not None and backdrop.any():
        diff = torch.from_numpy(np.asarray(out, np.float32) - np.asarray(rgb, np.float32))
        glow = float(diff.abs().mean(-1)[backdrop].mean())
    return green, de, glow


def _edit_kind(ds, group, c_trg: torch.Tensor) -> list[str]:
    """Each face's edit by its target: a hair colour's name, or a binary group's on / off name (Male, Old...)."""
    from .classifier import decide
    from .domains import pretty

    want = decide(c_trg, ds)[group.name].tolist()
    if group.kind == "binary":
        return [group.on if w == 1 else group.off for w in want]
    return [pretty(group.labels[w]) for w in want]


def _colour_table(source: str, table: dict) -> None:
    """Per edit kind: skin turned green or blue (mean, 95th percentile, worst face), dE in the face box, the glow
    beside the hair, and the judge's survival on the head-shaped paste."""
    import numpy as np

    print(f"\ncolour, {source}: skin pixels turned green or blue (a* < 0 or b* < 0 of photo a*, b* > {SKIN_AB:g}), "
          f"mean dE76 in the face box, mean change (/255) on the backdrop beside the hair, judge's edit survival"
          f"\n  {'edit':<8}{'faces':>6}{'green/blue mean':>17}{'p95':>7}{'max':>7}{'dE in box':>11}"
          f"{'backdrop':>10}{'judge':>15}")
    rows = sorted(table.items(), key=lambda kv: kv[0])
    every = {k: [x for _, t in rows for x in t[k]] for k in ("green", "de", "glow", "judge")}
    for kind, t in [*rows, ("all", every)]:
        g = np.array([x for x in t["green"] if x is not None]) * 100
        glow = f"{np.mean(t['glow']):>10.2f}" if t["glow"] else f"{'':>10}"
        judge = f"{np.mean(t['judge']):>8.1%} ({len(t['judge']):>3})" if t["judge"] else f"{'':>15}"
        print(f"  {kind:<8}{len(t['de']):>6}{g.mean():>16.2f}%{np.percentile(g, 95):>6.2f}%{g.max():>6.1f}%"
              f"{np.mean(t['de']):>11.2f}{glow}{judge}")

def _blend_images(args: argparse.Namespace):
    """(name, loader) for every photo of ``--photos`` (default: all in the photos folder), then ``--celeba N``
    held-out CelebA images: the last N of the official 2,000 test images (never trained on; ``evaluate`` uses the
    first 500), each as a photo of its own, then ``--london N`` of the London set's neutral photos, evenly spaced
    over its 102 people (many skin tones, a plain backdrop)."""
    import numpy as np

    from .data import OFFICIAL_CELEBA_TEST, read_celeba
    from .images import load_image

    names = args.photos or sorted(p.name for p in PHOTOS.iterdir() if p.suffix in (".jpg", ".png"))
    items = [(name, partial(load_image, PHOTOS / name)) for name in names]
    if args.celeba:
        recs, _ = read_celeba(args.celeba_dir, ["Male"])
        test = recs[:OFFICIAL_CELEBA_TEST][-args.celeba:]
        items += [(f"celeba:{Path(path).name}", partial(load_image, path)) for path, _ in test]
    if args.london:
        london = sorted((PHOTOS.parent / "london_faces" / "neutral").glob("*.jpg"))
        pick = np.linspace(0, len(london) - 1, min(args.london, len(london))).round().astype(int)
        items += [(f"london:{london[i].name}", partial(load_image, london[i])) for i in pick]
    return items


def _source(name: str) -> str:
    return {"celeba": "held-out CelebA", "london": "London"}.get(name.split(":")[0], "photos") if ":" in name \
        else "photos"


def blend(args: argparse.Namespace) -> None:
    """Square vs head-shaped paste-back per photo: leak outside the head, speckle inside it, edit survival."""
    from collections import defaultdict

    import numpy as np

    from .blend import crops_after, denoise, head_masks, paste_back
    from .classifier import decide, load_classifier
    from .faces import align
    from .pipeline import StarGANPipeline
    # A named path, not the load-time race: on a busy machine that race can pick another path, and the judge's
    # decisions near its threshold flip with the path's small differences.
    pipe = StarGANPipeline.from_pretrained(args.model, path=args.path)
    schema, size = pipe.config.schema, pipe.config.image_size
    ds = schema.datasets[0]
    clf = load_classifier(args.classifier) if args.classifier else None
    idx = [clf.spec.labels.index(lab) for lab in ds.labels] if clf else None
    print(f"model: {pipe.status or args.model} ({size} px), G on {pipe.path.name}; classifier: "
          f"{args.classifier or 'none'}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'photo':<26}{'faces':>5}{'edits':>6}  outside head: mean |change|   Laplacian energy in head: photo"
          f" px | model px   paste-back s\n{'':<37}{'square':>11}{'head':>8}{'square':>12}{'head':>8}{'cut':>6}"
          f"{'square':>9}{'head':>8}{'cut':>6}{'square':>9}{'head':>6}")
    survive = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))  # source -> kind -> group -> [found]
    colour = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))  # source -> edit -> figure -> [value]
    sets = defaultdict(lambda: ([], {"square": [], "head": []}, [0]))  # CelebA, London: rows, times, faces
    for name, load in _blend_images(args):
        rgb = load()
        faces = pipe.detect(rgb)
        if not faces:
            continue
        source = _source(name)
        lab = _lab(rgb)
        backdrop = _backdrop_beside_hair(lab, faces, size)
        x_real = align(rgb, faces, size)
        c_org = pipe.estimate(x_real)
        x_ref = pipe.generate(x_real, schema.condition(c_org, ds.name))
        masks = {region: _regions(rgb, faces, size, region) for region in ("head", "hair")}
        before = torch.from_numpy(np.asarray(rgb, np.float32).copy()).permute(2, 0, 1)
        rows, times = [], {"square": [], "head": []}
        for t_name, c_trg in schema.paper_targets(c_org, ds.name):
            x_fake = pipe.generate(x_real, schema.condition(c_trg, ds.name))
            group = max(ds.groups, key=lambda g: float((c_trg - c_org)[:, schema.group_slice(g.name)].abs().sum()))
            region = "hair" if group.is_hair_colour else "head"  # as the pipeline blends this edit
            square, head = masks[region]
            outside, inside = square & (head == 0), head >= 0.5
            outs = {}
            for kind, fn in (("square", _square_paste_back), ("head", partial(paste_back, region=region))):
                t0 = time.perf_counter()
                outs[kind] = fn(rgb, faces, x_fake, x_ref)
                times[kind].append(time.perf_counter() - t0)
            d = {k: torch.from_numpy(np.asarray(v, np.float32).copy()).permute(2, 0, 1) - before
                 for k, v in outs.items()}
            rows.append([float(d[k].abs().mean(0)[outside].mean()) if outside.any() else 0.0 for k in d]
                        + [_laplacian_energy(d[k], inside) for k in d]
                        + [_laplacian_energy(torch.cat(list((align(outs[k], faces, size) - x_real) * 127.5), -1),
                                             torch.cat(list(head_masks(faces, size, region)[:, 0]), -1) >= 0.5)
                           for k in d])
            if args.pictures and t_name.lower().startswith("blond") and not name.startswith("celeba:"):
                _side_by_side(rgb, outs, faces, Path(args.pictures) / f"{Path(name).stem}_blond.png")
            kinds = _edit_kind(ds, group, c_trg)
            green, de, glow = _colour_figures(rgb, lab, outs["head"], faces, backdrop if region == "hair" else None)
            for kind, g, e in zip(kinds, green, de, strict=True):
                colour[source][kind]["green"].append(g)
                colour[source][kind]["de"].append(e)
            if glow is not None:
                colour[source][kinds[0]]["glow"].append(glow)  # one figure per photo: the hair colour is shared
            if clf:
                want = decide(c_trg, ds)[group.name]
                edit = decide(clf.probs(x_real)[:, idx], ds)[group.name] != want  # the judge sees a change to make
                if edit.any():
                    found = survive[source]
                    change = denoise(x_fake - x_ref)
                    judged = {"raw crop": x_fake, "denoised, on G(x,c_org)": x_ref + change,
                              "raw change": x_real + (x_fake - x_ref), "raw change, denoised": x_real + change,
                              "denoised, masked": crops_after(x_real, x_fake, x_ref, faces, region)}
                    for k, x in judged.items():  # on the model's own crop: no paste, no re-detection
                        found[k][group.name] += (decide(clf.probs(x.clamp(-1, 1))[:, idx], ds)[group.name]
                                                   == want)[edit].tolist()
                    for k, out in outs.items():
                        got = _survived(pipe.detector, clf, idx, ds, out, faces, group.name, want)
                        found[k][group.name] += [g for g, e in zip(got, edit.tolist(), strict=True) if e]
                        if k == "head":
                            for kind, g, e in zip(kinds, got, edit.tolist(), strict=True):
                                colour[source][kind]["judge"] += [g] if e else []
        if ":" in name:  # one summary row for each set of many
            rows_s, times_s, faces_s = sets[name.split(":")[0]]
            rows_s += rows
            faces_s[0] += len(faces)
            for k in times:
                times_s[k] += times[k]
            continue
        _blend_row(name, len(faces), rows, times)
    for key, (rows_s, times_s, faces_s) in sets.items():
        _blend_row(f"{key} x{getattr(args, key)}", faces_s[0], rows_s, times_s)
    for table in (survive, colour):
        if {"photos", "held-out CelebA"} <= set(table):  # the figure docs/BLENDING.md tracks
            photos, celeba = table["photos"], table["held-out CelebA"]
            table["photos + CelebA"] = {k: {g: photos[k][g] + celeba[k][g] for g in {*photos[k], *celeba[k]}}
                                        for k in {**photos, **celeba}}
    for source, table in survive.items():
        _survival_table(source, table)
    for source, table in colour.items():
        _colour_table(source, table)


def _survival_table(source: str, table: dict) -> None:
    import numpy as np
    groups = sorted({g for v in table.values() for g in v})
    n = sum(len(v) for v in table["raw crop"].values())
    print(f"\nedit survives, {source}: the classifier finds the target on the {n} face edits it saw as changes "
          f"(pasted: after re-detecting and re-aligning the edited photo)\n{'':<26}"
          + "".join(f"{g:>14}" for g in groups) + f"{'all':>14}")
    for k, v in table.items():
        every = [x for g in groups for x in v[g]]
        print(f"  {k:<24}" + "".join(f"{np.mean(v[g]):>8.1%} ({len(v[g]):>3})" if v[g] else f"{'':>14}"
                                     for g in groups) + f"{np.mean(every):>8.1%} ({len(every):>3})")


def _blend_row(name: str, n_faces: int, rows: list, times: dict) -> None:
    import numpy as np
    r = np.mean(rows, 0)
    print(f"{name:<26}{n_faces:>5}{len(rows):>6}{r[0]:>11.2f}{r[1]:>8.2f}{r[2]:>12.1f}{r[3]:>8.1f}"
          f"{1 - r[3] / r[2]:>6.0%}{r[4]:>9.1f}{r[5]:>8.1f}{1 - r[5] / r[4]:>6.0%}"
          f"{statistics.median(times['square']):>9.2f}{statistics.median(times['head']):>6.2f}", flush=True)


def _side_by_side(rgb, outs: dict, faces, path: Path) -> None:
    """Before | square paste-back | head-shaped paste-back, around the faces (2x their boxes), labelled."""
    import numpy as np
    from PIL import Image, ImageDraw

    boxes = np.stack([f.box for f in faces])
    (x0, y0), (x1, y1) = boxes[:, :2].min(0), boxes[:, 2:].max(0)
    w, h = x1 - x0, y1 - y0
    box = [int(max(0, x0 - w / 2)), int(max(0, y0 - h / 2)), int(min(rgb.width, x1 + w / 2)),
           int(min(rgb.height, y1 + h / 2))]
    panels = [im.crop(box) for im in (rgb, outs["square"], outs["head"])]
    k = 400 / panels[0].height
    panels = [p.resize((round(p.width * k), 400), Image.LANCZOS) for p in panels]
    sheet = Image.new("RGB", (sum(p.width for p in panels), 418), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (p, label) in enumerate(zip(panels, ("before", "square paste-back", "head-shaped"), strict=True)):
        sheet.paste(p, (i * panels[0].width, 18))
        draw.text((i * panels[0].width + 4, 3), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stargan_core.bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("infer", help="CPU inference: generator latency, pixel error, photo edits, memory")
    p.add_argument("--model", default=None, help="a model for load_model (default: random official-size nets)")
    p.add_argument("--no-d", action="store_true", help="without a discriminator (attributes from choices)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: the pipeline's choice)")
    p.add_argument("--cpu-time", action="store_true", help="CPU seconds instead of wall clock: figures that other "
                   "processes on a shared machine do not inflate (use with --threads 1)")
    p.set_defaults(func=infer)
    p = sub.add_parser("train", help="training images/s: plain (decode per step) vs the project's path")
    p.add_argument("--device", default="auto", help="auto = cuda > mps > cpu")
    p.add_argument("--periods", type=int, default=1, help="timed n_critic periods (5 iterations each)")
    p.add_argument("--config", nargs="+", default=["shipped"], choices=list(TRAIN_CONFIGS))
    p.add_argument("--data", default=str(PHOTOS.parent / "celeba_subset"), help="a CelebA folder")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    p.set_defaults(func=train)
    p = sub.add_parser("serve", help="the app under N concurrent users: latency, throughput, server peak RSS")
    p.add_argument("--model", default=None, help="STARGAN_MODEL for the app (default: random paper-size nets)")
    p.add_argument("--users", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--edits", type=int, default=4, help="edits per user and round")
    p.set_defaults(func=serve)
    p = sub.add_parser("blend", help="head-shaped paste-back against the square one: leaks, speckle, edit survival")
    p.add_argument("--model", default=None, help="a model for load_model (default: its fallback, the shipped model)")
    p.add_argument("--classifier", default=None, help="folder written by train-classifier (for edit survival)")
    p.add_argument("--photos", nargs="+", default=None, help="file names in the photos folder (default: all)")
    p.add_argument("--pictures", default=None, help="folder for before / square / head-shaped side-by-sides")
    p.add_argument("--celeba", type=int, default=0, help="also N held-out CelebA images (the last N of the "
                   "official 2,000 test images), for a larger sample of edits")
    p.add_argument("--celeba-dir", default=str(PHOTOS.parent / "celeba_30k"))
    p.add_argument("--london", type=int, default=0, help="also N of the London set's neutral photos (evenly spaced "
                   "over its 102 people: many skin tones)")
    p.add_argument("--path", default="onnxruntime-int8", help="the inference path G runs on (still checked "
                   "against fp32; 'auto': the load-time choice, which depends on how busy the machine is)")
    p.set_defaults(func=blend)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
