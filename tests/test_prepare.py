"""``prepare``: raw photos in class folders -> aligned CelebA-framed training images, split by person."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from stargan_core.data.datasets import DataError, read_csv
from stargan_core.edit.prepare import prepare_classes

pytestmark = [pytest.mark.data, pytest.mark.slow]


def test_prepare_aligns_real_london_photos_splits_by_person_and_reports_bad_ones(shared_data, tmp_path):
    raw = tmp_path / "raw"
    for cls in ("neutral", "smiling"):
        (raw / cls).mkdir(parents=True)
        for person in ("001", "002", "004"):
            src = shared_data / "london_faces" / cls / f"{person}.jpg"
            (raw / cls / f"{person}.jpg").write_bytes(src.read_bytes())
    (raw / "smiling" / "005.jpg").write_bytes(b"not a jpeg")  # unreadable: reported, never labelled
    Image.new("RGB", (300, 300), (200, 180, 160)).save(raw / "neutral" / "005.jpg")  # no face in it
    two = Image.new("RGB", (1024, 512))
    two.paste(Image.open(raw / "neutral" / "001.jpg"), (0, 0))
    two.paste(Image.open(raw / "neutral" / "002.jpg"), (512, 0))
    two.save(raw / "neutral" / "006.jpg")  # two people: whose expression would it be?

    r = prepare_classes(raw, tmp_path / "out", heldout=1, seed=3)
    assert sorted(s.split(":")[0] for s in r.skipped) == ["neutral/005.jpg", "neutral/006.jpg", "smiling/005.jpg"]
    assert any("2 faces" in s for s in r.skipped) and any("no face" in s for s in r.skipped)
    rows = list(csv.DictReader(open(tmp_path / "out" / "labels.csv")))
    assert len(rows) == 6 and r.train + r.test == 6
    held = {row["person"] for row in rows if row["split"] == "test"}
    assert held == set(r.test_people) and len(held) == 1 and r.test == 2  # both photos of one person
    for row in rows:  # each label is the folder the photo came from
        assert (row["neutral"], row["smiling"]) == (("1", "0") if row["filename"].startswith("images/neutral")
                                                    else ("0", "1"))
    assert json.loads((tmp_path / "out" / "schema.json").read_text())["groups"][0] == {
        "name": "expression", "kind": "categorical", "labels": ["neutral", "smiling"]}
    records, spec = read_csv(tmp_path / "out")
    assert spec.name == "london" and len(records) == 6
    # CelebA's framing: 178x218, eyes level near rows 112 of img_align_celeba, the face in the middle column
    im = np.asarray(Image.open(tmp_path / "out" / "images" / "neutral_001.jpg").convert("L"), np.float32)
    assert im.shape == (218, 178)
    face, corner = im[100:160, 60:118].std(), im[:30, :30].std()
    assert face > 3 * corner  # the textured face sits where CelebA's does; the studio backdrop is flat


def test_prepare_refuses_a_folder_without_class_folders(tmp_path):
    with pytest.raises(DataError, match="one sub-folder per class"):
        prepare_classes(tmp_path, tmp_path / "out")
