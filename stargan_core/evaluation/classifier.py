"""The judge of translations: an attribute classifier trained on real images only (the paper's protocol).

``train_classifier`` fits it on the *train* split of a labelled folder (the very split the training loop makes,
so the held-out images are ones the generator never saw) with the discriminator's classification loss (BCE for
exclusive/binary groups, CE for categorical ones: ``losses.classification_loss``), measures it on the held-out
split and saves ``classifier.safetensors`` + ``classifier.json`` (dataset schema, image size, architecture,
held-out accuracy per attribute). ``load_classifier`` reads it back without unpickling anything.

A *decision* is one value per group and image: binary 0/1 (p > 0.5); exclusive the index of the attribute that is
on (the most probable one if p > 0.5, else -1 = none of them, e.g. grey hair); categorical the argmax.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from ..config import TrainConfig
from ..data.datasets import DataError, ImageLabels, load_datasets
from ..domains import DatasetSpec, DomainSchema
from ..nets.losses import classification_loss
from ..weights.formats import CheckpointError, read_state_dict

CLASSIFIER_WEIGHTS, CLASSIFIER_CONFIG = "classifier.safetensors", "classifier.json"
ARCHS = ("resnet18", "small")


# ----- data: the training loop's own split ------------------------------------------------------------------------
def held_out_split(data_dir: str | Path, attrs: Sequence[str] | None, image_size: int,
                   test_split: float = 0.0) -> tuple[DatasetSpec, ImageLabels, ImageLabels]:
    """(spec, train set, test set) of one folder, read and split exactly as ``train`` does (``load_datasets``).

    The format is found from the folder: ``list_attr_celeba.txt`` (CelebA, ``attrs``), ``labels.csv`` (CSV), else
    one sub-folder per RaFD expression. ``attrs`` applies to CelebA only.
    """
    root = Path(data_dir)
    cfg = TrainConfig(image_size=image_size, test_split=test_split)
    if (root / "list_attr_celeba.txt").is_file():
        cfg.celeba_dir, cfg.attrs = str(root), list(attrs or cfg.attrs)
    elif attrs:
        raise DataError(f"{root}: --attrs chooses CelebA attributes; this folder is not CelebA "
                        "(its labels come from labels.csv/schema.json or its sub-folders)")
    elif (root / "labels.csv").is_file():
        cfg.csv_dirs = [str(root)]
    else:
        cfg.rafd_dir = str(root)
    schema, [(_, train_set, test_set)] = load_datasets(cfg)
    return schema.datasets[0], train_set, test_set


def _groups(spec: DatasetSpec) -> list[tuple[slice, str]]:
    """(positions in the spec's label vector, kind) per group: the ``groups`` of ``classification_loss``."""
    schema = DomainSchema((spec,))
    return [(schema.group_slice(g.name), g.kind) for g in spec.groups]


def decide(probs: torch.Tensor, spec: DatasetSpec) -> dict[str, torch.Tensor]:
    """(N, n_labels) probabilities (or 0/1 labels) -> {group: (N,) decision} (see the module docstring)."""
    out = {}
    for g, (sl, kind) in zip(spec.groups, _groups(spec), strict=True):
        p = probs[:, sl]
        if kind == "binary":
            out[g.name] = (p[:, 0] > 0.5).long()
        else:
            best, idx = p.max(1)
            out[g.name] = idx if kind == "categorical" else torch.where(best > 0.5, idx, -1)
    return out


# ----- the classifier -----------------------------------------------------------------------------------------------
def build_classifier(arch: str, n_labels: int) -> nn.Module:
    """``resnet18`` (torchvision, random init, no download) or ``small`` (4 conv-BN-ReLU-pool stages, 0.4 M)."""
    if arch == "resnet18":
        from torchvision.models import resnet18
        return resnet18(weights=None, num_classes=n_labels)
    if arch != "small":
        raise ValueError(f"unknown classifier architecture '{arch}'; choose one of {', '.join(ARCHS)}")
    layers, c_in = [], 3
    for c_out in (32, 64, 128, 256):  # H -> H/16
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(c_in, n_labels))


@dataclass
class AttributeClassifier:
    """A trained classifier with the schema of its outputs; ``info`` is ``classifier.json``."""

    net: nn.Module
    spec: DatasetSpec
    image_size: int
    info: dict = field(default_factory=dict)

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3, H, W) in [-1, 1], any size -> (N, n_labels): sigmoid per attribute, softmax per categorical."""
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x.float(), size=(self.image_size,) * 2, mode="bilinear", antialias=True)
        logits = self.net.eval()(x.float())
        p = logits.sigmoid()
        for sl, kind in _groups(self.spec):
            if kind == "categorical":
                p[:, sl] = logits[:, sl].softmax(1)
        return p


def _accuracies(clf: AttributeClassifier, x: torch.Tensor, labels: torch.Tensor) -> dict[str, dict]:
    """Per label (thresholded, or one-hot argmax for categorical) and per group (decisions), and the majority
    baseline per label: what always answering the commoner value would score."""
    p = torch.cat([clf.probs(xb) for xb in x.split(256)])
    hard = p > 0.5
    for sl, kind in _groups(clf.spec):
        if kind == "categorical":
            hard[:, sl] = F.one_hot(p[:, sl].argmax(1), sl.stop - sl.start).bool()
    per_label = (hard == labels.bool()).float().mean(0).tolist()
    majority = torch.maximum(labels.mean(0), 1 - labels.mean(0)).tolist()
    got, want = decide(p, clf.spec), decide(labels, clf.spec)
    return {"val_accuracy": dict(zip(clf.spec.labels, per_label, strict=True)),
            "val_group_accuracy": {g: (got[g] == want[g]).float().mean().item() for g in got},
            "val_majority_baseline": dict(zip(clf.spec.labels, majority, strict=True))}


def _stack(dataset: ImageLabels) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a whole split once: (N, 3, S, S) images and (N, n_labels) labels (a few thousand small images)."""
    xs, ys = zip(*DataLoader(dataset, batch_size=64, num_workers=0), strict=True)
    return torch.cat(xs), torch.cat(ys)


def _augment(x: torch.Tensor) -> torch.Tensor:
    """Random horizontal flip per image and a random shift of up to S/16 px per batch (edge pixels repeated)."""
    x = torch.where((torch.rand(x.size(0)) < 0.5).view(-1, 1, 1, 1), x.flip(3), x)
    pad, s = max(1, x.size(-1) // 16), x.size(-1)
    i, j = torch.randint(0, 2 * pad + 1, (2,)).tolist()
    return F.pad(x, (pad,) * 4, mode="replicate")[..., i:i + s, j:j + s]


def _fit(net: nn.Module, x: torch.Tensor, labels: torch.Tensor, groups: list[tuple[slice, str]], epochs: int,
         batch_size: int, lr: float, log: Callable[[str], None]) -> None:
    """AdamW with a cosine learning rate over all steps; the loss is the discriminator's classification loss."""
    steps = epochs * math.ceil(len(x) / batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))
    for epoch in range(epochs):
        net.train()
        total = 0.0
        for idx in torch.randperm(len(x)).split(batch_size):
            loss = classification_loss(net(_augment(x[idx])), labels[idx], groups)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}")


def train_classifier(data_dir: str | Path, attrs: Sequence[str] | None = None, image_size: int = 64,
                     epochs: int = 10, out: str | Path = "classifier", arch: str = "small",
                     test_split: float = 0.0, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                     log: Callable[[str], None] = print) -> AttributeClassifier:
    """Train an attribute classifier on the train split of ``data_dir``, measure it on the held-out split, save
    it to the folder ``out`` (``classifier.safetensors`` + ``classifier.json``) and return it."""
    torch.manual_seed(seed)
    spec, train_set, test_set = held_out_split(data_dir, attrs, image_size, test_split)
    (x_train, y_train), (x_val, y_val) = _stack(train_set), _stack(test_set)
    log(f"{spec.name}: {len(x_train)} training and {len(x_val)} held-out images at {image_size} px, "
        f"labels {', '.join(spec.labels)}")
    clf = AttributeClassifier(build_classifier(arch, len(spec.labels)), spec, image_size)
    _fit(clf.net, x_train, y_train, _groups(spec), epochs, batch_size, lr, log)
    clf.info = {"format": "stargan-attribute-classifier", "version": 1,
                "dataset": DomainSchema((spec,)).to_dict()["datasets"][0], "image_size": image_size, "arch": arch,
                "data": str(data_dir), "test_split": test_split, "n_train": len(x_train), "n_val": len(x_val),
                "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                **_accuracies(clf, x_val, y_val)}
    save_classifier(clf, out)
    return clf


def save_classifier(clf: AttributeClassifier, folder: str | Path) -> Path:
    """Write ``classifier.safetensors`` and ``classifier.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in clf.net.state_dict().items()}, folder / CLASSIFIER_WEIGHTS)
    (folder / CLASSIFIER_CONFIG).write_text(json.dumps(clf.info, indent=2))
    return folder


def load_classifier(folder: str | Path) -> AttributeClassifier:
    """Read a folder written by ``train_classifier`` (safetensors only: loading runs no code), strictly."""
    folder = Path(folder)
    if not (folder / CLASSIFIER_CONFIG).is_file():
        raise CheckpointError(f"{folder}: no {CLASSIFIER_CONFIG}; train one with "
                              "`python -m stargan_core train-classifier DATA --out FOLDER`")
    info = json.loads((folder / CLASSIFIER_CONFIG).read_text())
    spec = DomainSchema.from_dict({"datasets": [info["dataset"]]}).datasets[0]
    net = build_classifier(info["arch"], len(spec.labels))
    try:
        net.load_state_dict(read_state_dict(folder / CLASSIFIER_WEIGHTS), strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{folder / CLASSIFIER_WEIGHTS}: does not match {CLASSIFIER_CONFIG} ({e})") from None
    return AttributeClassifier(net.eval(), spec, info["image_size"], info)
