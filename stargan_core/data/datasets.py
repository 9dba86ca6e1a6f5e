"""Training data: CelebA, RaFD and a generic folder + CSV, each read into one ``ImageLabels`` dataset.

A reader turns a folder into records ``(image path, label vector)`` and the ``DatasetSpec`` that says what the
vector means; ``ImageLabels`` loads an image, crops/resizes it and normalises it to [-1, 1]. The random
horizontal flip of the official preprocessing is applied by the training loop to whole batches, from a seed
derived from the step, so that the data stream is a pure function of the step and a resumed run sees the very
same batches (the indices of each step come from ``sampler.StepSampler``).

Formats:

* CelebA: ``list_attr_celeba.txt`` (official format) + ``img_align_celeba/`` or ``images/``. Centre crop 178.
  The official test split: shuffle the list with ``random.seed(1234)``, the first 2,000 are the test set.
* RaFD: one sub-folder per expression (``angry/``, ``happy/`` ...). Class order comes from the schema, never
  from the file system. Centre crop 256.
* CSV: ``labels.csv`` (``filename,label1,label2,...`` with 0/1 or -1/1 values; file names relative to the
  folder) and an optional ``schema.json`` (a ``DatasetSpec`` dict: name + groups) declaring exclusive or
  categorical groups. Without it every column is a binary attribute (hair colours form an exclusive group).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T
from tqdm import tqdm

from ..domains import DatasetSpec, DomainSchema, Group, celeba_schema, rafd_schema

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
Record = tuple[Path, list[float]]
OFFICIAL_CELEBA_TEST = 2000  # the official code holds out the first 2,000 shuffled images
CELEBA_CROP = 178  # the official centre crop of the 178x218 aligned images, before the resize


class DataError(ValueError):
    """A dataset folder that cannot be used; the message says what to fix."""


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., 3, S, S) -> float32 in [-1, 1]: ``ToDtype(scale=True)`` then ``Normalize(0.5, 0.5)``."""
    return x.float().div_(127.5).sub_(1)


class ImageLabels(Dataset):
    """Images and their label vectors: ``dataset[i] -> (x (3, S, S) in [-1, 1], labels (n_labels,))``.

    Each item decodes its JPEG, as the official code does at every step; ``cache_images`` decodes them all once.
    """

    def __init__(self, records: Sequence[Record], image_size: int, crop_size: int | None) -> None:
        self.records, self.image_size, self.crop_size = list(records), image_size, crop_size
        crop = [T.CenterCrop(crop_size)] if crop_size else []  # official: crop first, then resize
        self.resize = T.Compose([T.ToImage(), *crop, T.Resize(image_size, antialias=True), T.CenterCrop(image_size)])
        self.failed = 0  # images that became unreadable after the start-up check (counted, not fatal)

    def __len__(self) -> int:
        return len(self.records)

    def pixels(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(uint8 (3, S, S), labels)`` of item ``i``: decoded, cropped and resized, not yet normalised."""
        for k in range(len(self.records)):  # a file that fails to decode is replaced by the next one
            path, labels = self.records[(i + k) % len(self.records)]
            try:
                with Image.open(path) as img:
                    x = self.resize(img.convert("RGB"))
                return x.as_subclass(torch.Tensor), torch.tensor(labels, dtype=torch.float32)
            except (OSError, UnidentifiedImageError, ValueError) as e:
                self.failed += 1
                warnings.warn(f"skipping unreadable image {path}: {e}", stacklevel=2)
        raise DataError("no readable image in the dataset")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, labels = self.pixels(i)
        return to_unit(x), labels


class CachedImages(Dataset):
    """A dataset decoded once: uint8 images (N, 3, S, S) and labels (N, n), on any device.

    ``batch(indices)`` gathers a mini-batch on the cache's device and normalises it there, so a training step
    costs no JPEG decoding and no host-to-device copy of pixels (30,000 images at 64 px are 370 MB).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_unit(self.images[i]), self.labels[i]

    def to(self, device: torch.device | str) -> CachedImages:
        """The images moved to ``device`` (labels stay on the CPU, where the training loop builds targets)."""
        return CachedImages(self.images.to(device), self.labels)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x (B, 3, S, S) in [-1, 1] on the images' device, labels (B, n))`` for ``indices``."""
        idx = torch.as_tensor(indices)
        return to_unit(self.images[idx.to(self.images.device)]), self.labels[idx]


def _cache_key(ds: ImageLabels) -> str:
    """A name that changes when the images, their order, the crop or the size change."""
    digest = hashlib.sha1(repr((ds.image_size, ds.crop_size, [(str(p), lab) for p, lab in ds.records])).encode())
    return f"{ds.image_size}px-{len(ds)}-{digest.hexdigest()[:12]}"


def cache_images(ds: ImageLabels, folder: str | Path | None = None, num_workers: int = 0,
                 progress: bool = False) -> CachedImages:
    """Decode every image of ``ds`` once into uint8 at the model's size (in parallel with ``num_workers``).

    With ``folder`` the result is also kept there as ``images-<key>.npy`` / ``labels-<key>.npy`` (written
    atomically) and read back on the next call, so a resumed run does not decode again.
    """
    if folder is not None:
        folder, key = Path(folder), _cache_key(ds)
        img_file, lab_file = folder / f"images-{key}.npy", folder / f"labels-{key}.npy"
        if img_file.is_file() and lab_file.is_file():
            return CachedImages(torch.from_numpy(np.load(img_file)), torch.from_numpy(np.load(lab_file)))
    loader = DataLoader(_Pixels(ds), batch_size=256, num_workers=num_workers)
    parts = list(tqdm(loader, desc=f"decoding {len(ds)} images once", disable=not progress, leave=False))
    cached = CachedImages(torch.cat([x for x, _ in parts]), torch.cat([lab for _, lab in parts]))
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for path, t in ((img_file, cached.images), (lab_file, cached.labels)):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, t.numpy())
            os.replace(tmp, path)
    return cached


class _Pixels(Dataset):
    """``ds.pixels`` as a dataset, for parallel decoding."""

    def __init__(self, ds: ImageLabels) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ds.pixels(i)


# ----- readers: folder -> (records, DatasetSpec) ----------------------------------------------------------------
def _readable(records: list[Record], where: Path) -> list[Record]:
    """Drop missing or non-image files (header check only: fast even for 200k images) and say how many."""
    good, bad = [], []
    for rec in records:
        try:
            with Image.open(rec[0]) as img:
                img.size  # noqa: B018  (reads the header)
            good.append(rec)
        except (OSError, UnidentifiedImageError):
            bad.append(rec[0].name)
    if bad:
        warnings.warn(f"{where}: skipped {len(bad)} unreadable or missing images (e.g. {', '.join(bad[:3])})",
                      stacklevel=3)
    if not good:
        raise DataError(f"{where}: no readable images")
    return good


def read_celeba(root: str | Path, attrs: Sequence[str]) -> tuple[list[Record], DatasetSpec]:
    """CelebA records in the official shuffled order (``random.seed(1234)``), labels 0/1 for ``attrs``."""
    root = Path(root)
    attr_file = root / "list_attr_celeba.txt"
    image_dir = next((root / d for d in ("img_align_celeba", "images") if (root / d).is_dir()), None)
    if not attr_file.is_file() or image_dir is None:
        raise DataError(f"{root}: expected list_attr_celeba.txt and an img_align_celeba/ (or images/) folder")
    lines = attr_file.read_text().split("\n")
    names = lines[1].split()
    missing = [a for a in attrs if a not in names]
    if missing:
        raise DataError(f"{attr_file}: no attribute named {', '.join(missing)}; available: {' '.join(names)}")
    cols = [names.index(a) for a in attrs]
    rows = [line.split() for line in lines[2:] if line.strip()]
    random.Random(1234).shuffle(rows)  # == the official random.seed(1234); random.shuffle(lines)
    records = [(image_dir / r[0], [float(r[1 + c] == "1") for c in cols]) for r in rows]
    return _readable(records, root), celeba_schema(attrs)


def read_rafd(root: str | Path, spec: DatasetSpec | None = None) -> tuple[list[Record], DatasetSpec]:
    """RaFD: one sub-folder per class; one-hot labels in the schema's class order (folder names case-blind)."""
    root, spec = Path(root), spec or rafd_schema()
    classes = [lab.lower() for lab in spec.labels]
    folders = {d.name.lower(): d for d in root.iterdir() if d.is_dir()} if root.is_dir() else {}
    unknown = sorted(set(folders) - set(classes))
    if not folders or unknown:
        raise DataError(f"{root}: expected one sub-folder per class ({', '.join(classes)})"
                        + (f"; unknown folders: {', '.join(unknown)}" if unknown else ""))
    records = [(f, [float(j == i) for j in range(len(classes))])
               for i, c in enumerate(classes) if c in folders
               for f in sorted(folders[c].iterdir()) if f.suffix.lower() in IMAGE_EXTS]
    return _readable(records, root), spec


def read_csv(root: str | Path) -> tuple[list[Record], DatasetSpec]:
    """A folder with ``labels.csv`` (+ optional ``schema.json``): any attribute list."""
    root = Path(root)
    if not (root / "labels.csv").is_file():
        raise DataError(f"{root}: no labels.csv (header: filename,label1,label2,...)")
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, rows = [h.strip() for h in rows[0]], [r for r in rows[1:] if r]
    if (root / "schema.json").is_file():
        d = json.loads((root / "schema.json").read_text())
        spec = DatasetSpec(d.get("name", root.name), tuple(Group(g["name"], g["kind"], tuple(g["labels"]),
                                                                 g.get("on", ""), g.get("off", ""))
                                                           for g in d["groups"]))
    else:
        spec = celeba_schema(header[1:], name=root.name)
    missing = [lab for lab in spec.labels if lab not in header]
    if missing:
        raise DataError(f"{root / 'labels.csv'}: no column named {', '.join(missing)}; columns: {header[1:]}")
    cols = [header.index(lab) for lab in spec.labels]
    records = [(root / r[0].strip(), [float(float(r[c]) > 0) for c in cols]) for r in rows]
    if not records:
        raise DataError(f"{root / 'labels.csv'}: no rows")
    return _readable(records, root), spec


def split(records: list[Record], test: float, official: int = 0) -> tuple[list[Record], list[Record]]:
    """(train, test): ``test`` >= 1 is a count, in (0, 1) a ratio; 0 means ``official`` images if the set holds
    at least 10x that many, else a tenth. The test set is the head of the (already shuffled) list."""
    n = len(records)
    if test <= 0:
        test = official if official and n >= 10 * official else 0.1
    k = int(test) if test >= 1 else max(1, round(n * test))
    if k >= n:
        raise DataError(f"a test split of {k} images leaves no training images out of {n}")
    return records[k:], records[:k]


def csv_test_files(root: str | Path) -> set[Path] | None:
    """The images a CSV folder holds out itself (rows whose ``split`` column says ``test``), or None without one:
    ``prepare`` splits by person, which a split of shuffled images cannot."""
    with open(Path(root) / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f, skipinitialspace=True))
    if not rows or "split" not in rows[0]:
        return None
    return {Path(root) / r["filename"].strip() for r in rows if r["split"].strip().lower() == "test"}


def smiling_as(spec: DatasetSpec, source: str | Path, test_split: float = 0) -> list[Record]:
    """Training images of CelebA (``source``: its folder, or a ``pack`` folder with a ``Smiling`` column) labelled in
    ``spec``'s expression classes by their own ``Smiling`` attribute (smiling -> ``smiling``, else ``neutral``):
    many faces in the wild for a small expression set's group."""
    want = [lab.lower() for lab in spec.labels]
    if sorted(want) != ["neutral", "smiling"]:
        raise DataError(f"--celeba-smiling-share needs a dataset labelled neutral/smiling, not {', '.join(want)}")
    root = Path(source)
    if (root / "list_attr_celeba.txt").is_file():
        records, _ = read_celeba(root, ["Smiling"])
        train, _ = split(records, test_split, OFFICIAL_CELEBA_TEST)  # never the held-out images evaluation judges
    else:  # a pack holds training images only
        with open(root / "labels.csv", newline="") as f:
            train = [(root / r["filename"].strip(), [float(float(r["Smiling"]) > 0)]) for r in csv.DictReader(f)]
    return [(path, [float(s) if lab == "smiling" else 1.0 - s for lab in want]) for path, (s,) in train]


def _smiling_source(cfg) -> str | None:
    """Where CelebA's Smiling labels come from: ``--celeba-dir``, or a ``--csv-dirs`` pack with a Smiling column."""
    if cfg.celeba_dir:
        return cfg.celeba_dir
    for d in cfg.csv_dirs:
        with open(Path(d) / "labels.csv", newline="") as f:
            if "Smiling" in next(csv.reader(f), []):
                return d
    return None


def _mixed(own: list[Record], extra: list[Record], share: float) -> list[Record]:
    """``own`` repeated so that ``extra`` makes up about ``share`` of the result (a uniform sampler over it then
    draws that share of every batch from ``extra``)."""
    copies = max(1, round(len(extra) * (1 - share) / share / len(own)))
    return own * copies + extra


def load_datasets(cfg) -> tuple[DomainSchema, list[tuple[str, ImageLabels, ImageLabels]]]:
    """The schema and ``[(dataset name, train set, test set)]`` for every folder named in a ``TrainConfig``."""
    found: list[tuple[DatasetSpec, list[Record], list[Record], int | None]] = []  # spec, train, test, crop
    if cfg.celeba_dir:
        recs, spec = read_celeba(cfg.celeba_dir, cfg.attrs)
        found.append((spec, *split(recs, cfg.test_split, OFFICIAL_CELEBA_TEST), CELEBA_CROP))
    if cfg.rafd_dir:
        recs, spec = read_rafd(cfg.rafd_dir)
        random.Random(1234).shuffle(recs)  # class folders are sorted: shuffle so the test split mixes classes
        found.append((spec, *split(recs, cfg.test_split), 256))
    for d in cfg.csv_dirs:
        recs, spec = read_csv(d)
        random.Random(1234).shuffle(recs)
        test = csv_test_files(d)
        parts = split(recs, cfg.test_split) if test is None else \
            ([r for r in recs if r[0] not in test], [r for r in recs if r[0] in test])
        if not parts[0] or not parts[1]:
            raise DataError(f"{d}: its split column leaves no {'training' if not parts[0] else 'test'} images")
        found.append((spec, *parts, None))
    if not found:
        raise DataError("no training data: pass --celeba-dir, --rafd-dir and/or --csv-dirs")
    share = getattr(cfg, "celeba_smiling_share", 0.0)
    if share:
        source = _smiling_source(cfg)
        if source is None or len(found) < 2 or not 0 < share < 1:
            raise DataError("--celeba-smiling-share (between 0 and 1) needs CelebA (--celeba-dir, or a pack made with "
                            "--extra Smiling) and an expression dataset after it")
        spec, train_recs, test_recs, crop = found[-1]
        found[-1] = (spec, _mixed(train_recs, smiling_as(spec, source, cfg.test_split), share), test_recs, crop)
    schema = DomainSchema(tuple(spec for spec, _, _, _ in found))
    return schema, [(spec.name, ImageLabels(train, cfg.image_size, crop), ImageLabels(test, cfg.image_size, crop))
                    for spec, train, test, crop in found]
