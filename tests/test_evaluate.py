"""The evaluation tools: a classifier that learns attributes known by construction, and ``evaluate`` whose figures
are recomputed here by hand (targets, decisions, the reconstruction cycle) from the same generator."""
import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from stargan_core.cli import main
from stargan_core.config import ModelConfig
from stargan_core.data.datasets import DataError
from stargan_core.domains import CELEBA5, DomainSchema
from stargan_core.evaluation.classifier import decide, load_classifier, train_classifier
from stargan_core.evaluation.evaluate import evaluate
from stargan_core.nets.model import Generator
from stargan_core.weights.formats import CheckpointError, load_generator, save_release

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


def _targets(c_org):
    """The paper's target for each domain, written out: tint one-hot, Bright flipped, patch one-hot."""
    out = {}
    for name, pos, value in (("Red", slice(0, 2), [1, 0]), ("Green", slice(0, 2), [0, 1]),
                             ("Top", slice(3, 5), [1, 0]), ("Bottom", slice(3, 5), [0, 1])):
        c = c_org.clone()
        c[:, pos] = torch.tensor(value, dtype=c.dtype)
        out[name] = c
    c = c_org.clone()
    c[:, 2] = 1 - c[:, 2]
    out["Bright/Dark"] = c
    return out


def test_evaluate_cli_matches_figures_computed_by_hand(patches_dir, classifier_dir, tmp_path, capsys):
    torch.manual_seed(1)
    save_release(Generator(8, SCHEMA.c_dim, 1), ModelConfig(SCHEMA, SIZE, 8, 8, 1, 1), tmp_path / "model")
    k = 6
    assert main(["evaluate", str(tmp_path / "model"), str(patches_dir), "--classifier", str(classifier_dir),
                 "--out", str(tmp_path / "eval"), "--max-images", str(k), "--test-split", str(TEST_SPLIT)]) == 0
    assert "report: " in capsys.readouterr().out
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    d = report["datasets"]["patches"]
    assert d["n_images"] == k and set(d["groups"]) == {"tint", "bright", "patch"}
    assert list(d["domains"]) == ["Red", "Green", "Bright/Dark", "Top", "Bottom"]

    G, _ = load_generator(tmp_path / "model")  # the same fp16-rounded weights, run here by hand
    clf, spec = load_classifier(classifier_dir), SCHEMA.datasets[0]
    x_real, c_org = _held_out(patches_dir, k)
    real = decide(clf.probs(x_real), spec)
    group = {"Red": "tint", "Green": "tint", "Bright/Dark": "bright", "Top": "patch", "Bottom": "patch"}
    with torch.no_grad():
        for name, c_trg in _targets(c_org).items():
            x_fake = G(x_real, c_trg)
            x_rec = G(x_fake, c_org)
            fake, want = decide(clf.probs(x_fake), spec), decide(c_trg, spec)
            got = d["domains"][name]
            assert got["target_accuracy"] == pytest.approx((fake[group[name]] == want[group[name]]).float().mean())
            others = [g for g in ("tint", "bright", "patch") if g != group[name]]
            assert got["preservation"] == pytest.approx(np.mean([(fake[g] == real[g]).float().mean() for g in others]))
            assert got["preservation_vs_labels"] == pytest.approx(
                np.mean([(fake[g] == decide(c_org, spec)[g]).float().mean() for g in others]))
            l1 = (x_real - x_rec).abs().mean((1, 2, 3))
            assert got["rec_l1"] == pytest.approx(l1.mean().item(), rel=1e-4)
            mse01 = ((x_real - x_rec) / 2).pow(2).mean((1, 2, 3))
            lap = lambda x: F.conv2d(x, torch.tensor([[0., 1, 0], [1, -4, 1], [0, 1, 0]]).expand(3, 1, 3, 3),  # noqa: E731
                                     groups=3).abs().mean((1, 2, 3)).sum()
            assert got["laplacian_ratio"] == pytest.approx((lap(x_fake) / lap(x_real)).item(), rel=1e-4)
            assert got["rec_psnr"] == pytest.approx(np.mean([10 * math.log10(1 / m) for m in mse01.tolist()]),
                                                    rel=1e-4)
        x_id = G(x_real, c_org)  # asked to stay itself
        assert d["identity_l1"] == pytest.approx((x_id - x_real).abs().mean().item(), rel=1e-4)
        shift = torch.linalg.vector_norm((x_id - x_real).mean((2, 3)), dim=1)
        assert d["identity_colour_shift"] == pytest.approx(shift.mean().item(), rel=1e-4)
        assert report["summary"]["identity_l1"] == d["identity_l1"]
    assert d["groups"]["tint"]["target_accuracy"] == pytest.approx(
        (d["domains"]["Red"]["target_accuracy"] + d["domains"]["Green"]["target_accuracy"]) / 2)
    assert report["summary"]["rec_l1"] == pytest.approx(np.mean([x["rec_l1"] for x in d["domains"].values()]))
    with Image.open(tmp_path / "eval" / "grid-patches.jpg") as grid:  # input + 5 domains, one row per image
        assert grid.size == (6 * SIZE, 14 + k * SIZE)


def test_evaluate_with_a_label_blind_generator_at_another_size(patches_dir, classifier_dir, tmp_path):
    """G ignoring c makes every domain's output the same image: the invariants below must then hold exactly."""
    size = 24  # the data is resized to the model's 24 px, and back to the classifier's 16 px
    G = Generator(8, SCHEMA.c_dim, 1)
    with torch.no_grad():
        G.main[0].weight[:, 3:] = 0  # the condition channels
    save_release(G, ModelConfig(SCHEMA, size, 8, 8, 1, 1), tmp_path / "blind")
    report = evaluate(tmp_path / "blind", patches_dir, classifier_dir, max_images=10, test_split=TEST_SPLIT)
    assert (report["model_image_size"], report["classifier_image_size"]) == (size, SIZE)
    dom = report["datasets"]["patches"]["domains"]
    assert dom["Top"]["target_accuracy"] + dom["Bottom"]["target_accuracy"] == pytest.approx(1.0)
    assert dom["Red"]["target_accuracy"] + dom["Green"]["target_accuracy"] <= 1.0 + 1e-9
    assert len({round(x["rec_l1"], 6) for x in dom.values()}) == 1  # G(G(x)) whatever the target
    for g in ("tint", "bright", "patch"):  # preserving g: the same fake image for every domain of another group
        assert len({x["preservation_by_group"][g] for x in dom.values() if g in x["preservation_by_group"]}) == 1


def test_evaluate_says_when_the_data_is_not_the_models(patches_dir, classifier_dir, tmp_path):
    save_release(Generator(8, CELEBA5.c_dim, 1), ModelConfig(CELEBA5, SIZE, 8, 8, 1, 1), tmp_path / "celeba")
    with pytest.raises(DataError, match="holds none of the model's datasets"):
        evaluate(tmp_path / "celeba", patches_dir, classifier_dir, test_split=TEST_SPLIT)


@pytest.mark.data
@pytest.mark.slow
def test_real_celeba_smoke(celeba_dir, tmp_path, capsys):
    """One quick epoch on the real images, then a tiny untrained model evaluated through the CLI."""
    assert main(["train-classifier", str(celeba_dir), "--out", str(tmp_path / "clf"), "--image-size", "32",
                 "--epochs", "1", "--arch", "small"]) == 0
    assert "Young" in capsys.readouterr().out
    save_release(Generator(8, CELEBA5.c_dim, 1), ModelConfig(CELEBA5, 32, 8, 8, 1, 1), tmp_path / "model")
    assert main(["evaluate", str(tmp_path / "model"), str(celeba_dir), "--classifier", str(tmp_path / "clf"),
                 "--out", str(tmp_path / "eval"), "--max-images", "4"]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    d = report["datasets"]["celeba"]
    assert d["n_images"] == 4 and set(d["groups"]) == {"hair", "gender", "age"}
    assert all(0 <= x["target_accuracy"] <= 1 and x["rec_l1"] > 0 for x in d["domains"].values())


def test_laplacian_energy_tells_checkerboard_from_flat_and_smooth():
    from stargan_core.evaluation.evaluate import laplacian_energy
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 2.0 - 1  # +-1 alternating: |lap| = 8
    ramp = torch.linspace(-1, 1, 8)[None].expand(8, 8)  # linear: the Laplacian vanishes
    x = torch.stack([checker.expand(3, 8, 8), ramp.expand(3, 8, 8), torch.zeros(3, 8, 8)])
    assert laplacian_energy(x).tolist() == pytest.approx([8.0, 0.0, 0.0], abs=1e-6)
