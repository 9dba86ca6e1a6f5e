"""faces.py, geometry.py and the paste-back: alignment matches the CelebA framing; paste-back touches nothing outside
the face masks. Geometry is checked against references built here (known transforms, torchvision's official crop); the
detector against ../shared/data (MANIFEST.json, celeba_subset). Every upload kind: test_images.py."""
import json
import time

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from conftest import texture
from stargan_core.edit.blend import paste_back
from stargan_core.edit.faces import FaceDetector
from stargan_core.edit.geometry import CELEBA_TEMPLATE, Face, align, key_points, similarity, template
from stargan_core.edit.images import load_image


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """MTCNN's small convolutions gain nothing from threads, and on shared cores two threads ran far slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _face_at(landmarks: np.ndarray, crop_size: int = 128) -> Face:
    """A Face built by hand, as the detector would from these landmarks."""
    matrix = similarity(key_points(landmarks), key_points(template(crop_size)))
    return Face(np.r_[landmarks.min(0), landmarks.max(0)], 1.0, landmarks, matrix, crop_size)


def _template_in_photo(angle_deg: float, scale: float, centre: tuple[float, float]) -> np.ndarray:
    """template(128) rotated, scaled (photo px per crop px) and moved to ``centre``: (5, 2)."""
    a = np.deg2rad(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (template(128) - 64) @ rot.T + centre


def _outside_masks(size: tuple[int, int], faces: list[Face]) -> np.ndarray:
    """(H, W) True where a pixel centre lies outside every face's crop square (mapped through Face.matrix)."""
    xs, ys = np.meshgrid(np.arange(size[0]) + 0.5, np.arange(size[1]) + 0.5)
    outside = np.ones((size[1], size[0]), bool)
    for f in faces:
        u = f.matrix[0, 0] * xs + f.matrix[0, 1] * ys + f.matrix[0, 2]
        v = f.matrix[1, 0] * xs + f.matrix[1, 1] * ys + f.matrix[1, 2]
        outside &= ~((u >= 0) & (u < f.crop_size) & (v >= 0) & (v < f.crop_size))
    return outside


# ---------------------------------------------------------------- geometry (no data)

def test_similarity_is_the_least_squares_fit():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    a, b = 0.7 * np.exp(0.4j), 12 - 5j
    dst = ((src @ [1, 1j]) * a + b).view(np.float64).reshape(5, 2)
    m = similarity(src, dst)
    np.testing.assert_allclose(m, [[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]], atol=1e-9)
    # with noise: same as the linear least-squares solution for (p, q, tx, ty) in [[p, -q, tx], [q, p, ty]]
    dst = dst + rng.normal(0, 2, dst.shape)
    A = np.concatenate([np.c_[src[:, 0], -src[:, 1], np.ones(5), np.zeros(5)],
                        np.c_[src[:, 1], src[:, 0], np.zeros(5), np.ones(5)]])
    p, q, tx, ty = np.linalg.lstsq(A, np.r_[dst[:, 0], dst[:, 1]], rcond=None)[0]
    np.testing.assert_allclose(similarity(src, dst), [[p, -q, tx], [q, p, ty]], atol=1e-9)


@pytest.mark.parametrize("scale", [0.4, 3.0])  # face smaller than the crop (upsampled) and larger (shrunk first)
def test_align_puts_landmarks_on_the_template(scale):
    """Dots drawn at a rotated, scaled copy of the template land on the template in the crop."""
    marks = _template_in_photo(25, scale, (300, 260))
    w, h = 600, 520
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    sigma = 2.5 * scale  # 2.5 crop px
    dots = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) for x, y in marks)
    photo = Image.fromarray(np.repeat((255 * dots)[..., None], 3, 2).clip(0, 255).astype(np.uint8))
    crop = (align(photo, [_face_at(marks)], 128)[0, 0].numpy() + 1) / 2  # (128, 128) in [0, 1]
    cy, cx = np.mgrid[0:128, 0:128] + 0.5
    for x, y in template(128):
        win = crop * (((cx - x) ** 2 + (cy - y) ** 2) < 8**2)
        assert abs((win * cx).sum() / win.sum() - x) < 0.3 and abs((win * cy).sum() / win.sum() - y) < 0.3


def test_whole_image_is_the_official_centre_crop():
    """An img_align_celeba-sized image aligned with whole_image equals CenterCrop(178) + Resize(128)."""
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (218, 178, 3), dtype=np.uint8))
    official = T.Compose([T.CenterCrop(178), T.Resize(128), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    ours = align(photo, [FaceDetector.whole_image(photo, 128)], 128)[0]
    assert (ours - official(photo)).abs().max() < 1.01 / 127.5  # uint8 rounding of the official crop only


# ---------------------------------------------------------------- paste-back (no data)

@pytest.fixture
def two_faces() -> tuple[Image.Image, list[Face]]:
    """A 640x420 photo with two overlapping faces: one large and tilted, one small and upright."""
    return texture(640, 420), [_face_at(_template_in_photo(-15, 2.2, (230, 200))),
                                _face_at(_template_in_photo(0, 0.8, (420, 240)))]


def test_identity_edit_returns_the_photo(two_faces):
    photo, faces = two_faces
    x = align(photo, faces, 128)
    assert np.array_equal(np.asarray(paste_back(photo, faces, x.clone())), np.asarray(photo))
    x_rec = x + 0.05 * torch.randn_like(x)  # G(x, c_org) != x: its reconstruction error must not reach the photo
    assert np.array_equal(np.asarray(paste_back(photo, faces, x_rec.clone(), x_ref=x_rec)), np.asarray(photo))


def test_inverted_crops_change_only_inside_the_masks(two_faces):
    photo, faces = two_faces
    x = align(photo, faces, 128)
    before, outside = np.asarray(photo, np.int16), _outside_masks(photo.size, faces)
    for detail in (True, False):
        after = np.asarray(paste_back(photo, faces, -x, detail=detail), np.int16)
        assert np.array_equal(after[outside], before[outside])
        # the big face's centre (230, 200) is fully masked: inverted (detail mode denoises the change at model
        # resolution, and this texture has detail at that scale, and a colour its shade change pushes out of sRGB
        # goes back towards the photo's own, keeping its hue, where it used to clip: there it goes half the way)
        core, want = np.s_[190:210, 220:240], 255 - 2 * before[190:210, 220:240]
        moved = np.abs(after[core] - before[core]).mean() / np.abs(want).mean()
        assert moved > (0.97 if not detail else 0.5), (detail, moved)


def test_detail_mode_keeps_full_resolution_detail(two_faces, monkeypatch):
    """A uniform +0.2 change to a 128 px crop brightens the large face by 25.5 without blurring its texture (the
    model's own change: ``SHADE_STRENGTH`` 1)."""
    from stargan_core.edit import blend

    monkeypatch.setattr(blend, "SHADE_STRENGTH", 1.0)
    photo, faces = two_faces
    sharp = np.asarray(photo, np.float64) + np.random.default_rng(0).integers(-12, 13, (420, 640, 3))
    photo = Image.fromarray(sharp.clip(0, 255).astype(np.uint8))
    x = align(photo, faces[:1], 128)
    after = np.asarray(paste_back(photo, faces[:1], x + 0.2), np.float64)
    core = np.asarray(photo, np.float64)[170:230, 200:260]  # well inside the big face's mask
    diff = after[170:230, 200:260] - core  # a grey-ish change is a change of shade: nearly the same on each channel
    assert np.abs(diff.mean((0, 1)) - 25.5).max() < 2 and diff.std() < 2  # the texture stays: the change is smooth
    pasted = np.asarray(paste_back(photo, faces[:1], x + 0.2, detail=False), np.float64)[170:230, 200:260]
    assert np.abs(pasted - core - 25.5).mean() > 3  # pasting the crop itself loses the pixel-level texture


def test_paste_back_edge_cases(two_faces):
    photo, faces = two_faces
    assert np.array_equal(np.asarray(paste_back(photo, [], torch.zeros(0, 3, 64, 64))), np.asarray(photo))
    with pytest.raises(ValueError):
        paste_back(photo, faces, torch.zeros(1, 3, 64, 64))
    kept = [f.matrix.copy() for f in faces]
    out = paste_back(photo, faces, align(photo, faces, 64) * 0.5)  # any model size: 64 px here
    assert all(np.array_equal(f.matrix, m) and f.crop_size == 128 for f, m in zip(faces, kept, strict=True))
    assert out.size == photo.size and out.mode == "RGB"
    assert np.array_equal(np.asarray(out)[_outside_masks(photo.size, faces)],
                          np.asarray(photo)[_outside_masks(photo.size, faces)])


def test_whole_image_option_round_trips():
    photo = texture(150, 200)
    face = FaceDetector.whole_image(photo, 128)
    x = align(photo, [face], 128)
    assert np.array_equal(np.asarray(paste_back(photo, [face], x)), np.asarray(photo))
    assert np.abs(np.asarray(paste_back(photo, [face], x, detail=False), float) - np.asarray(photo)).mean() < 2


# ---------------------------------------------------------------- real data

def _central_face(faces: list[Face]) -> Face:
    """The face nearest the centre of a 178x218 img_align_celeba image."""
    return min(faces, key=lambda f: np.hypot(*((f.box[:2] + f.box[2:]) / 2 - (89, 109))))


def _crop_image(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(((x.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8))


@pytest.mark.data
def test_face_counts_match_manifest(photos_dir, detector):
    manifest = json.loads((photos_dir / "MANIFEST.json").read_text())
    timings = []
    for entry in manifest:
        photo = load_image(photos_dir / entry["file"])
        t = time.perf_counter()
        faces = detector.detect(photo)
        timings.append(time.perf_counter() - t)
        confident = [f for f in faces if f.prob >= 0.95]  # extras below 0.95 are background false positives
        assert len(confident) == entry["faces_expected"], entry["file"]
        centres = [f.box[0] + f.box[2] for f in faces]
        assert centres == sorted(centres)
        for f in faces:  # landmarks inside their box, in full-resolution px
            assert (f.landmarks >= f.box[:2] - 5).all() and (f.landmarks <= f.box[2:] + 5).all()
        if entry["faces_expected"] == 0:
            assert faces == []
    print(f"detection: {np.mean(timings):.2f} s per photo on average, {max(timings):.2f} s at most")


@pytest.mark.data
def test_huge_photo_is_searched_downscaled_with_full_resolution_results(photos_dir, detector):
    small = load_image(photos_dir / "skimage_astronaut.png")
    big = small.resize((3072, 3072), Image.BICUBIC)  # 9.4 megapixels
    (f_small,), (f_big,) = detector.detect(small), detector.detect(big)
    np.testing.assert_allclose(f_big.box, 6 * f_small.box, atol=0.04 * 6 * (f_small.box[2] - f_small.box[0]))
    np.testing.assert_allclose(f_big.landmarks, 6 * f_small.landmarks, atol=6 * 3)


@pytest.mark.data
@pytest.mark.parametrize("name", ["fr_two_people.jpg", "facenet_multiface.jpg"])
def test_identity_round_trip_on_real_photos(photos_dir, detector, name):
    photo = load_image(photos_dir / name)
    faces = detector.detect(photo)
    x = align(photo, faces, 128)
    before, outside = np.asarray(photo, np.float64), _outside_masks(photo.size, faces)
    assert np.array_equal(np.asarray(paste_back(photo, faces, x.clone())), before)  # detail mode: exact
    pasted = np.asarray(paste_back(photo, faces, x.clone(), detail=False), np.float64)
    assert np.abs(pasted - before).mean() <= 2 and np.array_equal(pasted[outside], before[outside])
    inverted = np.asarray(paste_back(photo, faces, -x), np.float64)
    assert np.array_equal(inverted[outside], before[outside]) and np.abs(inverted - before)[~outside].mean() > 30


@pytest.mark.data
def test_template_rederived_from_a_sample(celeba_dir):
    """The documented procedure on every 20th image (100) gives CELEBA_TEMPLATE within 1 px."""
    any_face = FaceDetector(min_prob=0.0)
    marks = []
    for path in sorted((celeba_dir / "images").glob("*.jpg"))[::20]:
        marks.append(_central_face(any_face.detect(load_image(path))).landmarks)
    assert len(marks) == 100
    error = np.linalg.norm(np.mean(marks, 0) - CELEBA_TEMPLATE, axis=1)
    print("template re-derivation error per landmark (px at 178x218):", np.round(error, 2))
    assert error.max() < 1


@pytest.mark.data
def test_alignment_reproduces_the_official_crop(celeba_dir):
    """Aligning an img_align_celeba image lands its landmarks where the official crop has them (128 px)."""
    any_face = FaceDetector(min_prob=0.5)
    official = T.Compose([T.CenterCrop(178), T.Resize(128)])
    errors = []
    for path in sorted((celeba_dir / "images").glob("*.jpg"))[::40]:  # 50 images
        image = load_image(path)
        ours = _crop_image(align(image, [_central_face(any_face.detect(image))], 128)[0])
        found = [any_face.detect(im) for im in (ours, official(image))]  # re-detect on pixels: no shared code path
        if all(len(f) == 1 for f in found):
            errors.append(np.linalg.norm(found[0][0].landmarks - found[1][0].landmarks, axis=1).mean())
    print(f"mean landmark error vs the official crop: {np.mean(errors):.2f} px at 128 px ({len(errors)} images)")
    assert len(errors) >= 45 and np.mean(errors) < 2.0
