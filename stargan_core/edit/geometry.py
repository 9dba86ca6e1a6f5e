"""The geometry of a face in a photo: the CelebA template, the similarity to it, and warps both ways.

The contract of the editing stack: ``images.load_image`` -> ``faces.FaceDetector.detect`` (a plain list of
``Face``, reusable for several edits) -> ``align`` (N, 3, s, s) in [-1, 1] -> generator -> ``blend.paste_back``
(which maps the edit back through the same transforms). Everything here is numpy and torch, no detector, so the
blend, the tracker and the benchmarks share these transforms without importing facenet-pytorch.
``Face.matrix`` is the 2x3 similarity taking photo pixels to crop pixels (continuous coordinates: pixel (i, j)
covers [i, i+1) x [j, j+1)), fitted by least squares from the detector's landmarks to ``CELEBA_TEMPLATE``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .images import to_tensor

# Mean MTCNN landmarks (left eye, right eye, nose, left and right mouth corner; x, y px) over all 2,000
# img_align_celeba images (178x218) in ../shared/data/celeba_subset: facenet-pytorch 2.5.3 MTCNN(min_face_size=40),
# the face nearest the image centre (one in every image; per-point std 1.7-6.5 px). tests/test_faces.py re-derives it.
CELEBA_TEMPLATE = np.array([[70.14, 112.07], [108.95, 112.02], [89.26, 136.12], [72.04, 153.79], [106.83, 153.65]])
CELEBA_SIDE, CELEBA_TOP = 178, 20  # the model's input: the centre 178x178 of the 178x218 image, resized


@dataclass
class Face:
    """One face: MTCNN box and 5 landmarks in photo px, and the similarity to its aligned crop."""

    box: np.ndarray  # (4,) x0, y0, x1, y1
    prob: float
    landmarks: np.ndarray  # (5, 2) x, y
    matrix: np.ndarray  # (2, 3) photo px -> crop px
    crop_size: int
    memo: dict = field(default_factory=dict, repr=False, compare=False)  # the pipeline's per-face results


def template(size: int) -> np.ndarray:
    """CELEBA_TEMPLATE in the model's framing at ``size`` px: (5, 2)."""
    return (CELEBA_TEMPLATE - [0, CELEBA_TOP]) * (size / CELEBA_SIDE)


def key_points(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2) landmarks -> (3, 2) eyes and mouth centre, the points the similarity is fitted to. CelebA's own
    alignment follows the eyes and mouth, and the nose swings with head yaw, so these three land closer to the
    official crop than all five (``docs/EXPERIMENTS.md``)."""
    return np.stack([landmarks[0], landmarks[1], landmarks[3:].mean(0)])


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) taking points src (K, 2) onto dst (K, 2): (2, 3)."""
    zs, zd = src @ [1, 1j], dst @ [1, 1j]  # points as complex numbers, where a similarity is z -> a z + b
    a = np.vdot(zs - zs.mean(), zd - zd.mean()) / np.vdot(zs - zs.mean(), zs - zs.mean())
    b = zd.mean() - a * zs.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def invert(m: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine map (crop px -> photo px for a face's matrix)."""
    a = np.linalg.inv(m[:, :2])
    return np.hstack([a, -a @ m[:, 2:]])


def transform(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points (K, 2) through the 2x3 affine map ``m``."""
    return pts @ m[:, :2].T + m[:, 2]


def crop_box(matrix: np.ndarray, out_wh: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1) around the photo px that an ``out_wh`` crop through ``matrix`` covers, clipped
    to the photo of ``size``."""
    (w, h) = out_wh
    corners = transform(invert(matrix), np.array([[0, 0], [w, 0], [0, h], [w, h]]))
    x0, y0 = np.clip(np.floor(corners.min(0)), 0, size).astype(int)
    x1, y1 = np.clip(np.ceil(corners.max(0)), 0, size).astype(int)
    return int(x0), int(y0), int(max(x1, x0)), int(max(y1, y0))


def footprint(face: Face, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1) around the photo px the face's crop covers, clipped to the photo."""
    return crop_box(face.matrix, (face.crop_size, face.crop_size), size)


def sample(src: torch.Tensor, m: np.ndarray, out_hw: tuple[int, int], mode: str, pad: str) -> torch.Tensor:
    """Resample src (C, H, W) at m @ (x + .5, y + .5) for every output pixel (x, y): (C, h, w)."""
    ys, xs = torch.meshgrid(torch.arange(out_hw[0]) + 0.5, torch.arange(out_hw[1]) + 0.5, indexing="ij")
    m = torch.as_tensor(m, dtype=torch.float32)
    u, v = m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    grid = torch.stack([2 * u / src.shape[-1] - 1, 2 * v / src.shape[-2] - 1], -1)  # (h, w, 2) in [-1, 1]
    return F.grid_sample(src[None], grid[None], mode=mode, padding_mode=pad, align_corners=False)[0]


def at_size(face: Face, size: int) -> Face:
    """The same face with its crop at ``size`` px (the matrix scaled accordingly)."""
    return Face(face.box, face.prob, face.landmarks, face.matrix * (size / face.crop_size), size)


def warp(image: Image.Image, matrix: np.ndarray, out_wh: tuple[int, int]) -> torch.Tensor:
    """The ``out_wh`` crop that ``matrix`` (photo px -> crop px) frames: (3, h, w) float32 in [0, 255]."""
    x0, y0, x1, y1 = crop_box(matrix, out_wh, image.size)
    if x1 <= x0 or y1 <= y0:  # the crop misses the photo entirely
        return torch.full((3, out_wh[1], out_wh[0]), 127.5)
    k = min(1.0, float(np.hypot(*matrix[:, 0])))  # crop and shrink first with PIL's filter, as the official
    w, h = max(1, round((x1 - x0) * k)), max(1, round((y1 - y0) * k))  # CenterCrop + Resize do; then warp ~1:1
    region = image.crop((x0, y0, x1, y1)).resize((w, h), Image.BILINEAR)
    to_region = np.diag([w / (x1 - x0), h / (y1 - y0)]) @ (invert(matrix) - [[0, 0, x0], [0, 0, y0]])
    return sample(to_tensor(region), to_region, out_wh[::-1], "bicubic", "border").clamp(0, 255)


def _align_one(image: Image.Image, face: Face) -> torch.Tensor:
    return warp(image, face.matrix, (face.crop_size, face.crop_size)) / 127.5 - 1


def align(image: Image.Image, faces: list[Face], size: int) -> torch.Tensor:
    """The model's input for each face: (N, 3, size, size) float32 in [-1, 1]."""
    crops = [_align_one(image, at_size(f, size)) for f in faces]
    return torch.stack(crops) if crops else torch.zeros(0, 3, size, size)


def celeba_frame(image: Image.Image, face: Face, scale: float = 1.0) -> Image.Image:
    """The face in the geometry of CelebA's ``img_align_celeba`` files (178x218 at ``scale`` 1): the model's
    input is its centre square, so a dataset prepared this way is read exactly like CelebA."""
    k = CELEBA_SIDE / face.crop_size * scale  # crop px -> frame px; the crop starts CELEBA_TOP px down the frame
    to_frame = np.array([[k, 0, 0], [0, k, CELEBA_TOP * scale]]) @ np.vstack([face.matrix, [0, 0, 1]])
    w, h = round(CELEBA_SIDE * scale), round((CELEBA_SIDE + 2 * CELEBA_TOP) * scale)
    pixels = warp(image, to_frame, (w, h)).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(pixels)


def crop_coords(m: np.ndarray, out_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop coordinates (u, v), each (h, w), of the pixel centres of an h x w region under the 2x3 map m."""
    ys, xs = torch.meshgrid(torch.arange(out_hw[0], dtype=torch.float64) + 0.5,
                            torch.arange(out_hw[1], dtype=torch.float64) + 0.5, indexing="ij")
    return m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
