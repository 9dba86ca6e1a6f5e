"""Judging expression edits with a CelebA ``Smiling`` classifier, on faces from any dataset.

A joint model's expression group (the London set's neutral / smiling) has no judge of its own: its 40 held-out
photos are too few to train one. CelebA's ``Smiling`` attribute is the same concept with 28,000 training images,
so a classifier trained on it (``train-classifier --attrs ... Smiling``) judges every edit: a face that was not
smiling, edited to *smiling*, should be judged smiling; a smiling face edited to *neutral*, not smiling. The faces
are the held-out split of each folder: CelebA's official 2,000, or the people a ``prepare``d folder holds out.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from ..data.datasets import (
    CELEBA_CROP,
    OFFICIAL_CELEBA_TEST,
    DataError,
    ImageLabels,
    csv_test_files,
    read_celeba,
    read_csv,
    split,
)
from ..domains import DomainSchema, Group
from ..weights.formats import CheckpointError, load_discriminator, load_generator
from .classifier import load_classifier


def expression_group(schema: DomainSchema) -> Group:
    """The model's group with a ``smiling`` and a ``neutral`` class."""
    for g in schema.groups:
        if {"smiling", "neutral"} <= {lab.lower() for lab in g.labels}:
            return g
    raise DataError(f"this model has no neutral/smiling expression group (its groups: "
                    f"{', '.join(g.name for g in schema.groups)})")


def smiling_faces(folder: str | Path, image_size: int) -> ImageLabels:
    """The held-out faces of ``folder`` with one label, smiling (1) or not (0)."""
    root = Path(folder)
    if (root / "list_attr_celeba.txt").is_file():
        records, _ = read_celeba(root, ["Smiling"])
        return ImageLabels(split(records, 0, OFFICIAL_CELEBA_TEST)[1], image_size, CELEBA_CROP)
    records, spec = read_csv(root)
    test = csv_test_files(root)
    if test is None or "smiling" not in spec.labels:
        raise DataError(f"{root}: expected CelebA, or a prepared folder with a smiling class and a split column")
    k = spec.labels.index("smiling")
    return ImageLabels([(p, [lab[k]]) for p, lab in records if p in test], image_size, None)


@torch.inference_mode()
def evaluate_expression(model_source: str | Path, folders: list[str | Path], classifier_dir: str | Path,
                        max_images: int | None = None, batch_size: int = 32) -> dict:
    """Per folder: how often non-smiling faces edited to smiling are judged smiling, and smiling ones edited to
    neutral judged not smiling (with the judge's own accuracy on the unedited faces)."""
    G, cfg = load_generator(model_source)
    G.eval()
    try:  # the model's own discriminator reads expressions too: how well, on the same faces
        D = load_discriminator(model_source, cfg.schema)[0].eval()
    except CheckpointError:
        D = None
    clf = load_classifier(classifier_dir)
    if "Smiling" not in clf.spec.labels:
        raise DataError(f"{classifier_dir}: the judge has no Smiling output; train one with train-classifier "
                        "--attrs ... Smiling")
    schema, g = cfg.schema, expression_group(cfg.schema)
    k_smiling = [lab.lower() for lab in g.labels].index("smiling")
    j, sl, ds = clf.spec.labels.index("Smiling"), schema.group_slice(g.name), schema.dataset_of(g.name)
    none = torch.zeros(1, schema.cls_dim)  # (1, c_dim) below: the expression alone, the expression dataset's mask
    targets = {want: schema.condition(schema.target(none, {g.name: want}), ds) for want in ("smiling", "neutral")}
    report = {"model": str(model_source), "classifier": str(classifier_dir), "folders": {}}
    for folder in folders:
        faces = smiling_faces(folder, cfg.image_size)
        n = len(faces) if max_images is None else min(max_images, len(faces))
        t = dict.fromkeys(("n", "smiling_in", "judge_right", "d_right", "to_smiling_n", "to_smiling_hit",
                           "to_neutral_n", "to_neutral_hit"), 0)
        for x, y in DataLoader(Subset(faces, range(n)), batch_size=batch_size):
            smiling = y[:, 0] > 0.5  # (N,) ground truth
            t["n"] += len(x)
            t["smiling_in"] += int(smiling.sum())
            t["judge_right"] += int(((clf.probs(x)[:, j] > 0.5) == smiling).sum())
            if D is not None:  # D's expression logits: is "smiling" the larger one?
                logits = D(x)[1][:, sl]
                t["d_right"] += int(((logits.argmax(1) == k_smiling) == smiling).sum())
            for want, hit_if, pick in (("smiling", True, ~smiling), ("neutral", False, smiling)):
                if pick.any():
                    x_fake = G(x[pick], targets[want].expand(int(pick.sum()), -1))
                    t[f"to_{want}_n"] += int(pick.sum())
                    t[f"to_{want}_hit"] += int(((clf.probs(x_fake)[:, j] > 0.5) == hit_if).sum())
        report["folders"][str(folder)] = {
            **t, "to_smiling": t["to_smiling_hit"] / max(1, t["to_smiling_n"]),
            "to_neutral": t["to_neutral_hit"] / max(1, t["to_neutral_n"]), "judge_on_inputs": t["judge_right"] / t["n"],
            "discriminator_on_inputs": t["d_right"] / t["n"] if D is not None else None}
    return report


def evaluate_expression_cli(args) -> None:
    """``python -m stargan_core evaluate-expression MODEL DATA... --classifier DIR``: print a line per folder."""
    report = evaluate_expression(args.model, args.data, args.classifier, args.max_images)
    for folder, r in report["folders"].items():
        print(f"{folder}: {r['n']} held-out faces; not smiling -> smiling judged smiling {100 * r['to_smiling']:.1f}%"
              f" ({r['to_smiling_n']}), smiling -> neutral judged not smiling {100 * r['to_neutral']:.1f}% "
              f"({r['to_neutral_n']}); on the unedited faces the judge is right {100 * r['judge_on_inputs']:.1f}%"
              + ("" if r["discriminator_on_inputs"] is None else
                 f", the model's discriminator {100 * r['discriminator_on_inputs']:.1f}%"))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "expression.json").write_text(json.dumps(report, indent=2))
