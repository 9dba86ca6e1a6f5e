"""Colour figures for ``python -m benchmarks blend`` (issue 29): per edit kind, the share of a face's skin pixels
that the edit turns green or blue, the edit's strength inside the face box (so a fix cannot pass by removing the
edit), and the change on the backdrop beside the hair (the glow). The maps depend on the photo alone, never on the
blend being measured.
"""
from __future__ import annotations

import torch

SKIN_AB = 5.0  # a photo pixel is skin-coloured where CIELAB a* > 5 and b* > 5 (the measure, issue 29)
BACKDROP_DE = 8.0  # a pixel beside the hair is backdrop where it is within this CIELAB distance of the ring outside


def lab_image(image) -> torch.Tensor:
    """A PIL RGB image as CIELAB (3, H, W): L* in [0, 100], a* and b* in about [-128, 127]."""
    import numpy as np
    from kornia.color import rgb_to_lab

    return rgb_to_lab(torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)[None])[0]


def backdrop_beside_hair(lab: torch.Tensor, faces, size: int) -> torch.Tensor:
    """(H, W) bool: the photo's pixels inside some face's hair region (``masks.HAIR_*``'s outline, above the mouth)
    that are neither face (``masks.face_mask``) nor hair: their colour is within ``BACKDROP_DE`` of the backdrop
    just outside that outline in the same direction from the head's centre (median colour of a ring at 1.05 to 1.25
    of its radius, in 48 sectors). Hair that stops inside the outline differs from the backdrop it stops against.
    A sector whose ring has the colour of the hair (the median of the crown: above the face, inside the skull) is
    left out: there the ring is hair that reaches past the outline, or a backdrop that colour cannot tell from the
    hair. This map depends on the photo alone, never on the blend that is measured."""
    import math

    from stargan_core.edit import masks
    from stargan_core.edit.geometry import at_size, crop_coords

    faces = [at_size(f, size) for f in faces]
    hw = tuple(lab.shape[1:])
    coords = [crop_coords(f.matrix, hw) for f in faces]
    face = torch.zeros(hw, dtype=torch.bool)
    polar = []
    for f, (u, v) in zip(faces, coords, strict=True):
        face |= masks.face_mask(f, u, v) > 0
        eyes, down, m = masks.face_frame(f)
        cx, cy = eyes - masks.HAIR_RISE * down
        (dx, dy), du, dv = down / m, u - cx, v - cy
        x, y = (du * dy - dv * dx) / (masks.HAIR_HALF_W * m), (du * dx + dv * dy) / m  # across, along (m units)
        y = torch.where(y > 0, y / masks.HAIR_HALF_H_LOW, y / masks.HAIR_HALF_H)
        p = torch.where(y > 0, masks.LOW_POWER, 2.0)
        rho = (x.abs() ** p + y.abs() ** p) ** (1 / p)
        sector = ((torch.atan2(y, x) + math.pi) / (2 * math.pi) * 48).long().clamp(0, 47)
        above = ((u - eyes[0]) * down[0] + (v - eyes[1]) * down[1]) / m ** 2 < 1  # above the mouth
        polar.append((rho, sector, above))
    inside_any = torch.stack([rho < 1 for rho, _, _ in polar]).any(0)
    backdrop = torch.zeros(hw, dtype=torch.bool)
    for f, (u, v), (rho, sector, above) in zip(faces, coords, polar, strict=True):
        ring = (rho >= 1.05) & (rho <= 1.25) & above & ~inside_any
        zone = (rho < 1) & above & ~face
        skull = masks.ellipse(f, u, v, -masks.HEAD_RISE, masks.SKULL_HALF_W, masks.SKULL_HALF_H, masks.FEATHER)
        crown = (skull > 0.5) & ~face & (masks.below_eyes(f, u, v) < -0.3)  # the hair: above the face, in the skull
        hair = lab[:, crown].median(1).values[:, None] if crown.sum() >= 20 else None
        for k in range(48):
            ring_k, zone_k = ring & (sector == k), zone & (sector == k)
            if ring_k.sum() < 20 or not zone_k.any():
                continue
            ref = lab[:, ring_k].median(1).values[:, None]  # (3, 1)
            if hair is not None and (ref - hair).norm() < BACKDROP_DE:
                continue  # the ring is hair (hair reaching past the outline) or a backdrop of the hair's colour
            backdrop[zone_k] = (lab[:, zone_k] - ref).norm(dim=0) < BACKDROP_DE
    return backdrop


def person_map(rgb, faces, size: int) -> torch.Tensor:
    """(H, W) in [0, 1]: the person segmenter's (``segment.person``) probability that each photo pixel shows a
    person, run on each face's aligned crop at ``size`` px and warped back (0 outside every crop)."""
    from stargan_core.edit.geometry import align, at_size, footprint, sample
    from stargan_core.edit.segment import person

    H, W = rgb.size[1], rgb.size[0]
    out = torch.zeros(H, W)
    who = person(align(rgb, faces, size))
    if who is None:
        return out
    for f, p in zip((at_size(f, size) for f in faces), who, strict=True):
        x0, y0, x1, y1 = footprint(f, rgb.size)
        if x1 <= x0 or y1 <= y0:
            continue
        to_crop = f.matrix + f.matrix[:, :2] @ [[0, 0, x0], [0, 0, y0]]
        warped = sample(p, to_crop, (y1 - y0, x1 - x0), "bilinear", "zeros")[0]
        out[y0:y1, x0:x1] = torch.maximum(out[y0:y1, x0:x1], warped)
    return out


def colour_figures(rgb, lab, out, faces, backdrop) -> tuple[list[float | None], list[float], list[float | None]]:
    """Per face: the share of its skin-coloured pixels (photo a* > 5 and b* > 5 inside its detector box) that the
    edit turns green or blue (a* < 0 or b* < 0; None without skin, e.g. a greyscale photo), and the mean CIELAB
    colour change (dE76) inside the box; and for each map of ``backdrop`` (a list, or None) the mean change
    (levels of 255, mean over RGB) on it (None where it is empty)."""
    import numpy as np

    lab_out = lab_image(out)
    green, de = [], []
    for f in faces:
        x0, y0 = (max(0, int(t)) for t in f.box[:2])
        x1, y1 = min(lab.shape[2], int(np.ceil(f.box[2]))), min(lab.shape[1], int(np.ceil(f.box[3])))
        a, b = lab[1:, y0:y1, x0:x1], lab_out[1:, y0:y1, x0:x1]
        skin = (a[0] > SKIN_AB) & (a[1] > SKIN_AB)
        turned = (b[0] < 0) | (b[1] < 0)
        green.append(float(turned[skin].float().mean()) if skin.float().mean() > 0.01 else None)
        de.append(float((lab_out[:, y0:y1, x0:x1] - lab[:, y0:y1, x0:x1]).norm(dim=0).mean()))
    diff = torch.from_numpy(np.asarray(out, np.float32) - np.asarray(rgb, np.float32)).abs().mean(-1)
    glow = [float(diff[m].mean()) if m.any() else None for m in backdrop or []]
    return green, de, glow


def edit_kind(ds, group, c_trg: torch.Tensor) -> list[str]:
    """Each face's edit by its target: a hair colour's name, or a binary group's on / off name (Male, Old...)."""
    from stargan_core.domains import pretty
    from stargan_core.evaluation.classifier import decide

    want = decide(c_trg, ds)[group.name].tolist()
    if group.kind == "binary":
        return [group.on if w == 1 else group.off for w in want]
    return [pretty(group.labels[w]) for w in want]


def colour_table(source: str, table: dict) -> None:
    """Per edit kind: skin turned green or blue (mean, 95th percentile, worst face), dE in the face box, the glow
    beside the hair, and the judge's survival on the head-shaped paste."""
    import numpy as np

    print(f"\ncolour, {source}: skin pixels turned green or blue (a* < 0 or b* < 0 of photo a*, b* > {SKIN_AB:g}), "
          f"mean dE76 in the face box, mean change (/255) on the backdrop beside the hair (by colour; and of that, "
          f"what the person segmenter calls backdrop), judge's edit survival"
          f"\n  {'edit':<8}{'faces':>6}{'green/blue mean':>17}{'p95':>7}{'max':>7}{'dE in box':>11}"
          f"{'backdrop':>10}{'not person':>11}{'judge':>15}")
    rows = sorted(table.items(), key=lambda kv: kv[0])
    every = {k: [x for _, t in rows for x in t.get(k, [])] for k in ("green", "de", "glow", "glow2", "judge")}
    for kind, t in [*rows, ("all", every)]:
        g = np.array([x for x in t["green"] if x is not None]) * 100
        glow = "".join(f"{np.mean(t[k]):>{w}.2f}" if t.get(k) else f"{'':>{w}}"
                       for k, w in (("glow", 10), ("glow2", 11)))
        judge = f"{np.mean(t['judge']):>8.1%} ({len(t['judge']):>3})" if t.get("judge") else f"{'':>15}"
        print(f"  {kind:<8}{len(t['de']):>6}{g.mean():>16.2f}%{np.percentile(g, 95):>6.2f}%{g.max():>6.1f}%"
              f"{np.mean(t['de']):>11.2f}{glow}{judge}")
