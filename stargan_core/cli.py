"""Command line: ``python -m stargan_core {train,export,translate,evaluate,train-classifier,push,pack,prepare,
evaluate-expression,space} ...``.

Training flags are derived from the ``TrainConfig`` dataclass fields, so a new field is a new flag with no
extra code. Each sub-command imports its module lazily: ``--help`` stays fast and needs no heavy imports.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import get_type_hints


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--flag`` per dataclass field, typed from the field (choices from its metadata). A flag not given
    stays out of the parsed namespace (``SUPPRESS``), so that ``dataclass_from_args`` knows what was set."""
    hints = get_type_hints(cls)
    for f in fields(cls):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        flag, tp, kw = "--" + f.name.replace("_", "-"), hints[f.name], {"default": argparse.SUPPRESS}
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=f"default: {default}", **kw)
        elif getattr(tp, "__origin__", None) is list:
            parser.add_argument(flag, nargs="+", type=tp.__args__[0], help=f"default: {' '.join(map(str, default))}",
                                **kw)
        else:  # a field may list its allowed values in metadata["choices"]
            parser.add_argument(flag, type=tp, choices=f.metadata.get("choices"), help=f"default: {default}", **kw)


def dataclass_from_args(cls: type, args: argparse.Namespace):
    """Build ``cls`` from the parsed flags that ``add_dataclass_args`` added (the field's default where a flag
    was not given) and return it with the names of the fields that were given."""
    given = {f.name for f in fields(cls) if hasattr(args, f.name)}
    return cls(**{name: getattr(args, name) for name in given}), given


def _cmd_train(args: argparse.Namespace) -> None:
    from .config import TrainConfig
    from .training.loop import train
    cfg, given = dataclass_from_args(TrainConfig, args)
    train(cfg, given=given)


def _cmd_export(args: argparse.Namespace) -> None:
    from .weights.formats import export_run
    print(export_run(args.run_dir, args.out_dir, dtype=args.dtype, with_discriminator=args.with_discriminator))


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def photo_paths(items: list[str]) -> list[Path]:
    """Image files named on the command line, and those inside named folders (recursively), in sorted order."""
    out = []
    for item in map(Path, items):
        if item.is_dir():
            out += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif item.is_file():
            out.append(item)
        else:
            raise SystemExit(f"{item}: no such file or folder")
    return out


def choices_from_args(args: argparse.Namespace) -> dict[str, str]:
    """--hair/--gender/--age/--expression and every --set GROUP=VALUE that is not "keep"."""
    choices = {g: getattr(args, g) for g in ("hair", "gender", "age", "expression")}
    for item in args.set:
        group, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item}: write it as GROUP=VALUE, e.g. --set smiling=yes")
        choices[group.strip()] = value.strip()
    return {g: v for g, v in choices.items() if str(v).lower() != "keep"}


def _cmd_translate(args: argparse.Namespace) -> None:
    """Edit every photo (or draw its all-domains figure) into --out; the pipeline returns images, this writes them."""
    import torch
    from tqdm import tqdm

    from .edit.images import ImageError
    from .edit.pipeline import NoFaceError, StarGANPipeline
    from .weights.formats import CheckpointError

    photos, choices = photo_paths(args.photos), choices_from_args(args)
    try:
        pipe = StarGANPipeline.from_pretrained(args.model, args.revision)
    except CheckpointError as e:
        raise SystemExit(str(e)) from None
    print(pipe.status, file=sys.stderr)
    try:  # a wrong control or option is wrong for every photo: say so once, before starting
        pipe.schema.target(torch.full((1, pipe.schema.cls_dim), 0.5), choices, args.strength)
    except (KeyError, ValueError) as e:
        raise SystemExit(e.args[0]) from None
    out_dir, done = Path(args.out), 0
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in tqdm(photos, desc="translate", unit="photo", disable=len(photos) < 2):
        try:
            if args.all_domains:
                pipe.all_domains(path, whole_image=args.whole_image).save(out_dir / f"{path.stem}_domains.png")
            else:
                pipe(path, choices, args.strength, whole_image=args.whole_image).image.save(out_dir / path.name)
            done += 1
        except ImageError as e:  # one unreadable photo, or one without a face: say so and go on
            hint = " (Here the box is --whole-image.)" if isinstance(e, NoFaceError) else ""
            tqdm.write(f"{path}: {e}{hint}", file=sys.stderr)
    print(f"{done} of {len(photos)} photo(s) written to {out_dir}", file=sys.stderr)
    if done < len(photos):
        raise SystemExit(1)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluation.evaluate import evaluate_cli
    evaluate_cli(args)


def _cmd_evaluate_expression(args: argparse.Namespace) -> None:
    from .data.datasets import DataError
    from .evaluation.expression import evaluate_expression_cli
    try:
        evaluate_expression_cli(args)
    except DataError as e:
        raise SystemExit(str(e)) from None


def _cmd_train_classifier(args: argparse.Namespace) -> None:
    from .evaluation.evaluate import train_classifier_cli
    train_classifier_cli(args)


def _cmd_push(args: argparse.Namespace) -> None:
    from .weights.hub import push_to_hub
    print(push_to_hub(args.release, args.repo_id, private=args.private))


def _cmd_space(args: argparse.Namespace) -> None:
    from .weights.space import publish_space, space_files
    files = space_files()
    size = sum((Path(__file__).resolve().parents[1] / f).stat().st_size for f in files) / 2**20
    print(f"{len(files)} files, {size:.1f} MiB: " + (" ".join(files) if args.dry_run else "the app and its model"))
    if not args.dry_run:
        print(publish_space(args.repo_id, private=args.private))


def _cmd_pack(args: argparse.Namespace) -> None:
    from .data.pack import pack_celeba
    r = pack_celeba(args.celeba_dir, args.out, args.attrs, args.image_size, args.limit, args.quality, args.max_mib,
                    as_tar=args.tar, num_workers=args.num_workers, extra=args.extra)
    if r.capped:
        print(f"{r.images} of {r.available} training images fit in --max-mib {args.max_mib:g}; stopped there")
    if r.skipped:
        print(f"{r.skipped} unreadable image(s) left out")
    print(f"{r.images} images, {r.mib:.1f} MiB, {r.seconds:.1f} s -> {r.path}")


def _cmd_prepare(args: argparse.Namespace) -> None:
    from .edit.prepare import prepare_classes
    r = prepare_classes(args.raw_dir, args.out, args.name, args.group, args.heldout, args.seed, limit=args.limit)
    for line in r.skipped:
        print(f"skipped {line}", file=sys.stderr)
    print(f"{r.train} training and {r.test} held-out images ({len(r.test_people)} people: "
          f"{' '.join(r.test_people)}), {len(r.skipped)} skipped -> {r.folder}")


def build_parser() -> argparse.ArgumentParser:
    from .config import TrainConfig
    parser = argparse.ArgumentParser(prog="python -m stargan_core", description="StarGAN studio command line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a StarGAN on one or several datasets",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataclass_args(p, TrainConfig)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export", help="write a release (model.safetensors + config.json) from a training run")
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    p.add_argument("--with-discriminator", action=argparse.BooleanOptionalAction, default=True,
                   help="also ship D (its classifier estimates a face's own attributes)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("translate", help="edit the faces in photos")
    p.add_argument("photos", nargs="+", help="image files or folders")
    p.add_argument("--model", default=None, help="path, repo_id or repo_id:filename (default: $STARGAN_MODEL)")
    p.add_argument("--revision", default=None)
    p.add_argument("--hair", default="keep")
    p.add_argument("--gender", default="keep")
    p.add_argument("--age", default="keep")
    p.add_argument("--expression", default="keep")
    p.add_argument("--set", action="append", default=[], metavar="GROUP=VALUE", help="any other control")
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--all-domains", action="store_true", help="write the paper's figure for each photo")
    p.add_argument("--whole-image", action="store_true", help="treat each image as an aligned face crop")
    p.add_argument("--out", default="out")
    p.set_defaults(func=_cmd_translate)

    p = sub.add_parser("evaluate", help="target accuracy, preservation and reconstruction of a model")
    p.add_argument("model", help="release folder/file, official .ckpt or training checkpoint")
    p.add_argument("data", nargs="+", help="labelled folder(s): CelebA, RaFD or labels.csv; their held-out split")
    p.add_argument("--classifier", required=True, help="folder written by train-classifier")
    p.add_argument("--out", default="eval")
    p.add_argument("--max-images", type=int, default=None, help="per folder (default: the whole held-out split)")
    p.add_argument("--test-split", type=float, default=None,
                   help="held-out split as in train (default: the run's train_config.json, else 0)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("evaluate-expression", help="judge a joint model's smiling/neutral edits with a Smiling "
                       "classifier, on the held-out faces of CelebA and of a prepared folder")
    p.add_argument("model", help="release folder/file or training checkpoint")
    p.add_argument("data", nargs="+", help="CelebA folder(s) and/or folders written by prepare")
    p.add_argument("--classifier", required=True, help="train-classifier output with a Smiling attribute")
    p.add_argument("--max-images", type=int, default=None, help="per folder (default: its whole held-out split)")
    p.add_argument("--out", default=None, help="write expression.json here")
    p.set_defaults(func=_cmd_evaluate_expression)

    p = sub.add_parser("train-classifier", help="train the attribute classifier used by evaluate")
    p.add_argument("data")
    p.add_argument("--attrs", nargs="+", default=None)
    p.add_argument("--out", default="classifier")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--arch", choices=["small", "resnet18"], default="small",
                   help="small: a 0.4 M-parameter CNN that trains in CPU minutes; resnet18: torchvision, random init")
    p.add_argument("--test-split", type=float, default=0.0, help="held-out split, as train's --test-split")
    p.set_defaults(func=_cmd_train_classifier)

    p = sub.add_parser("push", help="upload a release to the Hugging Face Hub with a model card")
    p.add_argument("release")
    p.add_argument("repo_id")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("space", help="put the app on a Hugging Face Space (create it, upload what it runs)")
    p.add_argument("repo_id", help="owner/space-name; the token (HF_TOKEN or hf auth login) needs write access")
    p.add_argument("--private", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="only list the files it would send")
    p.set_defaults(func=_cmd_space)

    p = sub.add_parser("pack", help="CelebA's training images as small WebP crops in one folder or .tar (for a "
                       "machine that takes few MiB); train on it with --csv-dirs",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--celeba-dir", required=True, help="list_attr_celeba.txt + img_align_celeba/ (or images/)")
    p.add_argument("--attrs", nargs="+", default=list(TrainConfig().attrs), help="CelebA attributes, as train's")
    p.add_argument("--extra", nargs="+", default=[], help="more attributes as labels.csv columns only (e.g. Smiling "
                   "for --celeba-smiling-share)")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--image-size", type=int, default=128, help="the size the model trains at")
    p.add_argument("--limit", type=int, default=None, help="at most the first N training images")
    p.add_argument("--quality", type=int, default=80, help="WebP quality, 1-100")
    p.add_argument("--max-mib", type=float, default=60.0, help="stop adding images before the pack passes this")
    p.add_argument("--tar", action="store_true", help="write one FOLDER.tar.gz (files under FOLDER/) instead")
    p.add_argument("--num-workers", type=int, default=2, help="processes decoding and encoding")
    p.set_defaults(func=_cmd_pack)

    p = sub.add_parser("prepare", help="photos in one folder per class (e.g. the London set's neutral/ smiling/) -> "
                       "an aligned training folder (--csv-dirs), split by person",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("raw_dir", help="one sub-folder per class; the same file name in each = the same person")
    p.add_argument("--out", required=True, help="the folder to write (images/, labels.csv, schema.json)")
    p.add_argument("--name", default="london", help="the dataset's name in the model's schema")
    p.add_argument("--group", default="expression", help="the control the classes form")
    p.add_argument("--heldout", type=int, default=20, help="people held out for evaluation (both their photos)")
    p.add_argument("--seed", type=int, default=0, help="chooses the held-out people")
    p.add_argument("--limit", type=int, default=None, help="only the first N people (a quick look)")
    p.set_defaults(func=_cmd_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileExistsError, FileNotFoundError, FloatingPointError) as e:
        # bad data folders, checkpoints, choices, an existing run, a NaN stop: the message says what to do
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
