"""Faces in a video: detect every few frames, follow the faces in between.

MTCNN costs more than the generator on a webcam frame, so ``FaceTracker`` runs it only every ``every`` frames.
In between it follows each face by phase correlation: the face's box (grown by half) in the frame where it was
detected and the same region of the new frame, both grey and shrunk to at most 96 px, give the shift, and the
detected face (box, landmarks, alignment) is moved by it. Measuring from the detected frame, not the previous
one, keeps small errors from adding up over frames. The landmarks are reused as long as the face moves little;
a shift larger than ``max_move`` of the box side (a face that jumped, turned or left) triggers a detection at once.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from PIL import Image

from .geometry import Face


def shift_face(face: Face, dx: float, dy: float) -> Face:
    """The same face moved by (dx, dy) photo px: box, landmarks and the photo -> crop similarity."""
    d = np.array([dx, dy])
    matrix = face.matrix.copy()
    matrix[:, 2] -= matrix[:, :2] @ d  # crop(p) = A p + t; the face now at p + d: t' = t - A d
    return replace(face, box=face.box + np.tile(d, 2), landmarks=face.landmarks + d, matrix=matrix)


def phase_shift(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """The translation (dx, dy) taking grey image ``before`` (H, W) to ``after``, by phase correlation."""
    window = np.outer(np.hanning(before.shape[0]), np.hanning(before.shape[1]))  # damp the border's jump
    fa, fb = np.fft.fft2((before - before.mean()) * window), np.fft.fft2((after - after.mean()) * window)
    cross = fb * np.conj(fa)
    corr = np.fft.ifft2(cross / np.maximum(np.abs(cross), 1e-9)).real  # (H, W) peak at the shift
    (h, w), (py, px) = corr.shape, np.unravel_index(np.argmax(corr), corr.shape)
    ox = _vertex(corr[py, (px - 1) % w], corr[py, px], corr[py, (px + 1) % w])  # sub-pixel: a parabola's vertex
    oy = _vertex(corr[(py - 1) % h, px], corr[py, px], corr[(py + 1) % h, px])
    return float((px + ox + w / 2) % w - w / 2), float((py + oy + h / 2) % h - h / 2)  # wrapped to [-n/2, n/2)


def _vertex(left: float, mid: float, right: float) -> float:
    den = left - 2 * mid + right
    return 0.5 * (left - right) / den if abs(den) > 1e-12 else 0.0


class FaceTracker:
    """``tracker(frame) -> faces``: ``detect`` on the first frame and every ``every`` frames, tracking between."""

    def __init__(self, detect: Callable[[Image.Image], list[Face]], every: int = 10, max_move: float = 0.3,
                 patch: int = 96) -> None:
        self.detect, self.every, self.max_move, self.patch = detect, every, max_move, patch
        self.faces: list[Face] = []  # as detected in ``key``
        self.key: Image.Image | None = None  # the frame of the last detection
        self.since = 0  # frames since the last detection
        self.detections = 0

    def __call__(self, frame: Image.Image) -> list[Face]:
        if self.key is None or self.since >= self.every - 1 or not self.faces:
            return self._detect(frame)
        moved = [self._follow(face, frame) for face in self.faces]
        if any(m is None for m in moved):  # a face moved too far to trust the old landmarks
            return self._detect(frame)
        self.since += 1
        return moved

    def _detect(self, frame: Image.Image) -> list[Face]:
        self.faces, self.key, self.since = list(self.detect(frame)), frame, 0
        self.detections += 1
        return self.faces

    def _follow(self, face: Face, frame: Image.Image) -> Face | None:
        """The face shifted by its motion since its detection; None when it moved more than ``max_move``."""
        x0, y0, x1, y1 = face.box
        side = max(x1 - x0, y1 - y0)
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.75 * side  # the box grown by half
        region = tuple(int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
        scale = min(1.0, self.patch / (2 * half))
        size = (max(8, round(2 * half * scale)),) * 2
        a, b = (np.asarray(im.crop(region).convert("L").resize(size, Image.BILINEAR), np.float32)
                for im in (self.key, frame))
        dx, dy = (v / scale for v in phase_shift(a, b))
        if np.hypot(dx, dy) > self.max_move * side:
            return None
        return shift_face(face, dx, dy)
