"""Packing CelebA's training split into one small folder (or .tar.gz) of WebP crops, for a machine that takes few MiB.

A lent GPU machine takes at most 64 MiB of files; CelebA_30k's 28,000 training JPEGs are 235 MB. ``pack_celeba``
reads a CelebA folder with ``read_celeba``, drops the official held-out split with ``split`` (so the packed set
never contains an image the evaluation uses), and runs each training image through the very preprocessing
training uses (``ImageLabels``: centre crop 178, resize to the model's size) before encoding it as WebP. The
result is a CSV folder (``labels.csv`` + ``schema.json`` declaring CelebA's groups under the name ``celeba``),
so ``train --csv-dirs FOLDER`` trains a model whose schema is a CelebA model's. Images are added in the official
shuffled order until the next one would push the pack past ``max_mib``: the folder's bytes, or those of the
one-file variant, a gzip-compressed tar (``FOLDER.tar.gz``, extracted by ``tar xzf``) for a tool that carries files.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import tarfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..domains import CELEBA5_ATTRS, DatasetSpec, DomainSchema, celeba_schema
from .datasets import CELEBA_CROP, OFFICIAL_CELEBA_TEST, DataError, ImageLabels, read_celeba, split

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


def deflate_bound(size: int) -> int:
    """At most this many gzip bytes for ``size`` new bytes, whatever they are (zlib's deflateBound, + a sync flush,
    the block headers and the 8-byte trailer, rounded up generously)."""
    return size + (size >> 11) + 64


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


class _Folder:
    """A pack written as a folder (moved into place when complete); the cap counts its files' bytes."""

    def __init__(self, target: Path, cap: int) -> None:
        self.target, self.cap, self.used = target, cap, 0
        self.tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
        self.tmp.mkdir(parents=True)

    def fits(self, sizes: Sequence[int]) -> bool:
        """Would files of ``sizes`` bytes, added to what is written, stay within the cap?"""
        return self.used + sum(sizes) <= self.cap

    def add(self, name: str, data: bytes) -> None:
        (self.tmp / name).write_bytes(data)
        self.used += len(data)

    def close(self) -> int:
        """Move the finished pack into place; its size in bytes."""
        os.replace(self.tmp, self.target)
        return self.used

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class _TarGz(_Folder):
    """A pack written as one gzip-compressed tar whose files lie under ``FOLDER/``.

    Compressed, because a plain tar spends 512 bytes of header and on average 256 of padding on each file, a large
    share of crops of a few KB. The cap holds for the compressed bytes: what is written so far is
    measured exactly after a sync flush (done only when the bound of what follows could pass the cap), the
    rest is bounded by ``deflate_bound`` of its tar bytes.
    """

    def __init__(self, target: Path, cap: int) -> None:
        self.target, self.cap, self.name = target, cap, target.name.removesuffix(".tar.gz")
        self.tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
        self.mtime = int(time.time())
        self.raw = open(self.tmp, "wb")  # noqa: SIM115 (closed in close/discard)
        self.gz = gzip.GzipFile(self.target.name, "wb", fileobj=self.raw, mtime=self.mtime)
        self.tar = tarfile.open(fileobj=self.gz, mode="w", format=tarfile.USTAR_FORMAT)
        self.flushed, self.pending = self.raw.tell(), 0  # gzip bytes at the last flush; tar bytes written since
        self._add(tarfile.TarInfo(self.name), None)

    def fits(self, sizes: Sequence[int]) -> bool:
        # the files, the tar's 1,024-byte end and its padding to a 10,240-byte record
        more = sum(tar_member_bytes(n) for n in sizes) + 2 * tarfile.BLOCKSIZE + tarfile.RECORDSIZE
        if self.flushed + deflate_bound(self.pending + more) <= self.cap:
            return True
        if self.pending:  # measure what is written exactly, then decide
            self.gz.flush(zlib.Z_SYNC_FLUSH)
            self.flushed, self.pending = self.raw.tell(), 0
        return self.flushed + deflate_bound(more) <= self.cap

    def _add(self, info: tarfile.TarInfo, data: bytes | None) -> None:
        info.mtime = self.mtime
        if data is None:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
        else:
            info.size, info.mode = len(data), 0o644
        self.tar.addfile(info, None if data is None else io.BytesIO(data))
        self.pending += tar_member_bytes(info.size)

    def add(self, name: str, data: bytes) -> None:
        self._add(tarfile.TarInfo(f"{self.name}/{name}"), data)

    def close(self) -> int:
        for f in (self.tar, self.gz, self.raw):
            f.close()
        os.replace(self.tmp, self.target)
        return self.target.stat().st_size

    def discard(self) -> None:
        for f in (self.tar, self.gz, self.raw):
            f.close()
        self.tmp.unlink(missing_ok=True)


def pack_celeba(celeba_dir: str | Path, out: str | Path, attrs: Sequence[str] = CELEBA5_ATTRS,
                image_size: int = 128, limit: int | None = None, quality: int = 80, max_mib: float = 60.0,
                as_tar: bool = False, num_workers: int = 0, extra: Sequence[str] = ()) -> PackResult:
    """Write the first ``limit`` training images of a CelebA folder as WebP crops + ``labels.csv`` + ``schema.json``
    into ``out`` (or ``out.tar.gz`` with ``as_tar``), stopping before the pack would pass ``max_mib`` MiB.
    ``extra`` attributes get a column in ``labels.csv`` but stay out of the schema (``Smiling``, for
    ``--celeba-smiling-share``)."""
    if not 1 <= quality <= 100:
        raise DataError(f"--quality must be between 1 and 100, not {quality}")
    if image_size < 1 or max_mib <= 0 or (limit is not None and limit < 1):
        raise DataError("--image-size, --max-mib and --limit must be positive numbers")
    out = Path(out)
    target = out.with_name(out.name + ".tar.gz") if as_tar else out
    if target.exists():
        raise FileExistsError(f"{target} already exists: remove it or choose another --out")
    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    records, _ = read_celeba(celeba_dir, [*attrs, *extra])
    spec = celeba_schema(attrs)
    train_recs, _ = split(records, 0, OFFICIAL_CELEBA_TEST)  # the held-out images are never packed
    train_recs = train_recs[:limit] if limit else train_recs
    ds = ImageLabels(train_recs, image_size, CELEBA_CROP)  # exactly training's crop and resize
    schema_text, rows = spec_json(spec), [csv_line(["filename", *spec.labels, *extra])]
    labels_bytes, skipped, capped = len(rows[0]), 0, False
    sink = (_TarGz if as_tar else _Folder)(target, int(max_mib * MIB))
    try:
        loader = DataLoader(_WebP(ds, quality), batch_size=None, num_workers=num_workers)
        for i, data in loader:
            if data is None:
                skipped += 1
                continue
            name = train_recs[i][0].stem + ".webp"
            row = csv_line([name, *(int(v > 0) for v in train_recs[i][1])])  # ASCII: len() is its bytes
            if not sink.fits([len(data), labels_bytes + len(row), len(schema_text)]):  # + labels.csv, schema.json
                capped = True
                break
            sink.add(name, data)
            labels_bytes += len(row)
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
