"""Blending: put an edit back into the photo so that it reads as an edit of the photo, not a pasted square.

Steps per face, after ``faces.align`` and the generator:

1. **The change** ``x_fake - x_ref`` (``x_ref = G(x_real, c_org)``, so the model's reconstruction error cancels) is
   *denoised at model resolution* by a Gaussian of ``DENOISE_SIGMA`` model px: the model's per-pixel speckle
   goes (its Laplacian energy drops 32x on blond edits of 32 held-out CelebA faces, 32,450-iteration model), a change
   smooth over a few pixels passes within 1/255. Edges it softens are restored by step 2. sigma 1 and a guided
   window of radius 1 model px keep more of the edit than 1.5 and 2 did (``bench blend``: the classifier found
   the target on 37.8% of re-detected edited faces instead of 29.7%, at the same Laplacian cut).
2. It is warped to the photo and **upsampled edge-aware**: a fast guided filter steered by the full-resolution
   photo re-fits the change, window by window, as a linear function of the photo's colours, so a hair-colour
   change stops at the real hair edge instead of fading out as a blurry blob. A face drawn at under 2 photo px per
   model px (``UPSAMPLE_MIN_SCALE``) is only warped: there is no finer detail for the filter to follow.
3. It is applied through a **head-shaped mask**: a feathered shape placed from the face's landmarks in the CelebA
   framing (face, hair around and above it, and below the centre squarer shoulders where long hair falls beside
   the neck), zero outside, so the backdrop beside the head is never touched. A hair-colour edit goes through the
   **hair region** instead (``hair_mask``): a wider, taller shape that reaches long hair beside the face, with the
   face itself (brows to chin, and any neighbour's face) left out, because the model's hair edits also tint the
   skin. Every mask also fades out at the crop's edges, where the change ends. Against the plain ellipses of the
   first version (``bench blend --celeba 60``, 31,400-iteration model), the share of edits the classifier still finds
   after re-detection rose on 60 held-out CelebA images from 48.1% to 55.4% (hair colours: 50.0% to 57.4%), and a
   long-haired face no longer keeps its old colour below the chin.

4. A hair colour also **takes the model's own colour** where the model changes the hair (``hair_change``): the
   change plus the model's drift ``G(x, c_org) - x``, weighted by the size of the change, so the hair looks like
   the model's rendering of the new colour, not like the photo's hair shifted by the model's change. An attribute
   judge finds the new colour on 73.4% of 192 hair edits after re-detection instead of 60.9% (``bench blend
   --celeba 60``, 32,450-iteration model; raw crops 91.7%). Two guards: it fades out below the mouth (the hair
   region there holds the neck), and it is off for a face whose skin the model renders far from the photo's
   colours (a colour-cast scan, whose cast the model "corrects": imported, temples turned orange).

5. **Colour.** A gender or age edit changes shade and saturation, never hue (``shade_change``, ``apply_shade``):
   CIELAB L* moves by the model's change and a* b* are scaled by its chroma gain, at photo px, so the model's
   colour drift can no longer paint skin green or blue. Every edit also stops where the photo's own colour says
   it has left its region (``colour_classes``: hair, skin and backdrop told apart by colour samples taken where
   each must be): a hair colour stays off the backdrop and the forehead, an identity edit off the backdrop, where
   the model's drift lit a halo around the head (issue 29; figures in ``docs/BLENDING.md``).

The guided filter is kornia's (``kornia.filters.guided_blur``, He et al. 2013; ``subsample`` is the fast guided
filter of He & Sun 2015). ``crops_after`` gives the UI's "after" crop through the very same mask and denoising.

Other ways to apply a hair-colour change, measured and not adopted: ``docs/BLENDING.md``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import lab_to_rgb, rgb_to_lab
from kornia.filters import gaussian_blur2d, guided_blur
from PIL import Image

from .faces import Face, _apply, _at_size, _sample, _to_tensor, align, footprint, key_points

# The head in the CelebA framing, in units of the face's eye-to-mouth distance (0.234 of the crop side on the
# template): the ellipse's centre lies this far above the eye midpoint, and its half-width and half-height. At the
# template it spans x 0.12-0.88 and y 0.03-0.91 of the crop: CelebA crops are mostly head and hair, and only
# their corners and the sides of the neck are backdrop.
HEAD_RISE, HEAD_HALF_W, HEAD_HALF_H = 0.2, 1.62, 1.88
FEATHER = 0.15  # the mask ramps from 1 to 0 over the outer 15% of the ellipse's radius
# Below its centre the shape is a superellipse of this power reaching this far down (half-height; the crop's
# bottom edge lies 2.06 below the eyes): squarer shoulders, so hair that falls beside the neck is inside. With a
# plain ellipse a long-haired face kept its old colour below the chin (two-tone hair), and edits survived
# re-detection less often. Power 6 reached the collar of short-haired men, where the model tints shirts.
LOW_POWER, HEAD_HALF_H_LOW = 4.0, 2.4
CROP_FEATHER = 0.03  # every mask also fades to 0 over the outer 3% of the crop's side: the change is only known
# inside the crop, and a mask still open at its edge would cut the change off in a hard line (tall hair, a chin)
# A hair-colour edit: a wider, taller shape (hair that falls beside the face and rises above it), less the face
# inside it: eyebrows to chin and cheek to cheek, in the same units, ramping over 25% of its radius.
HAIR_RISE, HAIR_HALF_W, HAIR_HALF_H, HAIR_HALF_H_LOW = 0.35, 2.0, 2.3, 2.4
FACE_DROP, FACE_HALF_W, FACE_HALF_H, FACE_FEATHER = 0.5, 0.9, 1.2, 0.25
DENOISE_SIGMA = 1.0  # model px
UPSAMPLE_RADIUS, UPSAMPLE_EPS = 1.0, 0.05 ** 2  # model px (in photo px for each face); guidance in [0, 1]: a window
# follows the photo's colours where their contrast is well above 0.05 (hair against a wall), not skin texture
UPSAMPLE_MIN_SCALE = 2.0  # photo px per model px: a face drawn smaller has no detail for the filter to add (its
# window would be 1 photo px), so its change is only warped, which halves a 6-face photo's paste-back (0.11 s -> 0.05)
# A hair colour imports the model's own rendering where it changes the hair (``hair_change``): the weight ramps
# from 0 to 1 as the change |x_fake - x_ref| (mean over RGB, on the [-1, 1] scale) goes from IMPORT_FROM to IMPORT_TO,
IMPORT_FROM, IMPORT_TO = 0.05, 0.15
# fades out from 1 to 0 between these distances below the eyes (in eye-to-mouth distances: the mouth is at 1, the chin
# about 1.7), where the hair region holds the neck, a collar or a beard more often than hair,
IMPORT_FADE_BELOW = (1.0, 1.5)
# and is off for a face whose skin the model renders in another colour than the photo's (the CIELAB a*b* distance
# of their mean over the face, fading from 1 to 0 between these): a colour-cast scan, where the model "corrects"
# the cast and importing it turned temples orange. The shared photos' faces measure 1.5 to 12 and the green scan's
# 19 to 27; the 95th percentile of 100 held-out CelebA faces is 14.6.
IMPORT_SKIN_DE = (12.0, 18.0)
# Every other edit (gender, age) is a change of shade and of saturation, not of hue (``shade_change``): CIELAB L*
# moves by the model's own (denoised) change, and a* and b* are scaled together by the model's chroma gain, so no
# colour can turn into another hue (skin into green or blue). The gain is (C_fake + CHROMA_C0) / (C_ref + CHROMA_C0)
# (C = CIELAB chroma; C0 keeps near-greys from ratios of noise), its log blurred by CHROMA_SIGMA model px (the eye reads
# colour at a lower resolution than shade) and held to CHROMA_GAIN: hair may go grey, skin may pale or flush.
CHROMA_C0, CHROMA_SIGMA, CHROMA_GAIN = 5.0, 2.0, (0.3, 1.25)
# Where the hair stops (``colour_classes``): each crop pixel is hair, skin or backdrop by how common its colour is
# among samples of each (CIELAB, L* halved so that shading counts less than hue; Gaussian kernel of COLOUR_SIGMA,
# COLOUR_SAMPLES per class): backdrop from the crop outside the hair region above the eyes, skin from the face
# below the eyes, hair from the head above the forehead, less what looks like either of the others.
COLOUR_SIGMA, COLOUR_SAMPLES, COLOUR_FLOOR, COLOUR_SIZE = 6.0, 256, 1e-3, 64
COLOUR_MIN_CHROMA = 3.0  # a crop whose mean CIELAB chroma is under this is greyscale: every class ties there
COLOUR_SEEN = 0.1  # the hair sample keeps only colours rarer than this among the skin and the backdrop samples:
# short hair leaves forehead and backdrop inside the skull's outline, and kept there they lit the backdrop again
# The edit is kept where its own class is as likely as the others (a tie keeps it: a colour that cannot be told
# apart is edited, as before), and fades out as another class's lead grows to COLOUR_MARGIN.
COLOUR_MARGIN = 0.5
SKULL_HALF_W, SKULL_HALF_H = 1.15, 1.6  # the hair sample: above the face, inside a head without its hair's volume


def head_mask(face: Face, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The head mask at crop coordinates (u, v) (any shape, crop px of ``face.crop_size``): 1 inside the head,
    a smoothstep ramp to exactly 0 on its outline and beyond. Placed and scaled by the face's landmarks."""
    return _ellipse(face, u, v, -HEAD_RISE, HEAD_HALF_W, HEAD_HALF_H, FEATHER, HEAD_HALF_H_LOW, LOW_POWER)


def hair_mask(face: Face, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Where a hair-colour edit goes: a wider, taller head shape (hair falls beside the face and rises above it)
    less the face itself, where such an edit has no business: the model's hair edits also tint the skin (a blond
    edit casts yellow over a face). Same arguments as head_mask."""
    hair = _ellipse(face, u, v, -HAIR_RISE, HAIR_HALF_W, HAIR_HALF_H, FEATHER, HAIR_HALF_H_LOW, LOW_POWER)
    return hair * (1 - face_mask(face, u, v))


def face_mask(face: Face, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The face inside the head, eyebrows to chin and cheek to cheek (1 inside, ramping to 0 on its ellipse)."""
    return _ellipse(face, u, v, FACE_DROP, FACE_HALF_W, FACE_HALF_H, FACE_FEATHER)


def region_mask(face: Face, u: torch.Tensor, v: torch.Tensor, region: str = "head") -> torch.Tensor:
    """``hair_mask`` for region "hair", else ``head_mask``; either fades to 0 at the crop's edges."""
    mask = hair_mask(face, u, v) if region == "hair" else head_mask(face, u, v)
    return mask * _inside_crop(u, face.crop_size) * _inside_crop(v, face.crop_size)


def _inside_crop(t: torch.Tensor, size: int) -> torch.Tensor:
    """1 inside the crop, a smoothstep ramp over its outer ``CROP_FEATHER`` to exactly 0 on its edge and beyond."""
    r = (torch.minimum(t, size - t) / (CROP_FEATHER * size)).clamp(0, 1)
    return r * r * (3 - 2 * r)


def _ellipse(face: Face, u: torch.Tensor, v: torch.Tensor, drop: float, half_w: float, half_h: float,
             feather: float, half_h_low: float | None = None, power_low: float = 2.0) -> torch.Tensor:
    """A feathered ellipse on the face's own axes, in units of its eye-to-mouth distance m: centred ``drop`` m
    below the eye midpoint (negative: above), half-axes ``half_w`` m across and ``half_h`` m along; below the
    centre, optionally a superellipse of power ``power_low`` reaching ``half_h_low`` m down. 1 inside, a smoothstep
    ramp over the outer ``feather`` of its radius, exactly 0 on it and beyond."""
    eyes, down, m = _face_frame(face)
    cx, cy = eyes + drop * down
    (dx, dy), du, dv = down / m, u - cx, v - cy
    x, y = du * dy - dv * dx, du * dx + dv * dy  # coordinates across and along the head's own "down" axis
    below = y > 0
    p = torch.where(below, power_low, 2.0)
    ay = torch.where(below, y / ((half_h_low or half_h) * m), -y / (half_h * m))
    rho = ((x / (half_w * m)).abs() ** p + ay ** p) ** (1 / p)  # 1 on the outline
    r = ((1 - rho) / feather).clamp(0, 1)
    return r * r * (3 - 2 * r)


def _face_frame(face: Face) -> tuple[np.ndarray, np.ndarray, float]:
    """The face's eye midpoint, its "down" vector (eye midpoint -> mouth) and that vector's length m, in crop px."""
    eyes, mouth = np.split(key_points(_apply(face.matrix, face.landmarks)), [2])  # (2, 2), (1, 2) in crop px
    down = mouth[0] - eyes.mean(0)
    m = float(np.hypot(*down))
    if m == 0:  # degenerate landmarks: fall back on the template's
        down, m = np.array([0.0, 1.0]) * 0.234 * face.crop_size, 0.234 * face.crop_size
    return eyes.mean(0), down, m


def _below_eyes(face: Face, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """How far (u, v) lies below the eyes along the face's own axis, in eye-to-mouth distances (mouth: 1)."""
    eyes, down, m = _face_frame(face)
    return ((u - eyes[0]) * down[0] + (v - eyes[1]) * down[1]) / m ** 2


def head_masks(faces: list[Face], size: int, region: str = "head") -> torch.Tensor:
    """Each face's mask (``region_mask``) on its aligned crop at ``size`` px (pixel centres): (N, 1, size, size)."""
    t = torch.arange(size, dtype=torch.float64) + 0.5
    v, u = torch.meshgrid(t, t, indexing="ij")
    masks = [region_mask(_at_size(f, size), u, v, region).float() for f in faces]
    return torch.stack(masks)[:, None] if masks else torch.zeros(0, 1, size, size)


def denoise(change: torch.Tensor) -> torch.Tensor:
    """The change (N, 3, s, s) with the model's per-pixel speckle filtered out: a Gaussian of ``DENOISE_SIGMA``."""
    k = 2 * round(3 * DENOISE_SIGMA) + 1
    return gaussian_blur2d(change.float(), k, (DENOISE_SIGMA, DENOISE_SIGMA), border_type="replicate")


def colour_classes(x_real: torch.Tensor, faces: list[Face]) -> torch.Tensor:
    """(N, 3, s, s): how likely each crop pixel is hair, skin or backdrop, judged by its colour in the photo
    (``COLOUR_SIGMA``). A colour seen in none of the three samples counts as hair, as the regions did before.
    Judged on the crop shrunk to ``COLOUR_SIZE`` px, and smoothly enlarged back."""
    full, size = x_real.shape[-1], min(x_real.shape[-1], COLOUR_SIZE)
    t = torch.arange(size, dtype=torch.float64) + 0.5
    v, u = torch.meshgrid(t, t, indexing="ij")
    x_small = F.interpolate(x_real.float().clamp(-1, 1), size=(size, size), mode="area")
    lab = rgb_to_lab((x_small + 1) / 2) * torch.tensor([0.5, 1, 1]).view(1, 3, 1, 1)
    out = []
    for f, x in zip((_at_size(f, size) for f in faces), lab, strict=True):
        if x[1:].norm(dim=0).mean() < COLOUR_MIN_CHROMA:  # a greyscale photo: no colour to tell them apart by
            out.append(torch.full((3, size, size), 1 / 3))
            continue
        below, face = _below_eyes(f, u, v), face_mask(f, u, v)
        outer = _ellipse(f, u, v, -HAIR_RISE, HAIR_HALF_W, HAIR_HALF_H, FEATHER, HAIR_HALF_H_LOW, LOW_POWER)
        skull = _ellipse(f, u, v, -HEAD_RISE, SKULL_HALF_W, SKULL_HALF_H, FEATHER)
        seeds = [(skull > 0.5) & (face == 0) & (below < -0.3),  # hair (and whatever else is above the face)
                 (face == 1) & (below > 0.1),  # skin: cheeks, nose, mouth, chin
                 (outer == 0) & (below < 0)]  # backdrop: the crop's corners beside and above the hair
        pixels = x.flatten(1).T  # (s*s, 3)
        dens = [None, *(_density(pixels, x[:, m].T) for m in seeds[1:])]
        hair = seeds[0].flatten() & (torch.maximum(dens[1], dens[2]) < COLOUR_SEEN)  # less forehead and backdrop
        dens[0] = _density(pixels, pixels[hair])
        out.append((torch.stack([dens[0] + COLOUR_FLOOR, *dens[1:]]) / (sum(dens) + COLOUR_FLOOR)).view(3, size, size))
    out = torch.stack(out) if out else torch.zeros(0, 3, size, size)
    return F.interpolate(out, size=(full, full), mode="bilinear", align_corners=False) if size != full else out


def _density(pixels: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """(P,) a Gaussian kernel density of ``samples`` (K, 3) at ``pixels`` (P, 3), from at most COLOUR_SAMPLES of
    them (evenly strided: the same photo gives the same map); 0 without samples."""
    if len(samples) == 0:
        return torch.zeros(len(pixels))
    samples = samples[torch.linspace(0, len(samples) - 1, min(len(samples), COLOUR_SAMPLES)).long()]
    return torch.exp(-torch.cdist(pixels, samples) ** 2 / (2 * COLOUR_SIGMA ** 2)).mean(1)


def hair_change(x_real: torch.Tensor, x_fake: torch.Tensor, x_ref: torch.Tensor, faces: list[Face]) -> torch.Tensor:
    """The change a hair colour adds to the crops (N, 3, s, s), [-1, 1] units: the denoised change ``d`` plus, where
    ``d`` is large, the model's own drift ``denoise(x_ref - x_real)``, so that the hair takes the model's rendering
    of the new colour (``x_fake``) and not the photo's hair shifted by the model's change. A judge trained on real
    photos reads the former far more often (``docs/BLENDING.md``). Where ``d`` is small (skin, backdrop, and every
    pixel of an identity edit) nothing is imported, so the photo keeps its own colours; the import also fades out
    below the mouth and is off for a face whose skin the model renders in other colours than the photo's."""
    d = denoise(x_fake - x_ref)
    w = ((d.abs().mean(1, keepdim=True) - IMPORT_FROM) / (IMPORT_TO - IMPORT_FROM)).clamp(0, 1)
    return d + w * _import_weight(x_real, x_ref, faces) * denoise(x_ref - x_real)


def _import_weight(x_real: torch.Tensor, x_ref: torch.Tensor, faces: list[Face]) -> torch.Tensor:
    """(N, 1, s, s): 1 where the model's rendering may be imported, fading out below the mouth, 0 for a face whose
    skin G renders far from the photo's colours (``IMPORT_SKIN_DE``)."""
    size = x_real.shape[-1]
    t = torch.arange(size, dtype=torch.float64) + 0.5
    v, u = torch.meshgrid(t, t, indexing="ij")
    faces = [_at_size(f, size) for f in faces]
    (y0, y1), (e0, e1) = IMPORT_FADE_BELOW, IMPORT_SKIN_DE
    fade = torch.stack([((y1 - _below_eyes(f, u, v)) / (y1 - y0)).clamp(0, 1) for f in faces]).float()[:, None]
    skin = torch.stack([face_mask(f, u, v) for f in faces]).float()[:, None]
    ab = rgb_to_lab((torch.stack([x_ref, x_real]).flatten(0, 1).float().clamp(-1, 1) + 1) / 2)[:, 1:]
    ab = (ab.unflatten(0, (2, len(faces))) * skin).sum((3, 4)) / skin.sum((2, 3)).clamp(min=1e-6)  # (2, N, 2)
    guard = ((e1 - (ab[0] - ab[1]).norm(dim=1)) / (e1 - e0)).clamp(0, 1)  # (N,)
    return fade * guard.view(-1, 1, 1, 1)


def shade_change(x_fake: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
    """The change of an identity edit as two fields (N, 2, s, s): the CIELAB L* change (denoised) and the chroma
    gain less 1, both from the model's ``x_ref -> x_fake``. Applied by ``apply_shade``: it keeps every hue."""
    lab_fake, lab_ref = (rgb_to_lab((x.float().clamp(-1, 1) + 1) / 2) for x in (x_fake, x_ref))
    k = 2 * round(3 * CHROMA_SIGMA) + 1
    chroma_fake, chroma_ref = (lab[:, 1:].norm(dim=1, keepdim=True) for lab in (lab_fake, lab_ref))
    log_gain = torch.log((chroma_fake + CHROMA_C0) / (chroma_ref + CHROMA_C0))  # blurred as a log: 0 stays 0
    gain = gaussian_blur2d(log_gain, k, (CHROMA_SIGMA, CHROMA_SIGMA), border_type="replicate").exp()
    gain = gain.clamp(*CHROMA_GAIN)
    return torch.cat([denoise(lab_fake[:, :1] - lab_ref[:, :1]), gain - 1], 1)


def region_change(x_real: torch.Tensor, x_fake: torch.Tensor, x_ref: torch.Tensor, faces: list[Face],
                  region: str = "head") -> torch.Tensor:
    """The change the blend pastes, at model px: a hair colour's RGB change (N, 3, s, s) (``hair_change``) where
    the photo's colour says hair, or an identity edit's fields (N, 2, s, s) (``shade_change``) except where it says
    backdrop. Outside the hair, the model's drift lit the backdrop in a halo and painted the forehead."""
    p = colour_classes(x_real, faces)  # (N, 3, s, s) hair, skin, backdrop
    if region == "hair":
        other = p[:, 1:].amax(1, keepdim=True) - p[:, :1]
        return hair_change(x_real, x_fake, x_ref, faces) * denoise(1 - (other / COLOUR_MARGIN).clamp(0, 1))
    other = p[:, 2:] - p[:, :2].amax(1, keepdim=True)
    return shade_change(x_fake, x_ref) * denoise(1 - (other / COLOUR_MARGIN).clamp(0, 1))


def apply_shade(rgb: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
    """The RGB change (N, 3, h, w), same units as ``rgb`` in [0, 1], that ``shade_change``'s fields (N, 2, h, w)
    make to ``rgb``: L* += change[:, 0], (a*, b*) *= 1 + change[:, 1]. Computed only where a field is not 0 (the
    rest of a photo costs nothing), and exactly 0 there."""
    out = torch.zeros_like(rgb)
    on = change.ne(0).any(1)  # (N, h, w)
    px, fields = (t.movedim(1, 0)[:, on][None, :, :, None] for t in (rgb, change))  # (1, C, P, 1): P pixels
    lab = rgb_to_lab(px.clamp(0, 1))
    edited = torch.cat([lab[:, :1] + fields[:, :1], lab[:, 1:] * (1 + fields[:, 1:]).clamp(min=0)], 1)
    out.movedim(1, 0)[:, on] = (lab_to_rgb(edited) - px)[0, :, :, 0]
    return out


def crops_after(x_real: torch.Tensor, x_fake: torch.Tensor, x_ref: torch.Tensor, faces: list[Face],
                region: str = "head") -> torch.Tensor:
    """The "after" crops (N, 3, s, s) in [-1, 1] that match the pasted photo: the denoised change through the mask."""
    change = head_masks(faces, x_real.shape[-1], region) * region_change(x_real, x_fake, x_ref, faces, region)
    if region != "hair":
        change = 2 * apply_shade((x_real + 1) / 2, change)
    return (x_real + change).clamp(-1, 1)


def upsample(change: torch.Tensor, guide: torch.Tensor, scale: float) -> torch.Tensor:
    """A change already warped to photo px (3, h, w) re-fitted edge-aware to the photo region ``guide``
    (3, h, w) in [0, 255]; ``scale`` is photo px per model px (sets the window and the fast filter's subsampling)."""
    radius = max(1, round(UPSAMPLE_RADIUS * scale))
    sub = max(1, min(radius, int(scale // 2)))  # the window keeps >= 3 samples a side after subsampling
    return guided_blur(guide[None] / 255, change[None], 2 * radius + 1, UPSAMPLE_EPS, border_type="replicate",
                       subsample=sub)[0]


def paste_back(image: Image.Image, faces: list[Face], x_fake: torch.Tensor, x_ref: torch.Tensor | None = None,
               detail: bool = True, region: str = "head") -> Image.Image:
    """Blend the edited crops x_fake (N, 3, s, s) in [-1, 1] into the photo inside each face's mask: the head, or
    with ``region="hair"`` (a hair colour) the hair region less every face of the photo.

    detail=True adds the change x_fake - x_ref (default x_ref: the aligned input; for a hair colour,
    ``hair_change``), denoised and upsampled edge-aware, to the full-resolution photo; detail=False pastes the
    crop itself. Outside the masks nothing changes.
    """
    size = x_fake.shape[-1]
    if x_fake.shape != (len(faces), 3, size, size):
        raise ValueError(f"x_fake is {tuple(x_fake.shape)}; expected ({len(faces)}, 3, {size}, {size})")
    if not faces:
        return image.copy()
    faces = [_at_size(f, size) for f in faces]
    x_fake = x_fake.detach().float().cpu()
    if detail:
        x_real = align(image, faces, size)
        x_ref = x_real if x_ref is None else x_ref.detach().float().cpu()
        src = region_change(x_real, x_fake, x_ref, faces, region)  # RGB (a hair colour) or shade_change's fields
        src = src * 127.5 if region == "hair" else src  # RGB in 0-255 units
    else:
        src = (x_fake.clamp(-1, 1) + 1) * 127.5
    boxes = [footprint(f, image.size) for f in faces]
    X0, Y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)  # the union of footprints: the only area touched
    X1, Y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    photo = _to_tensor(image.crop((X0, Y0, X1, Y1)))  # (3, H, W)
    num, den = torch.zeros_like(photo[:src.shape[1]]), torch.zeros_like(photo[:1])
    for face, s, (x0, y0, x1, y1) in zip(faces, src, boxes, strict=True):
        if x1 <= x0 or y1 <= y0:  # the crop misses the photo entirely
            continue
        part = np.s_[:, y0 - Y0:y1 - Y0, x0 - X0:x1 - X0]
        to_crop = face.matrix + face.matrix[:, :2] @ [[0, 0, x0], [0, 0, y0]]  # footprint px -> crop px
        mask = region_mask(face, *_crop_coords(to_crop, (y1 - y0, x1 - x0)), region).float()[None]  # (1, h, w)
        for other in [f for f in faces if f is not face] if region == "hair" else []:  # nor a neighbour's face
            to_other = other.matrix + other.matrix[:, :2] @ [[0, 0, x0], [0, 0, y0]]
            mask = mask * (1 - face_mask(other, *_crop_coords(to_other, (y1 - y0, x1 - x0))).float()[None])
        warped = _sample(s, to_crop, (y1 - y0, x1 - x0), "bicubic", "border")  # (3, h, w)
        scale = 1 / float(np.hypot(*face.matrix[:, 0]))  # photo px per crop px
        if detail and scale >= UPSAMPLE_MIN_SCALE:
            warped = upsample(warped, photo[part], scale)
        elif not detail:
            warped = warped - photo[part]
        num[part] += mask * warped
        den[part] += mask
    change = den.clamp(max=1) * num / den.clamp(min=1e-8)  # where faces overlap, a weighted mean: none applied twice
    if len(change) == 2:  # an identity edit's fields: shade and saturation
        change = 255 * apply_shade(photo[None] / 255, change[None])[0]
    out = (photo + change).round().clamp(0, 255)  # den == 0: exactly the photo
    result = image.copy()
    result.paste(Image.fromarray(out.permute(1, 2, 0).numpy().astype(np.uint8)), (X0, Y0))
    return result


def _crop_coords(m: np.ndarray, out_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop coordinates (u, v), each (h, w), of the pixel centres of an h x w region under the 2x3 map m."""
    ys, xs = torch.meshgrid(torch.arange(out_hw[0], dtype=torch.float64) + 0.5,
                            torch.arange(out_hw[1], dtype=torch.float64) + 0.5, indexing="ij")
    return m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
