"""The webcam tracker: detection only every N frames, faces followed in between (checked against the known shift)."""
import numpy as np
import pytest
from PIL import Image

from conftest import ASTRONAUT
from stargan_core.edit.geometry import align
from stargan_core.edit.tracking import FaceTracker, phase_shift, shift_face


def frames(shifts):
    """Windows of the astronaut photo at offsets (x, y): the content moves by (-x, -y) from frame to frame."""
    photo = Image.open(ASTRONAUT).convert("RGB")
    return [photo.crop((x, y, x + 440, y + 440)) for x, y in shifts]


def counting(detector):
    calls = []

    def detect(frame):
        calls.append(frame)
        return detector.detect(frame)
    return detect, calls


def test_phase_shift_finds_a_known_sub_pixel_translation():
    rng = np.random.default_rng(0)
    a = np.asarray(Image.fromarray(rng.integers(0, 255, (80, 80), np.uint8)).resize((240, 240), Image.BILINEAR),
                   np.float32)
    before, after = a[40:104, 40:104], a[37:101, 45:109]  # content moves by (-5, +3)
    dx, dy = phase_shift(before, after)
    assert (dx, dy) == pytest.approx((-5, 3), abs=0.3)


def test_shift_face_moves_its_crop_with_it(detector):
    f0, f1 = frames([(30, 20), (18, 26)])  # content moves by (+12, -6)
    face = detector.detect(f0)[0]
    moved = shift_face(face, 12, -6)
    assert moved.landmarks == pytest.approx(face.landmarks + [12, -6])
    same = (align(f0, [face], 64) - align(f1, [moved], 64)).abs().mean()
    stale = (align(f0, [face], 64) - align(f1, [face], 64)).abs().mean()
    assert same < 0.03 and stale > 5 * same, (same, stale)  # the moved face crops the same pixels


def test_detection_runs_every_n_frames_and_the_faces_follow_the_shift(detector):
    offsets = [(40 - 3 * k, 30 - 2 * k) for k in range(10)]  # 3 px right, 2 px down per frame
    detect, calls = counting(detector)
    tracker = FaceTracker(detect, every=5)
    tracked = [tracker(f) for f in frames(offsets)]
    assert len(calls) == 2 and tracker.detections == 2  # frames 0 and 5
    for k, faces in enumerate(tracked):
        key = k - k % 5  # the last detected frame; the reference is its detection moved by the known shift
        assert len(faces) == 1
        assert faces[0].landmarks == pytest.approx(tracked[key][0].landmarks + [3 * (k - key), 2 * (k - key)],
                                                   abs=1.0), k
    crops = [align(f, fs, 64) for f, fs in zip(frames(offsets), tracked, strict=True)]
    stale = float((align(frames(offsets)[4], tracked[0], 64) - crops[0]).abs().mean())  # frame 0's face on frame 4
    assert max(float((c - crops[0]).abs().mean()) for c in crops[1:5]) < 0.05 < 0.1 < stale  # followed, not stale


def test_a_face_that_jumps_is_detected_again_at_once(detector):
    detect, calls = counting(detector)
    tracker = FaceTracker(detect, every=100)
    tracker(frames([(60, 40)])[0])
    faces = tracker(frames([(0, 0)])[0])  # 72 px jump: beyond max_move of a ~150 px face
    assert len(calls) == 2
    first = detector.detect(frames([(60, 40)])[0])[0]
    assert faces[0].box[:2] == pytest.approx(first.box[:2] + [60, 40], abs=4)
