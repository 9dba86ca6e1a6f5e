"""Packing CelebA's training split into one small folder (or one .tar) of WebP crops, for a machine that takes few MiB.

A lent GPU machine takes at most 64 MiB of files; CelebA_30k's 28,000 training JPEGs are 235 MB. ``pack_celeba``
reads a CelebA folder with ``read_celeba``, drops the official held-out split with ``split`` (so the packed set
never contains an image the evaluation uses), and runs each training image through the very preprocessing
training uses (``ImageLabels``: centre crop 178, resize to the model's size) before encoding it as WebP. The
result is a CSV folder (``labels.csv`` + ``schema.json`` declaring CelebA's groups under the name ``celeba``),
so ``train --csv-dirs FOLDER`` trains a model whose schema is a CelebA model's. Images are added in the official
shuffled order until the next one would push the pack past ``max_mib``; every file is counted as it lies in a
tar (512-byte header, data padded to 512 bytes), so the cap holds for the folder and for the .tar alike.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .data import CELEBA_CROP, OFFICIAL_CELEBA_TEST, DataError, ImageLabels, read_celeba, split
from .domains import CELEBA5_ATTRS, DatasetSpec, DomainSchema

MIB = 1 << 20


@dataclass
class PackResult:
    """What ``pack_celeba`` wrote: the folder or .tar, how many images, its size and how long it took."""

    path: Path
    images: int
    bytes: int
    seconds: float
    available: int  # training images that could have been packed (after --limit)
    capped: bool  # stopped because the next image would have passed max_mib
    skipped: int = 0  # images that failed to decode and were left out

    @property
    def mib(self) -> float:
        return self.bytes / MIB


def tar_member_bytes(size: int) -> int:
    """Bytes a file of ``size`` bytes takes inside a tar: one 512-byte header, its data padded to 512 bytes."""
    return tarfile.BLOCKSIZE + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def tar_bytes(member_bytes: int) -> int:
    """Size of a tar holding members that take ``member_bytes``: the 1,024-byte end, padded to a 10,240 record."""
    return -(-(member_bytes + 2 * tarfile.BLOCKSIZE) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def spec_json(spec: DatasetSpec) -> str:
    """``schema.json`` as ``read_csv`` reads it: the dataset's name and its groups."""
    return json.dumps(DomainSchema((spec,)).to_dict()["datasets"][0], indent=2) + "\n"


def csv_line(values: Sequence[object]) -> str:
    """One line of ``labels.csv`` (the header, or a file name and 0/1 per label)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


class _WebP(Dataset):
    """Item ``i`` of an ``ImageLabels`` as ``(i, WebP bytes or None if unreadable)``, for parallel encoding."""

    def __init__(self, ds: ImageLabels, quality: int) -> None:
        self.ds, self.quality = ds, quality

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[int, bytes | None]:
        failed = self.ds.failed
        x, _ = self.ds.pixels(i)  # (3, S, S) uint8: training's crop and resize
        if self.ds.failed != failed:  # pixels() stood in the next image for an unreadable one: leave it out
            return i, None
        buf = io.BytesIO()
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(buf, "WEBP", quality=self.quality, method=6)
        return i, buf.getvalue()


class _Sink:
    """Files written into a folder, or into a tar whose members lie under the folder's name; atomic on close."""

    def __init__(self, target: Path, as_tar: bool) -> None:
        self.target, self.name = target, target.name.removesuffix(".tar")
        self.tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
        if as_tar:
            self.tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)
            self.mtime = int(time.time())
            self._add_dir()
        else:
            self.tar = None
            self.tmp.mkdir(parents=True)

    def _add_dir(self) -> None:
        info = tarfile.TarInfo(self.name)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, self.mtime
        self.tar.addfile(info)

    def add(self, name: str, data: bytes) -> None:
        if self.tar is None:
            (self.tmp / name).write_bytes(data)
            return
        info = tarfile.TarInfo(f"{self.name}/{name}")
        info.size, info.mode, info.mtime = len(data), 0o644, self.mtime
        self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> int:
        """Move the finished pack into place; its size in bytes."""
        if self.tar is not None:
            self.tar.close()
        os.replace(self.tmp, self.target)
        if self.tar is not None:
            return self.target.stat().st_size
        return sum(f.stat().st_size for f in self.target.iterdir())

    def discard(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tmp.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def pack_celeba(celeba_dir: str | Path, out: str | Path, attrs: Sequence[str] = CELEBA5_ATTRS,
                image_size: int = 128, limit: int | None = None, quality: int = 80, max_mib: float = 60.0,
                as_tar: bool = False, num_workers: int = 0) -> PackResult:
    """Write the first ``limit`` training images of a CelebA folder as WebP crops + ``labels.csv`` + ``schema.json``
    into ``out`` (or ``out.tar`` with ``as_tar``), stopping before the pack would pass ``max_mib`` MiB."""
    if not 1 <= quality <= 100:
        raise DataError(f"--quality must be between 1 and 100, not {quality}")
    if image_size < 1 or max_mib <= 0 or (limit is not None and limit < 1):
        raise DataError("--image-size, --max-mib and --limit must be positive numbers")
    out = Path(out)
    target = out.with_name(out.name + ".tar") if as_tar else out
    if target.exists():
        raise FileExistsError(f"{target} already exists: remove it or choose another --out")
    start = time.perf_counter()
    records, spec = read_celeba(celeba_dir, attrs)
    train_recs, _ = split(records, 0, OFFICIAL_CELEBA_TEST)  # the held-out images are never packed
    train_recs = train_recs[:limit] if limit else train_recs
    ds = ImageLabels(train_recs, image_size, CELEBA_CROP)  # exactly training's crop and resize
    schema_text, rows = spec_json(spec), [csv_line(["filename", *spec.labels])]
    # every file counted as it lies in a tar, plus the folder's own entry: the cap holds for folder and tar
    fixed = tarfile.BLOCKSIZE + tar_member_bytes(len(schema_text.encode()))
    images_bytes, labels_bytes, skipped, capped = 0, len(rows[0]), 0, False
    sink = _Sink(target, as_tar)
    try:
        loader = DataLoader(_WebP(ds, quality), batch_size=None, num_workers=num_workers)
        for i, data in loader:
            if data is None:
                skipped += 1
                continue
            name = train_recs[i][0].stem + ".webp"
            row = csv_line([name, *(int(v > 0) for v in train_recs[i][1])])  # ASCII: len() is its bytes
            if tar_bytes(fixed + images_bytes + tar_member_bytes(len(data))
                         + tar_member_bytes(labels_bytes + len(row))) > max_mib * MIB:
                capped = True
                break
            sink.add(name, data)
            images_bytes, labels_bytes = images_bytes + tar_member_bytes(len(data)), labels_bytes + len(row)
            rows.append(row)
        if len(rows) == 1:
            raise DataError(f"--max-mib {max_mib:g} holds no image; give it more room")
        sink.add("labels.csv", "".join(rows).encode())
        sink.add("schema.json", schema_text.encode())
        size = sink.close()
    except BaseException:
        sink.discard()
        raise
    return PackResult(target, len(rows) - 1, size, time.perf_counter() - start, len(train_recs), capped, skipped)
