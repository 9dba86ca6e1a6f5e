"""Where an edit may go on an aligned crop: the head, the hair and the face as feathered shapes placed from the
face's landmarks (``head_mask``, ``hair_mask``, ``face_mask``), and the photo's own colours told apart into hair,
skin and backdrop (``colour_classes``), so that an edit stops where its region really stops.

The shapes are in the CelebA framing, in units of the face's eye-to-mouth distance; ``blend`` applies them (why
each shape is as it is: its module docstring and ``docs/BLENDING.md``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_lab

from .geometry import Face, at_size, key_points, transform

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
    return ellipse(face, u, v, -HEAD_RISE, HEAD_HALF_W, HEAD_HALF_H, FEATHER, HEAD_HALF_H_LOW, LOW_POWER)


def hair_mask(face: Face, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Where a hair-colour edit goes: a wider, taller head shape (hair falls beside the face and rises above it)
    less the face itself, where such an edit has no business: the model's hair edits also tint the skin (a blond
    edit casts yellow over a face). Same arguments as head_mask."""
    hair = ellipse(face, u, v, -HAIR_RISE, HAIR_HALF_W, HAIR_HALF_H, FEATHER, HAIR_HALF_H_LOW, LOW_POWER)
    return hair * (1 - face_mask(face, u, v))


def face_mask(face: Face, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The face inside the head, eyebrows to chin and cheek to cheek (1 inside, ramping to 0 on its ellipse)."""
    return ellipse(face, u, v, FACE_DROP, FACE_HALF_W, FACE_HALF_H, FACE_FEATHER)


def region_mask(face: Face, u: torch.Tensor, v: torch.Tensor, region: str = "head") -> torch.Tensor:
    """``hair_mask`` for region "hair"; for "rest" the head less the hair region (the face: what an edit of hair and
    something else pastes as shade once the hair region has its colour); else ``head_mask``. Each fades to 0 at the
    crop's edges."""
    if region == "hair":
        mask = hair_mask(face, u, v)
    elif region == "rest":
        mask = head_mask(face, u, v) * (1 - hair_mask(face, u, v))
    else:
        mask = head_mask(face, u, v)
    return mask * _inside_crop(u, face.crop_size) * _inside_crop(v, face.crop_size)


def _inside_crop(t: torch.Tensor, size: int) -> torch.Tensor:
    """1 inside the crop, a smoothstep ramp over its outer ``CROP_FEATHER`` to exactly 0 on its edge and beyond."""
    r = (torch.minimum(t, size - t) / (CROP_FEATHER * size)).clamp(0, 1)
    return r * r * (3 - 2 * r)


def ellipse(face: Face, u: torch.Tensor, v: torch.Tensor, drop: float, half_w: float, half_h: float,
             feather: float, half_h_low: float | None = None, power_low: float = 2.0) -> torch.Tensor:
    """A feathered ellipse on the face's own axes, in units of its eye-to-mouth distance m: centred ``drop`` m
    below the eye midpoint (negative: above), half-axes ``half_w`` m across and ``half_h`` m along; below the
    centre, optionally a superellipse of power ``power_low`` reaching ``half_h_low`` m down. 1 inside, a smoothstep
    ramp over the outer ``feather`` of its radius, exactly 0 on it and beyond."""
    eyes, down, m = face_frame(face)
    cx, cy = eyes + drop * down
    (dx, dy), du, dv = down / m, u - cx, v - cy
    x, y = du * dy - dv * dx, du * dx + dv * dy  # coordinates across and along the head's own "down" axis
    below = y > 0
    p = torch.where(below, power_low, 2.0)
    ay = torch.where(below, y / ((half_h_low or half_h) * m), -y / (half_h * m))
    rho = ((x / (half_w * m)).abs() ** p + ay ** p) ** (1 / p)  # 1 on the outline
    r = ((1 - rho) / feather).clamp(0, 1)
    return r * r * (3 - 2 * r)


def face_frame(face: Face) -> tuple[np.ndarray, np.ndarray, float]:
    """The face's eye midpoint, its "down" vector (eye midpoint -> mouth) and that vector's length m, in crop px."""
    eyes, mouth = np.split(key_points(transform(face.matrix, face.landmarks)), [2])  # (2, 2), (1, 2) in crop px
    down = mouth[0] - eyes.mean(0)
    m = float(np.hypot(*down))
    if m == 0:  # degenerate landmarks: fall back on the template's
        down, m = np.array([0.0, 1.0]) * 0.234 * face.crop_size, 0.234 * face.crop_size
    return eyes.mean(0), down, m


def below_eyes(face: Face, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """How far (u, v) lies below the eyes along the face's own axis, in eye-to-mouth distances (mouth: 1)."""
    eyes, down, m = face_frame(face)
    return ((u - eyes[0]) * down[0] + (v - eyes[1]) * down[1]) / m ** 2


def head_masks(faces: list[Face], size: int, region: str = "head") -> torch.Tensor:
    """Each face's mask (``region_mask``) on its aligned crop at ``size`` px (pixel centres): (N, 1, size, size)."""
    t = torch.arange(size, dtype=torch.float64) + 0.5
    v, u = torch.meshgrid(t, t, indexing="ij")
    masks = [region_mask(at_size(f, size), u, v, region).float() for f in faces]
    return torch.stack(masks)[:, None] if masks else torch.zeros(0, 1, size, size)

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
    for f, x in zip((at_size(f, size) for f in faces), lab, strict=True):
        if x[1:].norm(dim=0).mean() < COLOUR_MIN_CHROMA:  # a greyscale photo: no colour to tell them apart by
            out.append(torch.full((3, size, size), 1 / 3))
            continue
        below, face = below_eyes(f, u, v), face_mask(f, u, v)
        outer = ellipse(f, u, v, -HAIR_RISE, HAIR_HALF_W, HAIR_HALF_H, FEATHER, HAIR_HALF_H_LOW, LOW_POWER)
        skull = ellipse(f, u, v, -HEAD_RISE, SKULL_HALF_W, SKULL_HALF_H, FEATHER)
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
