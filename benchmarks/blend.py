"""``python -m benchmarks blend``: the head-shaped paste-back against the square one it replaced.

It measures the head-shaped, denoised, edge-aware paste-back (``blend.paste_back``) on every photo of
``../shared/data/photos`` with a face and each of the paper's test edits (blended as the pipeline blends them:
through the hair region for a hair colour, the head mask otherwise): the mean change in the crop square outside
the mask, the high-frequency (Laplacian) energy of the pasted change inside it, and how often an attribute
classifier still finds the target attribute after re-detecting and re-aligning the edited photo (against the
classifier on the model's raw crop, and on crops that need no paste: the real face plus the model's change, raw,
denoised (the best any blend that adds the denoised change can do), and denoised through the mask: what is left
to lose is the paste and the re-detection). One more row adds the same denoised change to the model's own
reconstruction G(x, c_org) instead of the photo, to separate the model's rendering of the whole crop, which no
blend that keeps the photo can carry over, from what the blend loses (figures: ``docs/BLENDING.md``).
``--celeba N`` adds N held-out CelebA images (the photos alone give a small sample of edits); G runs on a named
path (``--path``), not the load-time race, so the figures do not depend on how busy the machine is.
``--pictures DIR`` saves before / square / head-shaped side-by-sides.
"""
from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from pathlib import Path

import torch

from . import PHOTOS, SHARED_DATA
from .colour import backdrop_beside_hair, colour_figures, colour_table, edit_kind, lab_image, person_map
from .timing import machine_load


def _square_paste_back(image, faces, x_fake, x_ref):
    """The paste-back before ``blend.py`` (detail mode), kept as the baseline: the raw change x_fake - x_ref,
    upsampled bicubic, through a square mask feathered over a tenth of the crop side."""
    from PIL import Image

    from stargan_core.edit.geometry import at_size, footprint, sample
    from stargan_core.edit.images import to_tensor

    size = x_fake.shape[-1]
    t = torch.arange(size) + 0.5
    r = ((torch.minimum(t, size - t) - 1) / (0.1 * size)).clamp(0, 1)
    r = r * r * (3 - 2 * r)
    feather = (r[:, None] * r[None, :])[None]  # (1, s, s)
    faces = [at_size(f, size) for f in faces]
    boxes = [footprint(f, image.size) for f in faces]
    X0, Y0, X1, Y1 = (f(b[i] for b in boxes) for f, i in ((min, 0), (min, 1), (max, 2), (max, 3)))
    photo = to_tensor(image.crop((X0, Y0, X1, Y1)))
    num, den = torch.zeros_like(photo), torch.zeros_like(photo[:1])
    for face, s, (x0, y0, x1, y1) in zip(faces, (x_fake - x_ref) * 127.5, boxes, strict=True):
        if x1 <= x0 or y1 <= y0:
            continue
        to_crop = face.matrix + face.matrix[:, :2] @ [[0, 0, x0], [0, 0, y0]]
        mask = sample(feather, to_crop, (y1 - y0, x1 - x0), "bilinear", "zeros")
        part = (slice(None), slice(y0 - Y0, y1 - Y0), slice(x0 - X0, x1 - X0))
        num[part] += mask * sample(s, to_crop, (y1 - y0, x1 - x0), "bicubic", "zeros")
        den[part] += mask
    out = (photo + den.clamp(max=1) * num / den.clamp(min=1e-8)).round().clamp(0, 255)
    result = image.copy()
    result.paste(Image.fromarray(out.permute(1, 2, 0).numpy().astype("uint8")), (X0, Y0))
    return result


def _regions(image, faces, size: int, region: str = "head"):
    """(H, W) maps of the photo: inside some face's crop square (bool), and the largest of the faces' masks of
    ``region`` (``blend.region_mask``: "head", or "hair" for hair colours)."""
    from stargan_core.edit.blend import region_mask
    from stargan_core.edit.geometry import at_size, crop_coords

    square = torch.zeros(image.height, image.width, dtype=torch.bool)
    head = torch.zeros(image.height, image.width)
    for f in (at_size(f, size) for f in faces):
        u, v = crop_coords(f.matrix, (image.height, image.width))
        square |= (u >= 0) & (u < size) & (v >= 0) & (v < size)
        head = torch.maximum(head, region_mask(f, u, v, region).float())
    return square, head


def _laplacian_energy(d: torch.Tensor, where: torch.Tensor) -> float:
    """Mean squared 4-neighbour Laplacian of d (3, H, W) (levels^2) over the pixels ``where`` (H, W). The edge is
    replicated, not zero-padded: a change that reaches the photo's edge (a face cut off by it) is not a step there."""
    from stargan_core.evaluation.evaluate import laplacian

    return float((laplacian(d[None], pad=True)[0] ** 2).mean(0)[where].mean()) if where.any() else 0.0


def _survived(detector, clf, idx, spec, edited, faces, group, want) -> list[bool]:
    """Whether the classifier finds ``want`` for ``group`` on every face re-detected and re-aligned in ``edited``."""
    import numpy as np

    from stargan_core.edit.geometry import align
    from stargan_core.evaluation.classifier import decide

    found = detector.detect(edited, crop_size=clf.image_size)
    centres = np.array([(f.box[:2] + f.box[2:]) / 2 for f in found]).reshape(-1, 2)
    ok = []
    for i, face in enumerate(faces):
        c, w = (face.box[:2] + face.box[2:]) / 2, face.box[2] - face.box[0]
        near = np.hypot(*(centres - c).T) if len(found) else np.array([np.inf])
        if near.min() > w / 2:  # the face is no longer found: the edit did not survive
            ok.append(False)
            continue
        x = align(edited, [found[int(near.argmin())]], clf.image_size)
        ok.append(bool(decide(clf.probs(x)[:, idx], spec)[group][0] == want[i]))
    return ok


def _blend_images(args: argparse.Namespace):
    """(name, loader) for every photo of ``--photos`` (default: all in the photos folder), then ``--celeba N``
    held-out CelebA images: the last N of the official 2,000 test images (never trained on; ``evaluate`` uses the
    first 500), each as a photo of its own, then ``--london N`` of the London set's neutral photos, evenly spaced
    over its 102 people (many skin tones, a plain backdrop)."""
    import numpy as np

    from stargan_core.data.datasets import OFFICIAL_CELEBA_TEST, read_celeba
    from stargan_core.edit.images import load_image

    names = args.photos or sorted(p.name for p in PHOTOS.iterdir() if p.suffix in (".jpg", ".png"))
    items = [(name, partial(load_image, PHOTOS / name)) for name in names]
    if args.celeba:
        recs, _ = read_celeba(args.celeba_dir, ["Male"])
        test = recs[:OFFICIAL_CELEBA_TEST][-args.celeba:]
        items += [(f"celeba:{Path(path).name}", partial(load_image, path)) for path, _ in test]
    if args.london:
        london = sorted((PHOTOS.parent / "london_faces" / "neutral").glob("*.jpg"))
        pick = np.linspace(0, len(london) - 1, min(args.london, len(london))).round().astype(int)
        items += [(f"london:{london[i].name}", partial(load_image, london[i])) for i in pick]
    return items


def _source(name: str) -> str:
    return {"celeba": "held-out CelebA", "london": "London"}.get(name.split(":")[0], "photos") if ":" in name \
        else "photos"


def blend(args: argparse.Namespace) -> None:
    """Square vs head-shaped paste-back per photo: leak outside the head, speckle inside it, edit survival."""
    from collections import defaultdict

    import numpy as np

    from stargan_core.edit.blend import crops_after, denoise, head_masks, paste_back
    from stargan_core.edit.geometry import align
    from stargan_core.edit.pipeline import StarGANPipeline
    from stargan_core.evaluation.classifier import decide, load_classifier
    # A named path, not the load-time race: on a busy machine that race can pick another path, and the judge's
    # decisions near its threshold flip with the path's small differences.
    pipe = StarGANPipeline.from_pretrained(args.model, path=args.path)
    schema, size = pipe.config.schema, pipe.config.image_size
    ds = schema.datasets[0]
    clf = load_classifier(args.classifier) if args.classifier else None
    idx = [clf.spec.labels.index(lab) for lab in ds.labels] if clf else None
    print(f"model: {pipe.status or args.model} ({size} px), G on {pipe.path.name}; classifier: "
          f"{args.classifier or 'none'}; {machine_load()}")
    print(f"{'photo':<26}{'faces':>5}{'edits':>6}  outside head: mean |change|   Laplacian energy in head: photo"
          f" px | model px   paste-back s\n{'':<37}{'square':>11}{'head':>8}{'square':>12}{'head':>8}{'cut':>6}"
          f"{'square':>9}{'head':>8}{'cut':>6}{'square':>9}{'head':>6}")
    survive = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))  # source -> kind -> group -> [found]
    colour = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))  # source -> edit -> figure -> [value]
    sets = defaultdict(lambda: ([], {"square": [], "head": []}, [0]))  # CelebA, London: rows, times, faces
    for name, load in _blend_images(args):
        rgb = load()
        faces = pipe.detect(rgb)
        if not faces:
            continue
        source = _source(name)
        lab = lab_image(rgb)
        backdrop = backdrop_beside_hair(lab, faces, size)
        backdrop = [backdrop, backdrop & (person_map(rgb, faces, size) < 0.5)]
        x_real = align(rgb, faces, size)
        c_org = pipe.estimate(x_real)
        x_ref = pipe.generate(x_real, schema.condition(c_org, ds.name))
        masks = {region: _regions(rgb, faces, size, region) for region in ("head", "hair")}
        before = torch.from_numpy(np.asarray(rgb, np.float32).copy()).permute(2, 0, 1)
        rows, times = [], {"square": [], "head": []}
        for t_name, c_trg in schema.paper_targets(c_org, ds.name):
            x_fake = pipe.generate(x_real, schema.condition(c_trg, ds.name))
            group = max(ds.groups, key=lambda g: float((c_trg - c_org)[:, schema.group_slice(g.name)].abs().sum()))
            region = "hair" if group.is_hair_colour else "head"  # as the pipeline blends this edit
            square, head = masks[region]
            outside, inside = square & (head == 0), head >= 0.5
            outs = {}
            for kind, fn in (("square", _square_paste_back), ("head", partial(paste_back, region=region))):
                t0 = time.perf_counter()
                outs[kind] = fn(rgb, faces, x_fake, x_ref)
                times[kind].append(time.perf_counter() - t0)
            d = {k: torch.from_numpy(np.asarray(v, np.float32).copy()).permute(2, 0, 1) - before
                 for k, v in outs.items()}
            rows.append([float(d[k].abs().mean(0)[outside].mean()) if outside.any() else 0.0 for k in d]
                        + [_laplacian_energy(d[k], inside) for k in d]
                        + [_laplacian_energy(torch.cat(list((align(outs[k], faces, size) - x_real) * 127.5), -1),
                                             torch.cat(list(head_masks(faces, size, region)[:, 0]), -1) >= 0.5)
                           for k in d])
            if args.pictures and t_name.lower().startswith("blond") and not name.startswith("celeba:"):
                _side_by_side(rgb, outs, faces, Path(args.pictures) / f"{Path(name).stem}_blond.png")
            kinds = edit_kind(ds, group, c_trg)
            green, de, glow = colour_figures(rgb, lab, outs["head"], faces, backdrop if region == "hair" else None)
            for kind, g, e in zip(kinds, green, de, strict=True):
                colour[source][kind]["green"].append(g)
                colour[source][kind]["de"].append(e)
            for key, g in zip(("glow", "glow2"), glow, strict=False):  # one figure per photo: the hair colour is shared
                if g is not None:
                    colour[source][kinds[0]][key].append(g)
            if clf:
                want = decide(c_trg, ds)[group.name]
                edit = decide(clf.probs(x_real)[:, idx], ds)[group.name] != want  # the judge sees a change to make
                if edit.any():
                    found = survive[source]
                    change = denoise(x_fake - x_ref)
                    judged = {"raw crop": x_fake, "denoised, on G(x,c_org)": x_ref + change,
                              "raw change": x_real + (x_fake - x_ref), "raw change, denoised": x_real + change,
                              "denoised, masked": crops_after(x_real, x_fake, x_ref, faces, region)}
                    for k, x in judged.items():  # on the model's own crop: no paste, no re-detection
                        found[k][group.name] += (decide(clf.probs(x.clamp(-1, 1))[:, idx], ds)[group.name]
                                                   == want)[edit].tolist()
                    for k, out in outs.items():
                        got = _survived(pipe.detector, clf, idx, ds, out, faces, group.name, want)
                        found[k][group.name] += [g for g, e in zip(got, edit.tolist(), strict=True) if e]
                        if k == "head":
                            for kind, g, e in zip(kinds, got, edit.tolist(), strict=True):
                                colour[source][kind]["judge"] += [g] if e else []
        if ":" in name:  # one summary row for each set of many
            rows_s, times_s, faces_s = sets[name.split(":")[0]]
            rows_s += rows
            faces_s[0] += len(faces)
            for k in times:
                times_s[k] += times[k]
            continue
        _blend_row(name, len(faces), rows, times)
    for key, (rows_s, times_s, faces_s) in sets.items():
        _blend_row(f"{key} x{getattr(args, key)}", faces_s[0], rows_s, times_s)
    for table in (survive, colour):
        if {"photos", "held-out CelebA"} <= set(table):  # the figure docs/BLENDING.md tracks
            photos, celeba = table["photos"], table["held-out CelebA"]
            table["photos + CelebA"] = {k: {g: photos[k][g] + celeba[k][g] for g in {*photos[k], *celeba[k]}}
                                        for k in {**photos, **celeba}}
    for source, table in survive.items():
        _survival_table(source, table)
    for source, table in colour.items():
        colour_table(source, table)


def _survival_table(source: str, table: dict) -> None:
    import numpy as np
    groups = sorted({g for v in table.values() for g in v})
    n = sum(len(v) for v in table["raw crop"].values())
    print(f"\nedit survives, {source}: the classifier finds the target on the {n} face edits it saw as changes "
          f"(pasted: after re-detecting and re-aligning the edited photo)\n{'':<26}"
          + "".join(f"{g:>14}" for g in groups) + f"{'all':>14}")
    for k, v in table.items():
        every = [x for g in groups for x in v[g]]
        print(f"  {k:<24}" + "".join(f"{np.mean(v[g]):>8.1%} ({len(v[g]):>3})" if v[g] else f"{'':>14}"
                                     for g in groups) + f"{np.mean(every):>8.1%} ({len(every):>3})")


def _blend_row(name: str, n_faces: int, rows: list, times: dict) -> None:
    import numpy as np
    r = np.mean(rows, 0)
    print(f"{name:<26}{n_faces:>5}{len(rows):>6}{r[0]:>11.2f}{r[1]:>8.2f}{r[2]:>12.1f}{r[3]:>8.1f}"
          f"{1 - r[3] / r[2]:>6.0%}{r[4]:>9.1f}{r[5]:>8.1f}{1 - r[5] / r[4]:>6.0%}"
          f"{statistics.median(times['square']):>9.2f}{statistics.median(times['head']):>6.2f}", flush=True)


def _side_by_side(rgb, outs: dict, faces, path: Path) -> None:
    """Before | square paste-back | head-shaped paste-back, around the faces (2x their boxes), labelled."""
    import numpy as np
    from PIL import Image, ImageDraw

    boxes = np.stack([f.box for f in faces])
    (x0, y0), (x1, y1) = boxes[:, :2].min(0), boxes[:, 2:].max(0)
    w, h = x1 - x0, y1 - y0
    box = [int(max(0, x0 - w / 2)), int(max(0, y0 - h / 2)), int(min(rgb.width, x1 + w / 2)),
           int(min(rgb.height, y1 + h / 2))]
    panels = [im.crop(box) for im in (rgb, outs["square"], outs["head"])]
    k = 400 / panels[0].height
    panels = [p.resize((round(p.width * k), 400), Image.LANCZOS) for p in panels]
    sheet = Image.new("RGB", (sum(p.width for p in panels), 418), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (p, label) in enumerate(zip(panels, ("before", "square paste-back", "head-shaped"), strict=True)):
        sheet.paste(p, (i * panels[0].width, 18))
        draw.text((i * panels[0].width + 4, 3), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def add_parser(sub) -> None:
    """The ``blend`` command and its options."""
    p = sub.add_parser("blend", help="head-shaped paste-back against the square one: leaks, speckle, edit survival")
    p.add_argument("--model", default=None, help="a model for load_model (default: its fallback, the shipped model)")
    p.add_argument("--classifier", default=None, help="folder written by train-classifier (for edit survival)")
    p.add_argument("--photos", nargs="+", default=None, help="file names in the photos folder (default: all)")
    p.add_argument("--pictures", default=None, help="folder for before / square / head-shaped side-by-sides")
    p.add_argument("--celeba", type=int, default=0, help="also N held-out CelebA images (the last N of the "
                   "official 2,000 test images), for a larger sample of edits")
    p.add_argument("--celeba-dir", default=str(SHARED_DATA / "celeba_30k"))
    p.add_argument("--london", type=int, default=0, help="also N of the London set's neutral photos (evenly spaced "
                   "over its 102 people: many skin tones)")
    p.add_argument("--path", default="onnxruntime-int8", help="the inference path G runs on (still checked "
                   "against fp32; 'auto': the load-time choice, which depends on how busy the machine is)")
    p.set_defaults(func=blend)
