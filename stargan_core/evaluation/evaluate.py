"""Measuring a generator the paper's way, on held-out real images judged by an attribute classifier.

``evaluate`` translates every held-out image to every domain of the paper's figure (``translate_domains``) and
asks the classifier (``classifier.py``) whether the target is there (**target accuracy**; also among the images
whose input it did not already judge to be the target) and whether the other groups kept the value it saw on the
input (**preservation**; also against the ground-truth labels). It measures the L1 (in [-1, 1] pixel units) and
PSNR (on the [0, 1] scale, per image) of the cycle ``x_rec = G(G(x_real, c_trg), c_org)``, and of the **identity**
``G(x_real, c_org)`` (asked to change nothing) its L1 and its colour shift (the norm of its mean RGB change: the
drift that a blend adding ``G(x, c_trg) - G(x, c_org)`` to the photo leaves out of the edit), and writes
``report.json`` and a grid of inputs and translations. ``evaluate_cli`` and ``train_classifier_cli`` are the
``evaluate`` and ``train-classifier`` commands.
"""
from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from ..data.datasets import DataError, ImageLabels
from ..domains import DatasetSpec, DomainSchema, Group
from ..edit.images import grid
from ..nets.model import Generator
from ..nets.translate import translate_domains
from ..weights.formats import CheckpointError, load_generator
from .classifier import (
    CLASSIFIER_CONFIG,
    AttributeClassifier,
    decide,
    held_out_split,
    load_classifier,
    train_classifier,
)


# ----- evaluation -----------------------------------------------------------------------------------------------------
def evaluate(model_source: str | Path, data_dir: str | Path | Sequence[str | Path], classifier_dir: str | Path,
             out_dir: str | Path | None = None, max_images: int | None = None, test_split: float | None = None,
             batch_size: int = 16, n_grid: int = 8) -> dict:
    """Target accuracy, preservation and reconstruction of a generator on the held-out images of each data folder.

    ``model_source``: a release folder/file, an official .ckpt or a training checkpoint (``load_generator``).
    ``test_split``: as the model was trained; by default its run's ``train_config.json``, else 0 (train's default).
    With ``out_dir``, writes ``report.json`` and ``grid-DATASET.jpg`` (input + every domain, ``n_grid`` images).
    """
    G, cfg = load_generator(model_source)
    G.eval()  # no running-stat updates; the output is the same (per-image normalisation, see model.py)
    clf = load_classifier(classifier_dir)
    test_split = _run_test_split(model_source) if test_split is None else test_split
    if clf.info.get("test_split", 0.0) != test_split:
        warnings.warn(f"the classifier was trained with test_split={clf.info.get('test_split')}, the evaluation uses "
                      f"{test_split}: some evaluated images may be in the classifier's training set", stacklevel=2)
    report = {"model": str(model_source), "classifier": str(classifier_dir), "model_image_size": cfg.image_size,
              "classifier_image_size": clf.image_size, "test_split": test_split, "datasets": {}}
    grids = {}
    for folder in [data_dir] if isinstance(data_dir, str | Path) else data_dir:
        ds, test_set = _dataset_in(cfg.schema, folder, cfg.image_size, test_split)
        n = len(test_set) if max_images is None else min(max_images, len(test_set))
        report["datasets"][ds.name], grids[ds.name] = _evaluate_dataset(
            G, cfg.schema, ds, clf, Subset(test_set, range(n)), batch_size, n_grid)
        report["datasets"][ds.name]["data"] = str(folder)
    report["summary"] = _summary(report["datasets"])
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, (names, columns) in grids.items():
            grid(names, columns).save(out / f"grid-{name}.jpg")
        (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _run_test_split(model_source: str | Path) -> float:
    """The split the model was trained with: ``test_split`` of its run's ``train_config.json``, else 0."""
    p = Path(model_source)
    f = p / "train_config.json" if p.is_dir() else p.parent / "train_config.json"
    return float(json.loads(f.read_text()).get("test_split", 0.0)) if f.is_file() else 0.0


def _dataset_in(schema: DomainSchema, data_dir: str | Path, image_size: int,
                test_split: float) -> tuple[DatasetSpec, ImageLabels]:
    """The model's dataset that ``data_dir`` holds (same labels), and its held-out images at the model's size."""
    tried = []
    for ds in schema.datasets:
        celeba = (Path(data_dir) / "list_attr_celeba.txt").is_file()
        try:
            spec, _, test_set = held_out_split(data_dir, ds.labels if celeba else None, image_size, test_split)
        except DataError as e:
            tried.append(str(e))
            continue
        if spec.labels == ds.labels:
            return ds, test_set
        tried.append(f"{data_dir} has the labels {', '.join(spec.labels)}")
    wanted = "; ".join(f"{ds.name}: {', '.join(ds.labels)}" for ds in schema.datasets)
    raise DataError(f"{data_dir} holds none of the model's datasets ({wanted}): {' / '.join(tried)}")


def _domain_groups(ds: DatasetSpec) -> list[tuple[Group, int]]:
    """(group, position in the group) per domain, in label order like ``DomainSchema.paper_targets``."""
    return [(g, i) for g in ds.groups for i in range(len(g.labels))]


def _domain_targets(ds: DatasetSpec, truth: dict[str, torch.Tensor]) -> list[tuple[Group, torch.Tensor]]:
    """(group, target decision (N,)) per domain: an exclusive/categorical label switched on, a binary attribute
    flipped from the image's own label."""
    return [(g, 1 - truth[g.name] if g.kind == "binary" else torch.full_like(truth[g.name], i))
            for g, i in _domain_groups(ds)]


LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian(x: torch.Tensor, pad: bool = False) -> torch.Tensor:
    """The 4-neighbour Laplacian of each channel of x (N, 3, H, W): (N, 3, H-2, W-2), or (N, 3, H, W) with ``pad``
    (the edge replicated, so that a change reaching the image's edge is not a step there)."""
    x = F.pad(x.float(), (1, 1, 1, 1), mode="replicate") if pad else x.float()
    return F.conv2d(x, LAPLACIAN.to(x.device).expand(3, 1, 3, 3), groups=3)


def laplacian_energy(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute Laplacian per image (N,) of x (N, 3, S, S): high for checkerboard speckle, low for blur."""
    return laplacian(x).abs().mean((1, 2, 3))


def _tally(t: dict, ds: DatasetSpec, clf: AttributeClassifier, x_real: torch.Tensor, labels: torch.Tensor,
           x_fake: torch.Tensor, x_rec: torch.Tensor, x_id: torch.Tensor) -> None:
    """Add one batch's counts and sums to ``t``. x_real and x_id (N, 3, S, S); x_fake and x_rec (domains, N, 3,
    S, S)."""
    idx = [clf.spec.labels.index(lab) for lab in ds.labels]  # the classifier's outputs in the model's label order
    real, truth = decide(clf.probs(x_real)[:, idx], ds), decide(labels, ds)
    t["n"] += len(x_real)
    t["laplacian_real"] += laplacian_energy(x_real).sum().item()
    drift = (x_id - x_real).float()  # (N, 3, S, S): what G changes when asked for the image's own labels
    t["id_l1"] += drift.abs().mean((1, 2, 3)).sum().item()
    t["id_shift"] += drift.mean((2, 3)).norm(dim=1).sum().item()
    for g in ds.groups:
        t["input", g.name] += (real[g.name] == truth[g.name]).sum().item()
    for k, (g, target) in enumerate(_domain_targets(ds, truth)):
        fake = decide(clf.probs(x_fake[k])[:, idx], ds)
        hit, changed = fake[g.name] == target, real[g.name] != target
        t[k, "hit"] += hit.sum().item()
        t[k, "changed"] += changed.sum().item()
        t[k, "hit_changed"] += (hit & changed).sum().item()
        for h in (h.name for h in ds.groups if h is not g):  # the untouched groups
            t[k, "keep", h] += (fake[h] == real[h]).sum().item()
            t[k, "keep_gt", h] += (fake[h] == truth[h]).sum().item()
        t[k, "laplacian"] += laplacian_energy(x_fake[k]).sum().item()
        diff = (x_real - x_rec[k]).float()  # [-1, 1] units; PSNR on the [0, 1] scale, per image
        t[k, "l1"] += diff.abs().mean((1, 2, 3)).sum().item()
        t[k, "psnr"] += (-10 * torch.log10((diff / 2).pow(2).mean((1, 2, 3)).clamp_min(1e-10))).sum().item()


def _evaluate_dataset(G: Generator, schema: DomainSchema, ds: DatasetSpec, clf: AttributeClassifier, images: Subset,
                      batch_size: int, n_grid: int) -> tuple[dict, tuple[list[str], list[torch.Tensor]]]:
    """One dataset's report, and the grid's column names and columns (each (n_grid, 3, S, S))."""
    missing = [lab for lab in ds.labels if lab not in clf.spec.labels]
    if missing:
        raise DataError(f"the classifier knows {', '.join(clf.spec.labels)} but the model's '{ds.name}' also needs "
                        f"{', '.join(missing)}: train one with train-classifier --attrs {' '.join(ds.labels)}")
    sl, t, grid = schema.dataset_slice(ds.name), defaultdict(float), None
    for x_real, labels in DataLoader(images, batch_size=batch_size):
        c_org = torch.zeros(len(x_real), schema.cls_dim)  # (N, cls_dim): other datasets' labels stay 0
        c_org[:, sl] = labels
        columns = translate_domains(G, x_real, c_org, schema)[sl]  # one domain per label, this dataset's only
        x_fake = torch.stack([x for _, x in columns])  # (domains, N, 3, S, S)
        with torch.inference_mode():  # back to the image's own labels: x_rec = G(x_fake, c_org)
            c_own = schema.condition(c_org, ds.name)  # (N, c_dim)
            x_rec = G(x_fake.flatten(0, 1), c_own.repeat(len(columns), 1)).view_as(x_fake)
            x_id = G(x_real, c_own)  # (N, 3, S, S) asked to stay itself
        _tally(t, ds, clf, x_real, labels, x_fake, x_rec, x_id)
        grid = grid or (["Input", *(name for name, _ in columns)], [x_real[:n_grid], *x_fake[:, :n_grid]])
    return _dataset_report(t, ds, grid[0][1:]), grid


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _dataset_report(t: dict, ds: DatasetSpec, names: list[str]) -> dict:
    """Turn the tallies into rates: per domain, per group (mean over its domains), and the classifier on inputs."""
    n, domains = t["n"], {}
    for k, (name, (g, _)) in enumerate(zip(names, _domain_groups(ds), strict=True)):
        others = [h.name for h in ds.groups if h is not g]
        keep = {h: t[k, "keep", h] / n for h in others}
        domains[name] = {
            "group": g.name, "target_accuracy": t[k, "hit"] / n,
            "target_accuracy_changed": t[k, "hit_changed"] / t[k, "changed"] if t[k, "changed"] else None,
            "n_changed": int(t[k, "changed"]), "preservation": _mean(keep.values()), "preservation_by_group": keep,
            "preservation_vs_labels": _mean(t[k, "keep_gt", h] / n for h in others),
            "rec_l1": t[k, "l1"] / n, "rec_psnr": t[k, "psnr"] / n,
            "laplacian_ratio": t[k, "laplacian"] / t["laplacian_real"]}  # 1 = as sharp as real, > 1 speckle
    groups = {g.name: {key: _mean(d[key] for d in domains.values() if d["group"] == g.name)
                       for key in ("target_accuracy", "target_accuracy_changed", "preservation",
                                   "preservation_vs_labels", "rec_l1", "rec_psnr", "laplacian_ratio")}
              for g in ds.groups}
    return {"n_images": int(n), "classifier_accuracy_on_inputs": {g.name: t["input", g.name] / n for g in ds.groups},
            "identity_l1": t["id_l1"] / n, "identity_colour_shift": t["id_shift"] / n, "groups": groups,
            "domains": domains}


def _summary(datasets: dict) -> dict:
    """Means over every group (target accuracy, preservation) and every domain (reconstruction)."""
    groups = [g for d in datasets.values() for g in d["groups"].values()]
    domains = [x for d in datasets.values() for x in d["domains"].values()]
    return {"target_accuracy": _mean(g["target_accuracy"] for g in groups),
            "preservation": _mean(g["preservation"] for g in groups),
            "rec_l1": _mean(x["rec_l1"] for x in domains), "rec_psnr": _mean(x["rec_psnr"] for x in domains),
            "laplacian_ratio": _mean(x["laplacian_ratio"] for x in domains),
            "identity_l1": _mean(d["identity_l1"] for d in datasets.values()),
            "identity_colour_shift": _mean(d["identity_colour_shift"] for d in datasets.values())}


# ----- command line ---------------------------------------------------------------------------------------------------
def _fmt(v: float | None, pct: bool = True) -> str:
    return "-" if v is None else f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def format_report(report: dict) -> str:
    """The report as plain-text tables: one row per domain, then one per group, then the summary."""
    lines = []
    for name, d in report["datasets"].items():
        lines += [f"{name}: {d['n_images']} held-out images ({d['data']})",
                  f"{'domain':<16}{'group':<12}{'target':>8}{'changed':>9}{'preserve':>10}{'vs labels':>10}"
                  f"{'rec L1':>8}{'PSNR':>7}"]
        for dom, x in d["domains"].items():
            lines.append(f"{dom:<16}{x['group']:<12}{_fmt(x['target_accuracy']):>8}"
                         f"{_fmt(x['target_accuracy_changed']):>9}{_fmt(x['preservation']):>10}"
                         f"{_fmt(x['preservation_vs_labels']):>10}{x['rec_l1']:>8.4f}{x['rec_psnr']:>7.2f}")
        lines.append(f"{'group':<16}{'':<12}{'target':>8}{'changed':>9}{'preserve':>10}{'vs labels':>10}"
                     f"{'rec L1':>8}{'cls(in)':>9}")
        for g, x in d["groups"].items():
            lines.append(f"{g:<16}{'':<12}{_fmt(x['target_accuracy']):>8}{_fmt(x['target_accuracy_changed']):>9}"
                         f"{_fmt(x['preservation']):>10}{_fmt(x['preservation_vs_labels']):>10}{x['rec_l1']:>8.4f}"
                         f"{_fmt(d['classifier_accuracy_on_inputs'][g]):>9}")
    s = report["summary"]
    lines.append(f"overall: target accuracy {_fmt(s['target_accuracy'])}, preservation {_fmt(s['preservation'])}, "
                 f"reconstruction L1 {s['rec_l1']:.4f}, PSNR {s['rec_psnr']:.2f} dB, Laplacian of the translations "
                 f"{s['laplacian_ratio']:.2f}x the real images' (1 = as sharp; speckle > 1, blur < 1), identity "
                 f"G(x, c_org): L1 {s['identity_l1']:.4f}, colour shift {s['identity_colour_shift']:.3f}")
    return "\n".join(lines)


def evaluate_cli(args) -> None:
    """``python -m stargan_core evaluate MODEL DATA... --classifier DIR --out DIR``: print the tables, write JSON."""
    try:
        report = evaluate(args.model, args.data, args.classifier, args.out, args.max_images, args.test_split)
    except (CheckpointError, DataError) as e:
        raise SystemExit(str(e)) from None
    print(format_report(report))
    print(f"report: {Path(args.out) / 'report.json'}")


def train_classifier_cli(args) -> None:
    """``python -m stargan_core train-classifier DATA --out DIR``: train, then print held-out accuracy per label."""
    try:
        clf = train_classifier(args.data, args.attrs, args.image_size, args.epochs, args.out, args.arch,
                               args.test_split)
    except DataError as e:
        raise SystemExit(str(e)) from None
    info = clf.info
    print(f"{'attribute':<24}{'held-out accuracy':>18}{'majority baseline':>19}")
    for lab, acc in info["val_accuracy"].items():
        print(f"{lab:<24}{_fmt(acc):>18}{_fmt(info['val_majority_baseline'][lab]):>19}")
    print(f"classifier ({info['n_val']} held-out images): {Path(args.out) / CLASSIFIER_CONFIG}")
