"""Faces: find every face in a photo, in the geometry the model was trained on (``geometry.py``).

The only module importing facenet-pytorch, behind a narrow contract: ``detect`` returns a plain list of
``geometry.Face`` (box, landmarks, the similarity to the CelebA template), left to right, which the pipeline, the
blend and the tracker use without knowing the detector, so it can be swapped.
"""
from __future__ import annotations

import numpy as np
from facenet_pytorch import MTCNN
from PIL import Image

from .geometry import Face, invert, key_points, similarity, template, transform


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
        return Face(np.array([x0, y0, x0 + side, y0 + side]), 1.0, transform(invert(matrix), template(crop_size)),
                    matrix, crop_size)
