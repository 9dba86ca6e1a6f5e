"""Faces: find every face and align it to the CelebA framing the model was trained on.

The only module importing facenet-pytorch. Contract: ``images.load_image`` -> ``FaceDetector.detect`` (a plain
list of ``Face``, reusable for several edits) -> ``align`` (N, 3, s, s) in [-1, 1] -> generator ->
``blend.paste_back`` (which maps the edit back through the same transforms).
``Face.matrix`` is the 2x3 similarity taking photo pixels to crop pixels (continuous coordinates: pixel (i, j)
covers [i, i+1) x [j, j+1)), fitted by least squares from MTCNN's landmarks to ``CELEBA_TEMPLATE``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from facenet_pytorch import MTCNN
from PIL import Image

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
    alignment follows the eyes and mouth; on the 2,000 images this brings our crop within 2.2 px (mean, at 128 px)
    of the official one, against 3.0 px fitting all 5 points (the nose swings with head yaw)."""
    return np.stack([landmarks[0], landmarks[1], landmarks[3:].mean(0)])


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) taking points src (K, 2) onto dst (K, 2): (2, 3)."""
    zs, zd = src @ [1, 1j], dst @ [1, 1j]  # points as complex numbers, where a similarity is z -> a z + b
    a = np.vdot(zs - zs.mean(), zd - zd.mean()) / np.vdot(zs - zs.mean(), zs - zs.mean())
    b = zd.mean() - a * zs.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


class FaceDetector:
    """MTCNN on CPU, created once. A photo is searched at most ``max_side`` px long (so there the smallest face
    found is ``min_face_size`` px of that copy); results are always in full-resolution photo px."""

    def __init__(self, min_face_size: int = 40, min_prob: float = 0.9, max_side: int = 1280):
        self.mtcnn = MTCNN(min_face_size=min_face_size, keep_all=True, device="cpu")
        self.min_face_size, self.min_prob, self.max_side = min_face_size, min_prob, max_side

    def detect(self, image: Image.Image, crop_size: int = 128) -> list[Face]:
        """Every face with probability >= min_prob, left to right; [] when there is none."""
        f = min(1.0, self.max_side / max(image.size))
        small = image if f == 1 else image.resize((round(image.width * f), round(image.height * f)), Image.BILINEAR)
        if min(small.size) < self.min_face_size:  # MTCNN's pyramid would be empty
            return []
        boxes, probs, points = self.mtcnn.detect(small, landmarks=True)  # (K, 4), (K,), (K, 5, 2) or None
        if boxes is None:
            return []
        boxes, probs, points = (np.asarray(a, np.float64) for a in (boxes, probs, points))
        dst = key_points(template(crop_size))
        return [Face(boxes[i] / f, float(probs[i]), points[i] / f, similarity(key_points(points[i] / f), dst),
                     crop_size) for i in np.argsort(boxes[:, 0] + boxes[:, 2]) if probs[i] >= self.min_prob]

    @staticmethod
    def whole_image(image: Image.Image, crop_size: int) -> Face:
        """Treat the photo as an already aligned img_align_celeba-style crop: its centre square is the model input."""
        (w, h), side = image.size, min(image.size)
        x0, y0, s = (w - side) / 2, (h - side) / 2, crop_size / side
        matrix = np.array([[s, 0, -s * x0], [0, s, -s * y0]])
        return Face(np.array([x0, y0, x0 + side, y0 + side]), 1.0, _apply(_invert(matrix), template(crop_size)),
                    matrix, crop_size)


def _invert(m: np.ndarray) -> np.ndarray:
    a = np.linalg.inv(m[:, :2])
    return np.hstack([a, -a @ m[:, 2:]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _footprint(matrix: np.ndarray, out_wh: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1) around the photo px that an ``out_wh`` crop through ``matrix`` covers, clipped
    to the photo of ``size``."""
    (w, h) = out_wh
    corners = _apply(_invert(matrix), np.array([[0, 0], [w, 0], [0, h], [w, h]]))
    x0, y0 = np.clip(np.floor(corners.min(0)), 0, size).astype(int)
    x1, y1 = np.clip(np.ceil(corners.max(0)), 0, size).astype(int)
    return int(x0), int(y0), int(max(x1, x0)), int(max(y1, y0))


def footprint(face: Face, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1) around the photo px the face's crop covers, clipped to the photo."""
    return _footprint(face.matrix, (face.crop_size, face.crop_size), size)


def _sample(src: torch.Tensor, m: np.ndarray, out_hw: tuple[int, int], mode: str, pad: str) -> torch.Tensor:
    """Resample src (C, H, W) at m @ (x + .5, y + .5) for every output pixel (x, y): (C, h, w)."""
    ys, xs = torch.meshgrid(torch.arange(out_hw[0]) + 0.5, torch.arange(out_hw[1]) + 0.5, indexing="ij")
    m = torch.as_tensor(m, dtype=torch.float32)
    u, v = m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    grid = torch.stack([2 * u / src.shape[-1] - 1, 2 * v / src.shape[-2] - 1], -1)  # (h, w, 2) in [-1, 1]
    return F.grid_sample(src[None], grid[None], mode=mode, padding_mode=pad, align_corners=False)[0]


def _at_size(face: Face, size: int) -> Face:
    return Face(face.box, face.prob, face.landmarks, face.matrix * (size / face.crop_size), size)


def _to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im, np.float32).copy()).permute(2, 0, 1)  # (3, H, W) in [0, 255]


def _warp(image: Image.Image, matrix: np.ndarray, out_wh: tuple[int, int]) -> torch.Tensor:
    """The ``out_wh`` crop that ``matrix`` (photo px -> crop px) frames: (3, h, w) float32 in [0, 255]."""
    x0, y0, x1, y1 = _footprint(matrix, out_wh, image.size)
    if x1 <= x0 or y1 <= y0:  # the crop misses the photo entirely
        return torch.full((3, out_wh[1], out_wh[0]), 127.5)
    k = min(1.0, float(np.hypot(*matrix[:, 0])))  # crop and shrink first with PIL's filter, as the official
    w, h = max(1, round((x1 - x0) * k)), max(1, round((y1 - y0) * k))  # CenterCrop + Resize do; then warp ~1:1
    region = image.crop((x0, y0, x1, y1)).resize((w, h), Image.BILINEAR)
    to_region = np.diag([w / (x1 - x0), h / (y1 - y0)]) @ (_invert(matrix) - [[0, 0, x0], [0, 0, y0]])
    return _sample(_to_tensor(region), to_region, out_wh[::-1], "bicubic", "border").clamp(0, 255)


def _align_one(image: Image.Image, face: Face) -> torch.Tensor:
    return _warp(image, face.matrix, (face.crop_size, face.crop_size)) / 127.5 - 1


def align(image: Image.Image, faces: list[Face], size: int) -> torch.Tensor:
    """The model's input for each face: (N, 3, size, size) float32 in [-1, 1]."""
    crops = [_align_one(image, _at_size(f, size)) for f in faces]
    return torch.stack(crops) if crops else torch.zeros(0, 3, size, size)


def celeba_frame(image: Image.Image, face: Face, scale: float = 1.0) -> Image.Image:
    """The face in the geometry of CelebA's ``img_align_celeba`` files (178x218 at ``scale`` 1): the model's
    input is its centre square, so a dataset prepared this way is read exactly like CelebA."""
    k = CELEBA_SIDE / face.crop_size * scale  # crop px -> frame px; the crop starts CELEBA_TOP px down the frame
    to_frame = np.array([[k, 0, 0], [0, k, CELEBA_TOP * scale]]) @ np.vstack([face.matrix, [0, 0, 1]])
    w, h = round(CELEBA_SIDE * scale), round((CELEBA_SIDE + 2 * CELEBA_TOP) * scale)
    pixels = _warp(image, to_frame, (w, h)).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(pixels)
