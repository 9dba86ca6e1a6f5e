"""The attribute classifier learns attributes known by construction, and reads back exactly what it saved."""
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from stargan_core.checkpoint import CheckpointError
from stargan_core.classifier import decide, load_classifier, train_classifier
from stargan_core.domains import DomainSchema

# Synthetic faces: a tint (exclusive: red, green or neither), brightness (binary), a white patch (categorical: in
# the top or the bottom half; vertical, so that the horizontal flip of training keeps the label true).
SPEC = {"name": "patches", "groups": [
    {"name": "tint", "kind": "exclusive", "labels": ["Red", "Green"]},
    {"name": "bright", "kind": "binary", "labels": ["Bright"], "on": "Bright", "off": "Dark"},
    {"name": "patch", "kind": "categorical", "labels": ["top", "bottom"]}]}
SCHEMA = DomainSchema.from_dict({"datasets": [SPEC]})
N_IMAGES, SIZE, TEST_SPLIT = 160, 16, 0.25


def _image(rng: np.random.Generator, tint: int, bright: int, patch: int) -> np.ndarray:
    base = np.array([[0.2, 0.2, 0.7], [0.7, 0.2, 0.2], [0.2, 0.7, 0.2]][tint]) + 0.25 * bright  # tint 0 = neither
    img = base + rng.uniform(-0.05, 0.05, (SIZE, SIZE, 3))
    top, left = (rng.integers(1, 4) if patch == 0 else rng.integers(9, 12)), rng.integers(1, 11)
    img[top:top + 4, left:left + 4] = 1.0
    return (img.clip(0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def patches_dir(tmp_path_factory):
    """A labels.csv + schema.json folder of 160 16x16 images whose labels are true by construction."""
    root, rng = tmp_path_factory.mktemp("patches"), np.random.default_rng(0)
    rows = ["filename,Red,Green,Bright,top,bottom"]
    for i in range(N_IMAGES):
        tint, bright, patch = i % 3, (i // 3) % 2, (i // 6) % 2
        Image.fromarray(_image(rng, tint, bright, patch)).save(root / f"{i:03d}.png")
        rows.append(f"{i:03d}.png,{int(tint == 1)},{int(tint == 2)},{bright},{int(patch == 0)},{int(patch == 1)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "schema.json").write_text(json.dumps(SPEC))
    return root


@pytest.fixture(scope="module")
def classifier_dir(patches_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("clf") / "classifier"
    torch.manual_seed(0)
    train_classifier(patches_dir, image_size=SIZE, epochs=12, out=out, arch="small", test_split=TEST_SPLIT,
                     batch_size=16, log=lambda _: None)
    return out


def _held_out(root, k):
    """The first ``k`` held-out images and labels, re-derived: csv order, shuffled with Random(1234), head first."""
    rows = [line.split(",") for line in (root / "labels.csv").read_text().split("\n")[1:] if line]
    random.Random(1234).shuffle(rows)
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(root / r[0]), dtype=np.float32) / 127.5 - 1)
                     .permute(2, 0, 1) for r in rows[:k]])
    return x, torch.tensor([[float(v) for v in r[1:]] for r in rows[:k]])


def test_classifier_learns_attributes_known_by_construction(classifier_dir, patches_dir):
    clf = load_classifier(classifier_dir)
    info = json.loads((classifier_dir / "classifier.json").read_text())
    assert info["n_val"] == round(N_IMAGES * TEST_SPLIT) and info["n_train"] == N_IMAGES - info["n_val"]
    assert info["image_size"] == SIZE and info["arch"] == "small" and clf.spec == SCHEMA.datasets[0]
    assert all(acc >= 0.95 for acc in info["val_group_accuracy"].values()), info["val_group_accuracy"]
    assert all(info["val_accuracy"][lab] > info["val_majority_baseline"][lab] for lab in clf.spec.labels)
    # the saved numbers are the loaded classifier's, on images re-derived here
    x, labels = _held_out(patches_dir, info["n_val"])
    got, want = decide(clf.probs(x), clf.spec), decide(labels, clf.spec)
    for g in ("tint", "bright", "patch"):
        assert (got[g] == want[g]).float().mean().item() == pytest.approx(info["val_group_accuracy"][g])


def test_decide_reads_each_group_kind():
    spec = SCHEMA.datasets[0]
    p = torch.tensor([[0.2, 0.4, 0.6, 0.3, 0.7], [0.9, 0.6, 0.4, 0.8, 0.2]])
    d = decide(p, spec)
    assert d["tint"].tolist() == [-1, 0]  # no tint above 0.5 -> none of them
    assert d["bright"].tolist() == [1, 0] and d["patch"].tolist() == [1, 0]


def test_load_classifier_refuses_missing_or_mismatched_files(classifier_dir, tmp_path):
    with pytest.raises(CheckpointError, match="classifier.json"):
        load_classifier(tmp_path)
    info = json.loads((classifier_dir / "classifier.json").read_text())
    (tmp_path / "classifier.json").write_text(json.dumps({**info, "arch": "resnet18"}))
    (tmp_path / "classifier.safetensors").write_bytes((classifier_dir / "classifier.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="does not match"):
        load_classifier(tmp_path)
