"""blend.py and masks.py: the head mask, the denoised change and its edge-aware upsampling.

Pixels outside the head masks are checked against an ellipse computed here from each face's landmarks in photo
pixels (the code under test works in crop pixels through ``Face.matrix``); denoising against synthetic speckle
and a smooth map; edge-awareness against a photo with one known sharp edge. The colours the blend gives (CIELAB,
shade, hue, hair colours): test_blend_colour.py.
"""
import numpy as np
import pytest
import torch
from PIL import Image

from stargan_core.edit import masks
from stargan_core.edit.blend import DENOISE_SIGMA, crops_after, denoise, paste_back, upsample
from stargan_core.edit.faces import FaceDetector
from stargan_core.edit.geometry import align, key_points
from stargan_core.edit.images import load_image


def _ellipse_rho(face, size: tuple[int, int], drop: float, half_w: float, half_h: float,
                 half_h_low: float | None = None, power_low: float = 2.0) -> np.ndarray:
    """(H, W) the elliptic radius (1 on the outline) of each photo pixel centre, for an ellipse centred ``drop``
    eye-to-mouth distances below the eye midpoint (below its centre: a superellipse of power ``power_low`` and
    half-height ``half_h_low``), computed here from the face's landmarks in photo px."""
    eyes, mouth = np.split(key_points(face.landmarks), [2])
    down = mouth[0] - eyes.mean(0)
    m = np.hypot(*down)
    centre = eyes.mean(0) + drop * down
    xs, ys = np.meshgrid(np.arange(size[0]) + 0.5, np.arange(size[1]) + 0.5)
    along = ((xs - centre[0]) * down[0] + (ys - centre[1]) * down[1]) / m  # along "down"
    across = ((xs - centre[0]) * down[1] - (ys - centre[1]) * down[0]) / m
    p = np.where(along > 0, power_low, 2.0)
    ay = np.where(along > 0, along / ((half_h_low or half_h) * m), -along / (half_h * m))
    return (np.abs(across / (half_w * m)) ** p + ay ** p) ** (1 / p)


@pytest.mark.data
@pytest.mark.slow
def test_pixels_outside_the_head_masks_never_change_on_every_photo(photos_dir):
    """A strong, speckled change (inverted crops plus noise) reaches no pixel outside the head ellipses; a
    hair-colour edit ("hair" region) none outside its wider ellipse, nor inside the face."""
    detector = FaceDetector()
    g = torch.Generator().manual_seed(0)
    n_photos = 0
    for path in sorted(p for p in photos_dir.iterdir() if p.suffix in (".jpg", ".png")):
        photo = load_image(path)
        faces = detector.detect(photo, crop_size=64)
        if not faces:
            continue
        n_photos += 1
        x = align(photo, faces, 64)
        x_fake = (-x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
        before = np.asarray(photo)
        after = np.asarray(paste_back(photo, faces, x_fake, x))
        inside = np.any([_ellipse_rho(f, photo.size, -masks.HEAD_RISE, masks.HEAD_HALF_W, masks.HEAD_HALF_H,
                                      masks.HEAD_HALF_H_LOW, masks.LOW_POWER)
                         < 1.0001 for f in faces], axis=0)
        assert np.array_equal(after[~inside], before[~inside]), path.name
        assert np.abs(after.astype(int) - before)[inside].mean() > 20, path.name  # and the heads did change
        hair = np.asarray(paste_back(photo, faces, x_fake, x, region="hair"))
        inside = np.any([_ellipse_rho(f, photo.size, -masks.HAIR_RISE, masks.HAIR_HALF_W, masks.HAIR_HALF_H,
                                      masks.HAIR_HALF_H_LOW, masks.LOW_POWER)
                         < 1.0001 for f in faces], axis=0)
        face = np.any([_ellipse_rho(f, photo.size, masks.FACE_DROP, masks.FACE_HALF_W, masks.FACE_HALF_H)
                       < 0.9999 - masks.FACE_FEATHER for f in faces], axis=0)
        assert np.array_equal(hair[~inside | face], before[~inside | face]), path.name
        # the hair region now stops where the photo's colour says backdrop or skin: much of its outline is left
        assert np.abs(hair.astype(int) - before)[inside & ~face].mean() > 5, path.name
    assert n_photos == 9


def test_identity_edits_return_the_photo_exactly():
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 260, 3), dtype=np.uint8))
    face = FaceDetector.whole_image(photo, 64)
    x_ref = align(photo, [face], 64) + 0.05 * torch.randn(1, 3, 64, 64)  # G(x, c_org) != x
    assert np.array_equal(np.asarray(paste_back(photo, [face], x_ref.clone(), x_ref)), np.asarray(photo))
    x_real = align(photo, [face], 64)
    assert torch.equal(crops_after(x_real, x_ref.clone(), x_ref, [face]), x_real)


def test_identity_through_the_pipeline_is_exact(photos_dir):
    from conftest import tiny_pipeline
    pipe = tiny_pipeline()
    photo = photos_dir / "skimage_astronaut.png"
    for result in (pipe(photo, {"hair": "blond", "gender": "male"}, 0.0),
                   pipe(photo, {"hair": "brown"}, current={"hair": "brown"})):
        assert np.array_equal(np.asarray(result.image), np.asarray(Image.open(photo)))


def test_denoising_removes_speckle_and_keeps_a_smooth_change():
    """Per-pixel speckle (std 20/255) loses >= 90% of its energy; a smooth change (a 60/255 blob of radius
    s/4 and a ramp) comes through within 1/255 away from the crop's border."""
    s = 64
    t = torch.arange(s) + 0.5
    v, u = torch.meshgrid(t, t, indexing="ij")
    blob = 60 / 127.5 * torch.exp(-((u - 32) ** 2 + (v - 24) ** 2) / (2 * (s / 4) ** 2))
    smooth = torch.stack([blob, 0.5 * blob, -blob + (u - 32) / 64 * 40 / 127.5])[None]
    speckle = 20 / 127.5 * torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(0))
    inner = np.s_[..., 6:-6, 6:-6]
    assert ((denoise(smooth) - smooth)[inner].abs().max() * 127.5) < 1
    left = denoise(smooth + speckle) - smooth
    assert (left[inner] ** 2).mean() < 0.1 * (speckle[inner] ** 2).mean()
    assert torch.equal(denoise(torch.zeros(1, 3, s, s)), torch.zeros(1, 3, s, s))


def test_upsampling_follows_the_photos_edge():
    """A change blurred over model px across a sharp edge in the photo gets a sharp step at that very edge."""
    h, w, scale = 40, 200, 10.0  # 10 photo px per model px
    guide = torch.full((3, h, w), 200.0)
    guide[:, :, :97] = 40.0  # dark hair left of x = 97, light wall right of it
    xs = torch.arange(w) + 0.5
    # a step blurred as ``denoise`` blurs it (a Gaussian of sigma: Phi(x) ~ sigmoid(1.7 x), so a logistic of 0.6 sigma)
    blurry = (60 * torch.sigmoid(-(xs - 97) / (0.6 * DENOISE_SIGMA * scale))).expand(3, h, w)
    sharp = upsample(blurry.clone(), guide, scale)[0, h // 2]
    steps = sharp.diff().abs()
    ramp = blurry[0, 0].diff().abs().max()  # 2.5 levels per px at most: no edge in the change itself
    assert steps.max() > 6 * ramp and int(steps.argmax()) == 96  # a step, at the photo's edge
    assert sharp[:80].min() > 45 and sharp[110:].abs().max() < 12  # more of it on the hair than on the wall


@pytest.mark.data
@pytest.mark.slow
def test_bench_blend_prints_a_clean_head_against_the_square(photos_dir, capsys):
    """``bench blend`` on one photo with the shipped model: the head-shaped paste leaves the crop square outside
    the mask at exactly 0 where the square paste does not, and cuts the Laplacian energy at model px by half."""
    from benchmarks import __main__ as bench
    from stargan_core.weights.hub import shipped_release
    release = shipped_release()
    bench.main(["blend", "--model", str(release), "--path", "fp32", "--photos", "fr_two_people.jpg"])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("fr_two_people.jpg"))
    faces, edits, out_square, out_head, *_, model_cut, _, _ = row.split()[1:]
    assert (faces, edits, out_head) == ("2", "5", "0.00")
    assert float(out_square) > 1 and int(model_cut.rstrip("%")) >= 50
