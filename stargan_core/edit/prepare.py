"""Preparing a photo dataset for training: raw photos in one folder per class -> an aligned CSV training folder.

A second dataset whose labels differ from CelebA's (the paper's mask vector, section 3.2) rarely comes aligned like
CelebA. ``prepare_classes`` detects the one face in every photo with the app's own face code (``faces.py``), writes
it in the geometry of CelebA's ``img_align_celeba`` files (so it is read like CelebA and framed like a face in a
user's photo), and labels it with a categorical group whose classes are the sub-folder names: the Face Research Lab
London Set's ``neutral/`` and ``smiling/`` become an ``expression`` group. A file's stem names the person (the
same ``NNN.jpg`` in every class folder), so the held-out split takes whole people: nobody evaluated on is trained
on. ``labels.csv`` carries that split in a ``split`` column, which ``data.read_csv`` honours.
"""
from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..data.datasets import IMAGE_EXTS, DataError
from ..data.pack import spec_json
from ..domains import DatasetSpec, Group
from .faces import FaceDetector
from .geometry import celeba_frame
from .images import ImageError, load_image


@dataclass
class PrepareResult:
    """What ``prepare_classes`` wrote, and every photo it left out with the reason."""

    folder: Path
    train: int  # images of training people
    test: int  # images of held-out people
    test_people: list[str]
    skipped: list[str] = field(default_factory=list)  # "neutral/017.jpg: no face found", ...


def prepare_classes(raw_dir: str | Path, out_dir: str | Path, name: str = "london", group: str = "expression",
                    heldout: int = 20, seed: int = 0, detector: FaceDetector | None = None,
                    limit: int | None = None) -> PrepareResult:
    """Align every photo of ``raw_dir/<class>/<person>.<ext>`` into ``out_dir`` (images/, labels.csv, schema.json),
    holding out ``heldout`` people chosen by ``seed``. A photo with no face or several is reported and skipped."""
    raw, out = Path(raw_dir), Path(out_dir)
    classes = sorted(d.name for d in raw.iterdir() if d.is_dir()) if raw.is_dir() else []
    if len(classes) < 2:
        raise DataError(f"{raw}: expected one sub-folder per class (at least two, e.g. neutral/ smiling/)")
    photos = {c: sorted(p for p in (raw / c).iterdir() if p.suffix.lower() in IMAGE_EXTS) for c in classes}
    people = sorted({p.stem for ps in photos.values() for p in ps})[:limit]
    if heldout >= len(people):
        raise DataError(f"{raw}: {len(people)} people, too few to hold out {heldout}")
    test_people = sorted(random.Random(seed).sample(people, heldout))
    detector = detector or FaceDetector()
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    for c in classes:
        for path in (p for p in photos[c] if p.stem in people):
            where = f"{c}/{path.name}"
            try:
                image = load_image(path)
            except ImageError as e:
                skipped.append(f"{where}: {e}")
                continue
            faces = detector.detect(image)
            if len(faces) != 1:  # never guess which face the label belongs to
                skipped.append(f"{where}: {'no face found' if not faces else f'{len(faces)} faces found'}")
                continue
            filename = f"images/{c}_{path.stem}.jpg"
            celeba_frame(image, faces[0]).save(out / filename, quality=95)
            split = "test" if path.stem in test_people else "train"
            rows.append([filename, *(int(k == c) for k in classes), split, path.stem])
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([["filename", *classes, "split", "person"], *rows])
    spec = DatasetSpec(name, (Group(group, "categorical", tuple(classes)),))
    (out / "schema.json").write_text(spec_json(spec))
    n_test = sum(r[-2] == "test" for r in rows)
    return PrepareResult(out, len(rows) - n_test, n_test, test_people, skipped)
