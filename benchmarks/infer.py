"""``python -m benchmarks infer``: CPU inference as the app runs it, against the official test's way.

It prints the path the pipeline chose at load (``inference.choose_path``) with each candidate's time, times the
official 128 px generator ``Generator(64, 5, 6)`` (random weights, or a model given with ``--model``) the naive
way (fp32, eager, one face per forward, as the official test does) against the chosen path (faces batched),
measures that path's pixel error against fp32 on real aligned faces, times whole edits of photos from
``../shared/data/photos`` (detection computes each face's x_ref; a re-edit is one forward per face), reports
the process's peak memory, then times every candidate path on the same 6 real faces (no budget: what the
load-time race would see on a quiet machine). Timings are medians over interleaved repeats, so a busy machine
slows both sides alike; on a shared machine ``--threads 1 --cpu-time`` gives figures that other processes do not
inflate.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from . import PHOTOS
from .timing import machine_load, median_times, timings


def pipeline_for(model: str | None, with_d: bool, path: str = "auto"):
    """``model``'s pipeline (``load_model``), or the paper's 128 px nets with random weights; G on ``path``."""
    from stargan_core.config import ModelConfig
    from stargan_core.edit.pipeline import StarGANPipeline
    from stargan_core.nets.model import build_discriminator, build_generator

    if model:
        return StarGANPipeline.from_pretrained(model, path=path)
    cfg = ModelConfig()  # the paper's 128 px nets: Generator(64, 5, 6), Discriminator(128, 64, 5, 6)
    torch.manual_seed(0)
    return StarGANPipeline(build_generator(cfg), cfg, build_discriminator(cfg) if with_d else None, path=path)


def infer(args: argparse.Namespace) -> None:
    """Per-face generator latency (naive vs pipeline), pixel error, end-to-end photo edits, peak memory."""
    from stargan_core.edit.geometry import align
    from stargan_core.edit.images import load_image
    from stargan_core.edit.inference import bf16_hardware

    if args.threads:  # before the pipeline: its paths size their thread pools at load
        torch.set_num_threads(args.threads)
    pipe = pipeline_for(args.model, not args.no_d)
    clock = time.process_time if args.cpu_time else time.perf_counter
    G, size, c_dim, generate = pipe.G, pipe.config.image_size, pipe.config.schema.c_dim, pipe.generate
    print(f"torch {torch.__version__}, {_versions()}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bf16 hardware '{bf16_hardware() or 'none'}' (oneDNN "
          f"{os.environ.get('ONEDNN_MAX_CPU_ISA', 'uncapped')}), {machine_load()}, "
          f"{'CPU' if args.cpu_time else 'wall'} time")
    print(f"\nload-time choice (wall clock, probe faces): {pipe.path.summary()}")
    photo = load_image(PHOTOS / "facenet_multiface.jpg")
    x6 = align(photo, pipe.detect(photo), size)  # 6 real aligned faces (N, 3, S, S)
    c6 = torch.eye(c_dim)[torch.arange(len(x6)) % c_dim]

    def naive(x: torch.Tensor) -> None:  # the official test: fp32, eager, no_grad, one face at a time
        with torch.no_grad():
            for i in range(len(x)):
                G(x[i:i + 1], c6[i:i + 1])

    t = timings({"naive": lambda: naive(x6[:1]), "pipe1": lambda: generate(x6[:1], c6[:1]),
                  "naive6": lambda: naive(x6), "pipe6": lambda: generate(x6, c6)}, args.repeats, clock)
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
    _end_to_end(pipe, args.repeats, clock)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"\npeak memory (max RSS of this process, torch and MTCNN included): {peak:.0f} MiB")
    _every_candidate(G, size, c_dim, x6, c6, args.repeats, clock)  # last: holding every path at once raises the peak


def _every_candidate(G, size: int, c_dim: int, x6: torch.Tensor, c6: torch.Tensor, repeats: int,
                     clock: Callable[[], float]) -> None:
    """Every candidate path, built as at load (int8 calibrated on the probe faces), timed in interleaved repeats on
    the 6 real faces: what the load-time race would see on a quiet machine with no budget."""
    from stargan_core.edit.inference import PATHS, mean_error, probe_faces

    x, c = probe_faces(size, c_dim)
    runs = {}
    for name, make in PATHS.items():
        try:
            runs[name] = make(G, x, c)
        except Exception as e:  # noqa: BLE001 - a path this machine cannot build is reported, not fatal
            print(f"  {name}: cannot be built here ({type(e).__name__}: {e})")
    t = timings({name: partial(run, x6, c6) for name, run in runs.items()}, repeats, clock)
    y_ref, base = runs["fp32"](x6, c6), statistics.median(t["fp32"])
    print(f"\nevery candidate, {len(x6)} real faces per forward, ms per face: median (best), speed-up over fp32, "
          f"mean error vs fp32")
    for name, run in runs.items():
        med = statistics.median(t[name])
        print(f"  {name:<23} {med / len(x6) * 1e3:7.1f} ({min(t[name]) / len(x6) * 1e3:6.1f})   {base / med:4.2f}x   "
              f"{mean_error(run(x6, c6), y_ref):.3f}/255")


def _versions() -> str:
    """The ONNX Runtime version, or that it is missing (its paths are then not candidates)."""
    try:
        import onnxruntime
    except ImportError:
        return "no onnxruntime"
    return f"onnxruntime {onnxruntime.__version__}"


def _end_to_end(pipe, repeats: int, clock: Callable[[], float]) -> None:
    """Whole edits: decode + detect + align + estimate + translate (x_fake and x_ref) + paste back."""
    print("\nend to end, hair -> blond (detect: MTCNN + crops + D's estimate + x_ref, 1 forward per face;"
          "\n  first edit: detect + x_fake, 2 forwards per face; re-edit with the faces kept: x_fake only)")
    print("  photo                       faces   detect    first edit   re-edit (faces kept)")
    choices = {"hair": "blond"}
    for name in ("skimage_astronaut.png", "fr_obama-1080p.jpg", "facenet_multiface.jpg"):
        path = PHOTOS / name
        faces = pipe.detect(path)
        t = median_times({"detect": lambda p=path: pipe.detect(p), "full": lambda p=path: pipe(p, choices),
                           "again": lambda p=path, f=faces: pipe(p, choices, faces=f)}, repeats, clock)
        print(f"  {name:<24} {len(faces):5d}   {t['detect']:6.3f} s   {t['full']:8.3f} s   {t['again']:8.3f} s")


def add_parser(sub) -> None:
    """The ``infer`` command and its options."""
    p = sub.add_parser("infer", help="CPU inference: generator latency, pixel error, photo edits, memory")
    p.add_argument("--model", default=None, help="a model for load_model (default: random official-size nets)")
    p.add_argument("--no-d", action="store_true", help="without a discriminator (attributes from choices)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: the pipeline's choice)")
    p.add_argument("--cpu-time", action="store_true", help="CPU seconds instead of wall clock: figures that other "
                   "processes on a shared machine do not inflate (use with --threads 1)")
    p.set_defaults(func=infer)
