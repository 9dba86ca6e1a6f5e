"""``python -m benchmarks mirror``: the webcam mirror tab's frame rate.

It times the mirror's work on 640x480 frames with 1 and 3 faces (faces detected every 10 frames and tracked in
between, each frame edited), as frames per second, on the load-time path or a named one (``--path``).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from . import PHOTOS
from .infer import pipeline_for
from .timing import machine_load


def mirror(args: argparse.Namespace) -> None:
    """The webcam mirror's frame rate: 640x480 frames with 1 and 3 faces, tracked and edited as the mirror tab does."""
    from PIL import Image, ImageOps

    from stargan_core.edit.images import load_image
    from stargan_core.edit.tracking import FaceTracker

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = pipeline_for(args.model, True, args.path)
    face = load_image(PHOTOS / "skimage_astronaut.png")
    three = Image.new("RGB", (640, 480), "gray")
    for i in range(3):  # three people side by side, each face about 70 px wide
        three.paste(ImageOps.fit(face, (213, 280)), (i * 213, 100))
    print(f"path {pipe.path.name}, {torch.get_num_threads()} threads, {machine_load()}; 640x480 frames, "
          "hair -> blond, faces detected every 10 frames (the tab's rate)")
    for frame in (ImageOps.fit(face, (640, 480)), three):
        tracker, times = FaceTracker(pipe.detect, every=10), []
        for _ in range(args.frames + 10):  # the first 10 (one detection period) warm up
            t = time.perf_counter()
            faces = tracker(frame)
            pipe(frame, {"hair": "blond"}, faces=faces, detail=False)
            times.append(time.perf_counter() - t)
        print(f"  {len(faces)} face(s): {len(times[10:]) / sum(times[10:]):5.1f} frames per second "
              f"(median frame {statistics.median(times[10:]) * 1e3:.0f} ms, {args.frames} frames)")


def add_parser(sub) -> None:
    """The ``mirror`` command and its options."""
    p = sub.add_parser("mirror", help="the webcam mirror's frame rate with 1 and 3 faces")
    p.add_argument("--model", default=None, help="a model for load_model (default: random official-size nets)")
    p.add_argument("--path", default="auto", help="the inference path ('auto': the load-time choice)")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: the pipeline's choice)")
    p.set_defaults(func=mirror)
