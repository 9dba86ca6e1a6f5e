"""Data readers on tiny folders written by the tests (and on the real CelebA subset when present); the pack command:
test_pack.py."""
import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import fake_celeba, write_image
from stargan_core.config import TrainConfig
from stargan_core.data.datasets import (
    DataError,
    ImageLabels,
    load_datasets,
    read_celeba,
    read_csv,
    read_rafd,
    split,
)
from stargan_core.data.sampler import StepSampler
from stargan_core.domains import CELEBA5_ATTRS, RAFD_EXPRESSIONS


def test_celeba_reader_keeps_official_order_labels_and_skips_unreadable(tmp_path):
    rows = fake_celeba(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        records, spec = read_celeba(tmp_path, ["Blond_Hair", "Male"])
    ref = [list(r) for r in rows]
    random.seed(1234)  # the official solver's split, computed independently with the global RNG
    random.shuffle(ref)
    ref = [r for r in ref if r[0] != "000003.jpg"]
    assert [p.name for p, _ in records] == [r[0] for r in ref]
    assert [lab for _, lab in records] == [[float(r[2] == "1"), float(r[4] == "1")] for r in ref]
    assert [g.kind for g in spec.groups] == ["exclusive", "binary"]


def test_celeba_reader_errors_name_the_problem(tmp_path):
    fake_celeba(tmp_path, broken=False)
    with pytest.raises(DataError, match="no attribute named Blonde_Hair"):
        read_celeba(tmp_path, ["Blonde_Hair"])
    with pytest.raises(DataError, match="list_attr_celeba.txt"):
        read_celeba(tmp_path / "nowhere", ["Male"])


def test_celeba_preprocessing_is_centre_crop_178_then_normalise(tmp_path):
    write_image(tmp_path / "a.png")
    ds = ImageLabels([(tmp_path / "a.png", [1.0])], image_size=178, crop_size=178)
    x, y = ds[0]
    px = torch.as_tensor(list(Image.open(tmp_path / "a.png").getdata()), dtype=torch.float32).view(218, 178, 3)
    want = (px[20:198].permute(2, 0, 1) / 255 - 0.5) / 0.5  # rows 20..197: the centre 178 of 218
    assert x.shape == (3, 178, 178) and torch.allclose(x, want, atol=1e-6) and y.tolist() == [1.0]
    x64, _ = ImageLabels([(tmp_path / "a.png", [1.0])], image_size=64, crop_size=178)[0]
    assert x64.shape == (3, 64, 64) and x64.min() >= -1 and x64.max() <= 1


def test_split_official_2000_for_big_sets_ratio_for_small_ones():
    big = [(Path(f"{i}.jpg"), [0.0]) for i in range(25_000)]
    train, test = split(big, 0, official=2000)
    assert len(test) == 2000 and test == big[:2000] and len(train) == 23_000
    small = big[:2000]
    assert [len(s) for s in split(small, 0, official=2000)] == [1800, 200]
    assert [len(s) for s in split(small, 0.25)] == [1500, 500]
    assert [len(s) for s in split(small, 16)] == [1984, 16]
    with pytest.raises(DataError, match="leaves no training"):
        split(small, 2000)


def test_rafd_class_order_comes_from_the_schema_not_the_file_system(tmp_path):
    for name in ("Surprised", "angry", "happy"):  # mixed case, missing classes are allowed
        for i in range(2):
            write_image(tmp_path / name / f"{i}.png", size=(32, 32))
    (tmp_path / "happy" / "notes.txt").write_text("ignored")
    records, spec = read_rafd(tmp_path)
    assert spec.labels == RAFD_EXPRESSIONS
    by_folder = {p.parent.name: lab for p, lab in records}
    assert by_folder["angry"] == [1.0] + [0.0] * 7
    assert by_folder["happy"].index(1.0) == RAFD_EXPRESSIONS.index("happy") == 4
    assert by_folder["Surprised"].index(1.0) == 7 and len(records) == 6
    (tmp_path / "bored").mkdir()
    with pytest.raises(DataError, match="unknown folders: bored"):
        read_rafd(tmp_path)
    with pytest.raises(DataError, match="one sub-folder per class"):
        read_rafd(tmp_path / "nowhere")


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "happy").mkdir()
    with pytest.raises(DataError, match="no readable images"):
        read_rafd(tmp_path)


def test_csv_reader_with_schema_json_and_minus_one_values(tmp_path):
    for i in range(4):
        write_image(tmp_path / f"{i}.png", size=(16, 16))
    (tmp_path / "labels.csv").write_text("filename,round,square,big\n0.png,1,-1,1\n1.png,-1,1,-1\n"
                                         "2.png,1,-1,-1\n3.png,-1,1,1\n")
    records, spec = read_csv(tmp_path)  # no schema.json: every column binary
    assert [g.kind for g in spec.groups] == ["binary"] * 3 and records[1][1] == [0.0, 1.0, 0.0]
    (tmp_path / "schema.json").write_text(json.dumps({"name": "toys", "groups": [
        {"name": "shape", "kind": "categorical", "labels": ["square", "round"]},
        {"name": "size", "kind": "binary", "labels": ["big"], "on": "big", "off": "small"}]}))
    records, spec = read_csv(tmp_path)
    assert spec.name == "toys" and spec.labels == ("square", "round", "big")
    assert [lab for _, lab in records] == [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]
    (tmp_path / "schema.json").write_text(json.dumps({"groups": [{"name": "x", "kind": "binary",
                                                                   "labels": ["tall"]}]}))
    with pytest.raises(DataError, match="no column named tall"):
        read_csv(tmp_path)
    with pytest.raises(DataError, match="no labels.csv"):
        read_csv(tmp_path / "nowhere")


def test_an_image_that_fails_to_decode_later_is_replaced_and_counted(tmp_path):
    write_image(tmp_path / "ok.png", size=(16, 16), value=255)
    write_image(tmp_path / "cut.png", size=(64, 64))
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # header fine, pixels truncated
    ds = ImageLabels([(tmp_path / "cut.png", [0.0]), (tmp_path / "ok.png", [1.0])], 16, None)
    with pytest.warns(UserWarning, match="unreadable"):
        x, y = ds[0]
    assert ds.failed == 1 and y.tolist() == [1.0] and torch.allclose(x, torch.ones(3, 16, 16))


def test_step_sampler_is_a_pure_function_of_the_step_and_shards_ranks():
    s = StepSampler(10, 4, seed=3)
    it = iter(s)
    stream = [next(it) for _ in range(10)]  # 40 draws = 4 epochs of 10
    assert stream[7] == next(iter(StepSampler(10, 4, seed=3, start_step=7)))  # resume at step 7
    flat = sum(stream, [])
    for e in range(4):
        assert sorted(flat[10 * e:10 * e + 10]) == list(range(10))  # every image once per epoch
    r0, r1 = StepSampler(10, 2, 3, rank=0, world=2), StepSampler(10, 2, 3, rank=1, world=2)
    for step in range(5):  # two ranks split the single-process stream of global batches of 4
        assert r0.indices(step) + r1.indices(step) == s.indices(step)
    assert StepSampler(10, 4, seed=4).indices(0) != s.indices(0)


def test_load_datasets_joins_folders_with_a_mask_vector(tmp_path):
    fake_celeba(tmp_path / "celeba", n=12, broken=False)
    for i in range(10):
        write_image(tmp_path / "toys" / f"{i}.png", size=(16, 16))
    (tmp_path / "toys" / "labels.csv").write_text("filename,big\n" + "".join(f"{i}.png,{i % 2}\n" for i in range(10)))
    cfg = TrainConfig(celeba_dir=str(tmp_path / "celeba"), attrs=["Black_Hair", "Male"],
                      csv_dirs=[str(tmp_path / "toys")], image_size=16, test_split=0.2)
    schema, sets = load_datasets(cfg)
    assert [ds.name for ds in schema.datasets] == ["celeba", "toys"] and schema.c_dim == 3 + 2
    assert [(name, len(tr), len(te)) for name, tr, te in sets] == [("celeba", 10, 2), ("toys", 8, 2)]
    x, y = sets[1][1][0]
    assert x.shape == (3, 16, 16) and y.shape == (1,)
    with pytest.raises(DataError, match="no training data"):
        load_datasets(TrainConfig())


@pytest.mark.data
def test_real_celeba_subset(celeba_dir):
    records, spec = read_celeba(celeba_dir, list(CELEBA5_ATTRS))
    assert len(records) == 2000
    counts = torch.tensor([lab for _, lab in records]).sum(0).tolist()
    assert counts == [480, 282, 401, 872, 1500]  # Black, Blond, Brown, Male, Young (data README)
    train, test = split(records, 0, official=2000)
    assert (len(train), len(test)) == (1800, 200)
    x, y = ImageLabels(test, 128, 178)[0]
    assert x.shape == (3, 128, 128) and -1 <= x.min() < x.max() <= 1 and y.shape == (5,)


def test_cache_equals_decoding_and_is_read_back_without_decoding(tmp_path, monkeypatch):
    from stargan_core.classroom.shapes import ShapeWorld as World
    from stargan_core.data.datasets import ImageLabels, cache_images, read_csv
    world = World(16)
    recs, _ = read_csv(world.write(tmp_path / "shapes", "shapes", 12, 1))
    ds = ImageLabels(recs, 16, None)
    cached = cache_images(ds, tmp_path / "cache")
    assert cached.images.dtype == torch.uint8 and cached.images.shape == (12, 3, 16, 16)
    x, labels = cached.batch([3, 0, 7])
    ref = torch.stack([ds[i][0] for i in (3, 0, 7)])
    assert torch.allclose(x, ref, atol=1e-6) and torch.equal(labels, torch.stack([ds[i][1] for i in (3, 0, 7)]))
    monkeypatch.setattr(ImageLabels, "pixels", lambda self, i: (_ for _ in ()).throw(AssertionError("decoded")))
    again = cache_images(ds, tmp_path / "cache")  # read back from the .npy files
    assert torch.equal(again.images, cached.images)
    with pytest.raises(AssertionError, match="decoded"):  # other images, other key: decoded, not mixed up
        cache_images(ImageLabels(recs[:6], 16, None), tmp_path / "cache")


def _labelled_folder(root, rows, header="filename,neutral,smiling,split"):
    from PIL import Image
    (root / "images").mkdir(parents=True)
    for r in rows:
        Image.new("RGB", (20, 24), (40 * len(r[0]) % 255, 90, 30)).save(root / r[0])
    (root / "labels.csv").write_text("\n".join([header, *(",".join(map(str, r)) for r in rows)]) + "\n")
    (root / "schema.json").write_text('{"name": "london", "groups": [{"name": "expression", "kind": "categorical", '
                                      '"labels": ["neutral", "smiling"]}]}')


def test_a_csv_split_column_is_the_held_out_set_and_celeba_smiling_fills_a_share_of_its_batches(tmp_path):
    from stargan_core.config import TrainConfig
    rows = [(f"images/{e}_{p}.jpg", int(e == "n"), int(e == "s"), "test" if p == 1 else "train")
            for p in range(1, 5) for e in "ns"]
    _labelled_folder(tmp_path / "london", rows)
    schema, [(name, train_set, test_set)] = load_datasets(TrainConfig(csv_dirs=[str(tmp_path / "london")],
                                                                      image_size=16))
    assert name == "london" and schema.labels == ["neutral", "smiling"]
    assert sorted(p.name for p, _ in test_set.records) == ["n_1.jpg", "s_1.jpg"]  # the person held out whole
    assert len(train_set) == 6 and not {p.name for p, _ in train_set.records} & {"n_1.jpg", "s_1.jpg"}
    # CelebA's Smiling attribute labels a share of the expression set's training images (never its 2,000 test ones)
    celeba = tmp_path / "celeba"
    (celeba / "images").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(30)]
    for n in names:
        Image.new("RGB", (178, 218)).save(celeba / "images" / n)
    attrs = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young", "Smiling"]
    (celeba / "list_attr_celeba.txt").write_text("\n".join(
        [str(len(names)), " ".join(attrs), *(f"{n} 1 -1 -1 1 1 {1 if i % 3 else -1}" for i, n in enumerate(names))]))
    cfg = TrainConfig(celeba_dir=str(celeba), csv_dirs=[str(tmp_path / "london")], image_size=16,
                      celeba_smiling_share=0.5, test_split=3)
    schema, [_, (name, train_set, test_set)] = load_datasets(cfg)
    assert name == "london" and len(test_set) == 2
    from_celeba = [(p, lab) for p, lab in train_set.records if p.parent.parent == celeba]
    assert len(from_celeba) == 27  # CelebA's held-out 3 are left out
    assert all(lab == ([0.0, 1.0] if int(p.stem) % 3 else [1.0, 0.0]) for p, lab in from_celeba)
    assert len(train_set) - 27 == 6 * 4  # the 6 London images, repeated to about half of the set


def test_a_pack_with_an_extra_smiling_column_feeds_the_smiling_share_on_a_machine_without_celeba(tmp_path):
    from stargan_core.data.pack import pack_celeba
    celeba = tmp_path / "celeba"
    (celeba / "images").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(20)]
    for i, n in enumerate(names):
        Image.new("RGB", (178, 218), (10 * i, 80, 40)).save(celeba / "images" / n)
    attrs = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young", "Smiling"]
    (celeba / "list_attr_celeba.txt").write_text("\n".join(
        [str(len(names)), " ".join(attrs), *(f"{n} 1 -1 -1 1 1 {1 if i % 2 else -1}" for i, n in enumerate(names))]))
    r = pack_celeba(celeba, tmp_path / "pack", image_size=16, extra=["Smiling"])
    assert r.images == 18  # 10% held out, never packed
    header = (tmp_path / "pack" / "labels.csv").read_text().splitlines()[0]
    assert header == "filename,Black_Hair,Blond_Hair,Brown_Hair,Male,Young,Smiling"
    assert json.loads((tmp_path / "pack" / "schema.json").read_text())["name"] == "celeba"
    rows = [(f"images/{e}_{p}.jpg", int(e == "n"), int(e == "s"), "test" if p == 1 else "train")
            for p in range(1, 4) for e in "ns"]
    _labelled_folder(tmp_path / "london", rows)
    cfg = TrainConfig(csv_dirs=[str(tmp_path / "pack"), str(tmp_path / "london")], image_size=16,
                      celeba_smiling_share=0.5, test_split=2)
    schema, [(first, celeba_train, _), (name, train_set, _)] = load_datasets(cfg)
    assert (first, name) == ("celeba", "london") and schema.labels[:5] == list(CELEBA5_ATTRS)  # Smiling: no label
    packed = {p.name: lab for p, lab in train_set.records if p.parent.name == "pack"}
    assert len(packed) == 18 and all(lab == ([0.0, 1.0] if int(n[:6]) % 2 else [1.0, 0.0]) for n, lab in
                                     packed.items())
