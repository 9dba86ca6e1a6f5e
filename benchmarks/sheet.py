"""``python -m benchmarks sheet``: the before/after sheet of ``docs/before_after.jpg``, the pictures to look at
beside ``bench blend``'s figures. One row per shared photo with a face, around its faces: the photo, then the app's
own edits of it (the pipeline, as the page calls it) for each ``--edits`` choice, labelled. Not a measurement: a
person looks at it (what it showed: ``docs/BLENDING.md``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import PHOTOS

EDITS = {"Blond": {"hair": "Blond"}, "Black hair": {"hair": "Black"}, "Female": {"gender": "Female"},
         "Male": {"gender": "Male"}, "Old": {"age": "Old"}, "Young": {"age": "Young"}}


def sheet(args: argparse.Namespace) -> None:
    """Write the sheet to ``args.out``."""
    from PIL import Image, ImageDraw

    from stargan_core.edit.images import load_image
    from stargan_core.edit.pipeline import StarGANPipeline

    pipe = StarGANPipeline.from_pretrained(args.model, path=args.path)
    names = [n for n in args.edits if n in EDITS]
    rows = []
    for path in sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        photo = load_image(path)
        faces = pipe.detect(photo)
        if not faces:
            continue
        x0, y0 = min(f.box[0] for f in faces), min(f.box[1] for f in faces)
        x1, y1 = max(f.box[2] for f in faces), max(f.box[3] for f in faces)
        m = 0.9 * max(x1 - x0, y1 - y0) / len(faces) ** 0.5  # room for the hair and the backdrop beside it
        box = (max(0, int(x0 - m)), max(0, int(y0 - 1.3 * m)), min(photo.width, int(x1 + m)),
               min(photo.height, int(y1 + 0.6 * m)))
        tiles = [("photo", photo)] + [(n, pipe(photo, EDITS[n], faces=faces).image) for n in names]
        row = []
        for label, im in tiles:
            tile = im.crop(box)
            tile = tile.resize((round(tile.width * args.height / tile.height), args.height), Image.LANCZOS)
            ImageDraw.Draw(tile).text((4, 4), f"{path.stem}: {label}" if label == "photo" else label,
                                      fill=(255, 255, 0))
            row.append(tile)
        rows.append(row)
        print(f"{path.name}: {len(faces)} face(s), {', '.join(names)}")
    width = max(sum(t.width for t in row) for row in rows)
    out = Image.new("RGB", (width, args.height * len(rows)))
    for i, row in enumerate(rows):
        x = 0
        for tile in row:
            out.paste(tile, (x, i * args.height))
            x += tile.width
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out.save(args.out, quality=82)
    print(f"wrote {args.out} ({out.width}x{out.height}, {Path(args.out).stat().st_size / 1e3:.0f} kB)")


def add_parser(sub) -> None:
    """The ``sheet`` command and its options."""
    p = sub.add_parser("sheet", help="the before/after sheet of every shared photo (docs/before_after.jpg)")
    p.add_argument("--model", default=None, help="a model for load_model (default: its fallback, the shipped model)")
    p.add_argument("--path", default="onnxruntime-int8", help="the inference path G runs on")
    p.add_argument("--edits", nargs="+", default=["Blond", "Female", "Male", "Old"], choices=list(EDITS))
    p.add_argument("--height", type=int, default=200, help="each row's height in px")
    p.add_argument("--out", default="docs/before_after.jpg")
    p.set_defaults(func=sheet)
