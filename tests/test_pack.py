"""pack: CelebA's training split as WebP crops for a machine that takes few MiB, from the CLI (the official split's
held-out images never packed, read_csv gives CelebA's schema and labels, a size cap, a tar that extracts to the same
folder) and on the real subset (the crops decode to the training crop of the JPEGs within WebP's loss)."""
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FAKE_CELEBA_ATTRS, fake_celeba
from stargan_core.config import TrainConfig
from stargan_core.data.datasets import ImageLabels, load_datasets, read_celeba, read_csv, split
from stargan_core.domains import CELEBA5_ATTRS


def _pack(tmp_path: Path, out: str, *flags: str, n: int = 30) -> Path:
    """A fake CelebA folder of ``n`` distinct blurry images (made once per folder), packed by the CLI into ``out``."""
    from stargan_core.cli import main
    celeba = tmp_path / "celeba"
    if not celeba.is_dir():
        fake_celeba(celeba, n=n, broken=False)
        for i, f in enumerate(sorted((celeba / "images").iterdir())):  # smooth: their 32 px crops keep detail
            px = torch.randint(0, 256, (9, 8, 3), generator=torch.Generator().manual_seed(i), dtype=torch.uint8)
            Image.fromarray(px.numpy()).resize((178, 218), Image.BICUBIC).save(f, quality=95)
    assert main(["pack", "--celeba-dir", str(celeba), "--out", str(tmp_path / out), "--image-size", "32",
                 "--num-workers", "0", *flags]) == 0
    return tmp_path / out


def test_pack_writes_only_training_images_and_read_csv_gives_celebas_schema_and_labels(tmp_path, capsys):
    folder = _pack(tmp_path, "packed", "--attrs", "Blond_Hair", "Brown_Hair", "Male")
    assert "27 images, 0.0 MiB" in capsys.readouterr().out
    rows = [line.split() for line in (tmp_path / "celeba" / "list_attr_celeba.txt").read_text().split("\n")[2:]
            if line]
    random.seed(1234)  # the official split, computed independently: shuffle, hold out the head (10% of 30)
    random.shuffle(rows)
    held_out, train_rows = {r[0][:-4] for r in rows[:3]}, rows[3:]
    packed, spec = read_csv(folder)
    assert [p.stem for p, _ in packed] == [r[0][:-4] for r in train_rows]  # every training image, in order
    assert not held_out & {p.stem for p, _ in packed} and {p.suffix for p, _ in packed} == {".webp"}
    records, celeba_spec = read_celeba(tmp_path / "celeba", ["Blond_Hair", "Brown_Hair", "Male"])
    assert spec == celeba_spec and spec.name == "celeba"
    by_stem = {p.stem: lab for p, lab in records}
    assert [lab for _, lab in packed] == [by_stem[p.stem] for p, _ in packed]
    assert [lab for _, lab in packed] == [[float(r[1 + FAKE_CELEBA_ATTRS.index(a)] == "1") for a in
                                           ("Blond_Hair", "Brown_Hair", "Male")] for r in train_rows]
    with Image.open(packed[0][0]) as im:
        assert im.format == "WEBP" and im.size == (32, 32)
    schema, sets = load_datasets(TrainConfig(csv_dirs=[str(folder)]))  # train --csv-dirs FOLDER, no other flag
    assert schema.datasets == (celeba_spec,) and len(sets[0][1]) + len(sets[0][2]) == 27


def test_pack_stops_before_the_size_cap_and_no_later(tmp_path, capsys):
    import tarfile
    whole = _pack(tmp_path, "whole", n=160)
    lines = (whole / "labels.csv").read_text().splitlines(keepends=True)
    files = [whole / line.split(",")[0] for line in lines[1:]]
    cap = 48 * 1024  # 144 training crops of ~0.5 KB at 32 px: about two thirds fit
    capped = _pack(tmp_path, "capped", "--max-mib", str(cap / 2**20))
    k = len((capped / "labels.csv").read_text().splitlines()) - 1
    assert 50 < k < 144 and f"{k} of 144 training images fit in --max-mib" in capsys.readouterr().out
    assert sorted(f.name for f in capped.iterdir()) == sorted([f.name for f in files[:k]] + ["labels.csv",
                                                                                             "schema.json"])
    used = sum(f.stat().st_size for f in capped.iterdir())
    one_more = used + files[k].stat().st_size + len(lines[k + 1])  # the next crop and its labels.csv line
    assert used <= cap < one_more
    _pack(tmp_path, "capped_tar", "--tar", "--max-mib", str(cap / 2**20))
    tar_path = tmp_path / "capped_tar.tar.gz"
    with tarfile.open(tar_path) as tar:
        crops = [m for m in tar.getmembers() if m.name.endswith(".webp")]
        assert [m.name for m in crops] == [f"capped_tar/{f.name}" for f in files[:len(crops)]]
        assert all(tar.extractfile(m).read() == f.read_bytes() for m, f in zip(crops, files[:len(crops)],
                                                                                strict=True))
    assert tar_path.stat().st_size <= cap and k / 2 < len(crops) <= k  # (its bound reserves the 10 KB tar end)
    plain = tmp_path / "plain.tar"  # the same files in a plain tar: 512-byte headers and padding do not fit
    with tarfile.open(plain, "w", format=tarfile.USTAR_FORMAT) as tar:
        for f in [*files[:len(crops)], whole / "schema.json"]:
            tar.add(f, f"capped_tar/{f.name}")
    assert plain.stat().st_size > cap


def test_pack_tar_extracts_to_the_same_folder_and_refuses_to_overwrite(tmp_path, capsys):
    import tarfile

    from stargan_core.cli import main
    folder = _pack(tmp_path / "a", "celeba32", "--limit", "12")
    _pack(tmp_path / "b", "new/celeba32", "--limit", "12", "--tar")  # into a folder not made yet
    assert capsys.readouterr().out.count("12 images") == 2
    with tarfile.open(tmp_path / "b" / "new" / "celeba32.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    got = {f.name: f.read_bytes() for f in (tmp_path / "x" / "celeba32").iterdir()}
    assert got == {f.name: f.read_bytes() for f in folder.iterdir()} and len(got) == 12 + 2
    argv = ["pack", "--celeba-dir", str(tmp_path / "a" / "celeba"), "--image-size", "32", "--num-workers", "0"]
    assert main([*argv, "--out", str(folder)]) == 1
    assert main([*argv, "--out", str(tmp_path / "tiny"), "--max-mib", "0.0005"]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "holds no image" in err and not (tmp_path / "tiny").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "x"]  # no partial files left behind


@pytest.mark.data
def test_packed_crops_decode_to_the_training_crop_of_the_jpegs_within_webp_loss(celeba_dir, tmp_path):
    from stargan_core.data.datasets import CELEBA_CROP, cache_images
    from stargan_core.data.pack import pack_celeba
    result = pack_celeba(celeba_dir, tmp_path / "celeba128", image_size=128, limit=20)
    records, spec = read_csv(result.path)
    assert result.images == 20 and spec.name == "celeba"
    _, held_out = split(read_celeba(celeba_dir, list(CELEBA5_ATTRS))[0], 0, official=2000)
    assert not {p.stem for p, _ in held_out} & {p.stem for p, _ in records}
    cached = cache_images(ImageLabels(records, 128, None))  # what train --csv-dirs feeds the model
    jpegs = [celeba_dir / "images" / f"{p.stem}.jpg" for p, _ in records]
    ref = []  # independent reference: PIL's own centre crop 178 and antialiased bilinear resize of the JPEG
    for path in jpegs:
        with Image.open(path) as im:
            top = (im.height - CELEBA_CROP) // 2
            crop = im.convert("RGB").crop((0, top, CELEBA_CROP, top + CELEBA_CROP))
            ref.append(torch.from_numpy(np.array(crop.resize((128, 128), Image.BILINEAR))).permute(2, 0, 1))
    diff = (cached.images.float() - torch.stack(ref).float()).abs().mean((1, 2, 3)) / 255
    assert diff.mean() < 3 / 255 and diff.max() < 4 / 255, diff * 255  # WebP q80: 2.6/255 on average
    train_path = torch.stack([ImageLabels([(p, [0.0]) for p in jpegs], 128, CELEBA_CROP).pixels(i)[0]
                              for i in range(20)])  # training on the JPEGs themselves
    assert ((cached.images.float() - train_path.float()).abs().mean() / 255) < 3 / 255
