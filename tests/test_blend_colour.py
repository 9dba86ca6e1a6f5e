"""The colours blend.py gives, checked against CIELAB written out here: the shade step through the head mask, shade
and chroma changed without a change of hue (a colour pushed out of sRGB included), hair colours through the hair
region and the person segmenter, the colour classes; and the shipped model on real photos: no skin turned green or
blue, no glow beside the hair, a hair colour with another edit keeping its colour.
"""
import numpy as np
import pytest
import torch
from PIL import Image

from stargan_core.edit import blend
from stargan_core.edit.blend import apply_shade, crops_after, hair_change, head_masks, shade_change
from stargan_core.edit.faces import FaceDetector
from stargan_core.edit.geometry import align
from stargan_core.edit.images import load_image
from stargan_core.edit.masks import colour_classes


def test_masks_are_head_shaped_and_the_after_crops_use_them(monkeypatch):
    photo = Image.fromarray(np.full((128, 128, 3), 100, np.uint8))
    face = FaceDetector.whole_image(photo, 64)
    mask = head_masks([face], 64)[0, 0]
    assert mask[38, 32] == 1 and mask[0, 0] == 0 and mask[63, 0] == 0 and mask[0, 63] == 0  # corners: backdrop
    assert 0.4 < mask.mean() < 0.75  # the head shape covers 65% of the crop, with its feathered rim
    x_real = align(photo, [face], 64)
    monkeypatch.setattr(blend, "SHADE_STRENGTH", 1.0)  # the model's own change, as it is
    after = crops_after(x_real, x_real + 0.5, x_real, [face])
    assert torch.equal(after[..., mask == 0], x_real[..., mask == 0])
    np.testing.assert_allclose(after[..., mask == 1], (x_real + 0.5)[..., mask == 1], atol=1e-4)  # via CIELAB
    monkeypatch.setattr(blend, "SHADE_STRENGTH", 1.5)  # a grey's change is all shade: 1.5 times the L* change
    lab = [_lab(((t[0] + 1) / 2).permute(1, 2, 0).numpy().astype(np.float64))[..., 0][mask == 1]
           for t in (x_real, x_real + 0.5, crops_after(x_real, x_real + 0.5, x_real, [face]))]
    np.testing.assert_allclose(lab[2] - lab[0], 1.5 * (lab[1] - lab[0]), atol=0.05)


def test_a_hair_colour_takes_the_models_rendering_where_it_changes_the_hair():
    """Where the model changes the hair a lot, the crop becomes x_fake itself (the model's rendering, its drift
    from the photo included); where it changes nothing, the photo keeps its own colours exactly; below the chin,
    and on a face whose skin the model renders in other colours than the photo's, only the change is added."""
    s = 64
    face = FaceDetector.whole_image(Image.new("RGB", (s, s)), s)  # the template's landmarks: eyes at row 33,
    x = torch.tensor([0.2, -0.1, -0.3]).view(1, 3, 1, 1).expand(1, 3, s, s).clone()  # mouth at 48, skin colour
    x_ref = x + 0.06  # G's reconstruction, a little off (mostly lightness: its skin colour stays close)
    top, low = np.s_[..., :16, :], np.s_[..., 58:, :]  # hair above the eyes; the neck below the chin
    x_fake = x_ref.clone()
    x_fake[top] += 0.4
    x_fake[low] += 0.4
    change = hair_change(x, x_fake, x_ref, [face])
    np.testing.assert_allclose((x + change)[..., :12, :], x_fake[..., :12, :], atol=1e-5)  # the model's colour
    assert torch.equal(change[..., 20:52, :], torch.zeros(1, 3, 32, s))  # no change: the photo's own colours
    np.testing.assert_allclose(change[..., 61:, :], 0.4, atol=1e-5)  # below the chin: the change alone
    x_cast = x_ref.clone()
    x_cast[:, 1] += 0.3  # G "corrects" a colour cast: its skin is far greener than the photo's
    x_fake = x_cast.clone()
    x_fake[top] += 0.4
    np.testing.assert_allclose(hair_change(x, x_fake, x_cast, [face])[..., :12, :], 0.4, atol=1e-5)


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (..., 3) of sRGB values in [0, 1] (D65), written out here from the standard's formulas."""
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = lin @ np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                          [0.019334, 0.119193, 0.950227]]).T / [0.950456, 1.0, 1.088754]
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def test_an_identity_edit_changes_shade_and_saturation_but_never_hue():
    """Any shade and chroma-gain fields leave every colour's a* and b* with their signs (skin cannot turn green or
    blue), move L* by the shade field, and change nothing where the fields are 0. Checked against CIELAB written
    out here."""
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(1, 3, 32, 32, generator=g) * 0.8 + 0.1
    fields = torch.stack([torch.rand(32, 32, generator=g) * 40 - 20, torch.rand(32, 32, generator=g) * 0.9 - 0.7])[None]
    fields[..., :4] = 0
    after = (rgb + apply_shade(rgb, fields)).permute(0, 2, 3, 1).numpy()[0]
    lab0, lab1 = _lab(rgb.permute(0, 2, 3, 1).numpy()[0]), _lab(after)
    inside = (np.abs(lab1[..., 0] - lab0[..., 0] - fields[0, 0].numpy()) < 0.05) & (after.min(-1) > 0) & \
        (after.max(-1) < 1)  # away from the gamut's walls, where sRGB clips
    assert inside.mean() > 0.5
    for c in (1, 2):
        clear = inside & (np.abs(lab0[..., c]) > 1)
        assert np.array_equal(np.sign(lab1[..., c])[clear], np.sign(lab0[..., c])[clear])
    assert torch.equal(apply_shade(rgb, fields)[..., :4], torch.zeros(1, 3, 32, 4))
    clear = (np.abs(lab0[..., 1:]) > 1).all(-1)  # everywhere, gamut's walls included (see the next test)
    assert np.array_equal(np.sign(lab1[..., 1:])[clear], np.sign(lab0[..., 1:])[clear])
    x = rgb * 2 - 1
    assert torch.equal(shade_change(x, x), torch.zeros(1, 2, 32, 32))
    darker = shade_change(x * 0.5 - 0.5, x)
    assert (darker[:, 0] < 0).all()


def test_a_colour_pushed_out_of_srgb_goes_back_towards_the_photo_keeping_its_hue():
    """Skin lightened by 30 L* leaves sRGB (its red would pass 255): clipping would turn the second colour green
    (a* < 0 once its red is cut); the blend instead takes the colour back along the line to the photo's own
    colour, to the edge of sRGB: a* and b* keep their signs and hue angle, L* still rises, nothing is clipped."""
    rgb = torch.tensor([[230, 180, 150], [200, 160, 80], [120, 80, 60]], dtype=torch.float32).T[None, :, :, None] / 255
    fields = torch.tensor([[30.0, 30.0, 10.0], [0.2, 0.0, 0.0]])[None, :, :, None]  # L* +30 (+10), chroma x1.2
    after = (rgb + apply_shade(rgb, fields))[0, :, :, 0].T.numpy()
    lab0, lab1 = _lab(rgb[0, :, :, 0].T.numpy()), _lab(after)
    clipped = _lab(np.clip(_srgb(lab0 + np.array([30.0, 0, 0])), 0, 1))  # what clipping gives the second pixel
    assert clipped[1, 1] < 0  # the failure this guards against: pale skin turned green
    assert (after <= 1 + 1e-6).all() and (after >= -1e-6).all()
    assert (lab1[:, 1:] > 0).all()
    hue0, hue1 = (np.degrees(np.arctan2(lab[:, 2], lab[:, 1])) for lab in (lab0, lab1))
    assert np.abs(hue1 - hue0).max() < 1.0, (hue0, hue1)
    assert (lab1[:2, 0] - lab0[:2, 0] > 3).all()  # lighter, as far as sRGB allows
    assert abs(lab1[2, 0] - lab0[2, 0] - 10) < 0.1  # in gamut: exactly the change asked for


def _srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) to unclipped sRGB in [0, 1], written out (the inverse of ``_lab``)."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = np.where(f > 6 / 29, f ** 3, (f - 16 / 116) / 7.787) * [0.950456, 1.0, 1.088754]
    lin = xyz @ np.array([[3.240479, -1.537150, -0.498535], [-0.969256, 1.875992, 0.041556],
                          [0.055648, -0.204043, 1.057311]]).T
    return np.where(lin > 0.0031308, 1.055 * np.abs(lin) ** (1 / 2.4) - 0.055, 12.92 * lin)


def _template_head(s: int = 64) -> tuple[Image.Image, list]:
    """A drawn head in the CelebA framing: grey backdrop, a skin-coloured face and a dark brown hair cap."""
    from PIL import ImageDraw
    photo = Image.new("RGB", (s, s), (200, 200, 205))
    draw = ImageDraw.Draw(photo)
    draw.ellipse((0.17 * s, 0.05 * s, 0.83 * s, 0.8 * s), fill=(70, 45, 30))  # hair
    draw.ellipse((0.27 * s, 0.3 * s, 0.73 * s, 0.95 * s), fill=(215, 160, 130))  # face, brows to chin
    return photo, [FaceDetector.whole_image(photo, s)]


def test_colour_classes_tell_hair_from_skin_and_backdrop():
    photo, faces = _template_head()
    p = colour_classes(align(photo, faces, 64), faces)[0]
    assert p[0, 8, 32] > 0.9 and p[0, 30, 14] > 0.9  # the hair: above the face and beside it
    assert p[1, 45, 32] > 0.9 and p[1, 25, 32] > 0.9  # the skin: a cheek and the forehead
    assert p[2, 2, 2] > 0.9 and p[2, 30, 3] > 0.9  # the backdrop: a corner and beside the hair


def test_an_identity_edit_stops_at_the_backdrop_and_a_hair_colour_where_the_person_stops(monkeypatch):
    """A change over the whole crop (the model's drift) reaches the hair and the face of an identity edit, not the
    backdrop beside them (colour classes); a hair colour goes through its hair region (not its colour classes: they
    cut blond hair), times the person segmenter's map, HAIR_STRENGTH times stronger where the colour is not skin's;
    without a segmenter, through the region alone."""
    photo, faces = _template_head()
    x_real = align(photo, faces, 64)
    x_fake = (x_real + 0.1).clamp(-1, 1)
    head = (crops_after(x_real, x_fake, x_real, faces) - x_real).abs().mean(1)[0] * 127.5
    assert head[8, 32] > 5 and head[45, 32] > 5 and head[30, 3] < 0.3
    who = torch.zeros(1, 1, 64, 64)
    who[..., :32] = 1  # a person on the left half, backdrop on the right
    monkeypatch.setattr(blend, "person", lambda x: who)
    hair = (crops_after(x_real, x_fake, x_real, faces, "hair") - x_real).mean(1)[0] * 127.5
    mask = head_masks(faces, 64, "hair")[0, 0]
    left, right = mask.clone(), mask.clone()
    left[:, 32:], right[:, :32] = 0, 0
    skin = colour_classes(x_real, faces)[0, 1]
    want = 12.75 * (1 + (blend.HAIR_STRENGTH - 1) * (1 - skin))  # stronger, but not on skin-coloured pixels
    assert (want[mask == 1] > 16).float().mean() > 0.8  # most of the hair region is the (brown) hair
    soft = blend.denoise(who)[0, 0]  # the map softened like the change: 1 px of model Gaussian at its edge
    assert torch.allclose(hair[mask == 1], (want * soft)[mask == 1], atol=0.05)
    assert torch.allclose(hair[:, :28][left[:, :28] == 1], want[:, :28][left[:, :28] == 1], atol=0.05)
    assert (hair[:, 36:][right[:, 36:] > 0].abs() < 1e-3).all()  # the backdrop, away from the edge: untouched
    monkeypatch.setattr(blend, "person", lambda x: None)  # no segmenter: the region alone
    hair = (crops_after(x_real, x_fake, x_real, faces, "hair") - x_real).mean(1)[0] * 127.5
    assert torch.allclose(hair[mask == 1], want[mask == 1], atol=0.05)


def _skin_turned(before: Image.Image, after: Image.Image, face) -> tuple[float, float]:
    """The share of the face box's skin-coloured pixels (a* > 5 and b* > 5) turned green or blue (a* < 0 or
    b* < 0), and the mean CIELAB change there."""
    x0, y0, x1, y1 = (int(round(t)) for t in face.box)
    lab0, lab1 = (_lab(np.asarray(im, np.float64)[max(0, y0):y1, max(0, x0):x1] / 255) for im in (before, after))
    skin = (lab0[..., 1] > 5) & (lab0[..., 2] > 5)
    return float(((lab1[..., 1] < 0) | (lab1[..., 2] < 0))[skin].mean()), float(np.linalg.norm(lab1 - lab0,
                                                                                                 axis=-1).mean())


@pytest.fixture(scope="module")
def shipped():
    from pathlib import Path

    from stargan_core.pipeline import StarGANPipeline
    return StarGANPipeline.from_pretrained(str(Path(__file__).resolve().parents[1] / "checkpoints" / "celeba128"),
                                           path="fp32")


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("photo, choices", [("photos/facenet_paul_rudd.jpg", {"gender": "Female"}),
                                            ("photos/skimage_astronaut.png", {"gender": "Male"}),
                                            ("london_faces/neutral/025.jpg", {"age": "Old"})])
def test_gender_and_age_edits_paint_no_skin_green_or_blue(shared_data, shipped, photo, choices):
    """The shipped model on real photos (one per kind): at most 0.5% of the face's skin turns green or blue (the
    session-8 blend painted blotches on Rudd's female edit and a green mouth on the London woman's, and clipping
    lightened skin in sRGB left some too: docs/BLENDING.md has the figures), and the edit stays visible (>= 4 dE in
    the face box)."""
    before = load_image(shared_data / photo)
    result = shipped(before, choices)
    turned, de = _skin_turned(before, result.image, result.faces[0].face)
    assert turned <= 0.005 and de >= 4, (turned, de)


@pytest.mark.data
def test_the_person_segmenter_finds_the_person_and_is_optional(shared_data, monkeypatch):
    """MediaPipe's selfie segmentation, converted to ONNX (``checkpoints/segmenter``): on a real aligned face the
    face and hair are the person and the crop's top corners (a curtain) are not; a missing model file gives None
    and one warning, never an error."""
    from stargan_core.edit import segment
    from stargan_core.edit.faces import FaceDetector

    photo = load_image(shared_data / "photos" / "fr_obama-1080p.jpg")
    faces = FaceDetector().detect(photo)
    who = segment.person(align(photo, faces, 128))
    assert who.shape == (1, 1, 128, 128) and who.min() >= 0 and who.max() <= 1
    assert who[0, 0, 60:90, 50:78].mean() > 0.95  # the face
    assert who[0, 0, :12, :12].mean() < 0.1 and who[0, 0, :12, -12:].mean() < 0.1  # the backdrop
    monkeypatch.setattr(segment, "MODEL", segment.MODEL.with_name("missing.onnx"))
    segment.session.cache_clear()
    try:
        with pytest.warns(UserWarning, match="segmenter unavailable"):
            assert segment.person(align(photo, faces, 128)) is None
    finally:
        segment.session.cache_clear()


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("photo", ["photos/fr_obama-1080p.jpg", "london_faces/neutral/001.jpg"])
def test_a_blond_edit_leaves_the_backdrop_beside_the_hair_alone(shared_data, shipped, photo, monkeypatch):
    """The glow: the shipped model's blond edit changes the backdrop beside the hair (``benchmarks.colour``'s map:
    inside the hair region, neither face nor the hair's colour) by at most 2/255 on average (the issue's bar), and
    still changes the face box by >= 4 dE; without the segmenter the same edit lights that backdrop up (> 5/255)."""
    from benchmarks.colour import backdrop_beside_hair, colour_figures, lab_image
    from stargan_core.edit import segment

    before = load_image(shared_data / photo)
    result = shipped(before, {"hair": "Blond"})
    faces = [r.face for r in result.faces]
    lab = lab_image(before)
    backdrop = backdrop_beside_hair(lab, faces, 128)
    assert backdrop.sum() > 500
    _, de, (glow,) = colour_figures(before, lab, result.image, faces, [backdrop])
    assert glow <= 2 and de[0] >= 4, (glow, de)
    monkeypatch.setattr(segment, "session", lambda: None)
    _, _, (glow,) = colour_figures(before, lab, shipped(before, {"hair": "Blond"}).image, faces, [backdrop])
    assert glow > 5, glow


@pytest.mark.data
@pytest.mark.slow
def test_a_hair_colour_with_another_edit_keeps_its_colour(shared_data, shipped):
    """Blond and old at once: the hair region takes the hair colour as the hair edit alone gives it (CIELAB change
    at the crown within 2.5 of blond alone; before, the whole edit went through the shade-only blend and blond lost
    its hue), and the face takes the age edit (the cheeks change as with old alone, not as with blond alone)."""
    from benchmarks.colour import lab_image

    photo = load_image(shared_data / "photos" / "skimage_astronaut.png")
    faces = shipped.detect(photo)
    x0, y0, x1, y1 = (int(t) for t in faces[0].box)
    crown = np.s_[:, max(0, y0 - (y1 - y0) // 3):y0, x0:x1]
    cheeks = np.s_[:, y0 + (y1 - y0) // 2:y0 + 3 * (y1 - y0) // 4, x0 + (x1 - x0) // 5:x1 - (x1 - x0) // 5]
    lab0 = lab_image(photo)
    change = {k: lab_image(shipped(photo, ch, faces=faces).image) - lab0
              for k, ch in (("blond", {"hair": "Blond"}), ("old", {"age": "Old"}),
                            ("both", {"hair": "Blond", "age": "Old"}))}
    at = {k: d[crown].mean((1, 2)) for k, d in change.items()}
    assert (at["blond"] - at["both"]).abs().max() < 2.5, at
    assert at["blond"][1] > 3  # blond here is a visible hue change (a*), which the shade-only blend cannot make
    face = {k: d[cheeks].mean((1, 2)) for k, d in change.items()}
    assert (face["both"] - face["old"]).norm() < (face["both"] - face["blond"]).norm(), face
