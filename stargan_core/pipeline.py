"""The inference API: one call from a photo and a person's choices to the edited photo (and the paper's figure).

``StarGANPipeline(image, choices)`` detects and aligns every face, estimates each face's own labels ``c_org``,
builds ``c_trg`` from the choices (``keep`` groups keep ``c_org``; ``strength`` scales each change), translates all
faces in one batched forward per dataset, and pastes them back. In detail mode it also translates each face to
its own labels (``x_ref = G(x_real, c_org)``) and adds only ``x_fake - x_ref`` to the full-resolution photo, so
"no change" is exactly the photo and the face keeps its sharpness. Images in, images out: nothing is written.

``c_org`` comes from D's classifier when the model ships one (sigmoid per CelebA attribute, softmax within a
categorical group such as RaFD's expressions); without D every binary label starts at 0.5 and every exclusive or
categorical group is uniform. ``current=`` (what a person says a face is now) overrides either, per group.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .blend import crops_after, paste_back
from .config import ModelConfig
from .domains import DomainSchema
from .faces import Face, FaceDetector, align
from .images import ImageError, load_image, restore_mode
from .model import Discriminator, Generator
from .precision import autocast, best_dtype, classify, fit_threads, generate

Choices = Mapping[str, object]  # group name -> "keep" | an option | a bool (binary groups)


class NoFaceError(ImageError):
    """The photo has no face the detector is sure of."""


NO_FACE = "No face found in this photo. Try a clearer, front-facing photo, or tick 'whole image is a face'."


@dataclass
class FaceEdit:
    """One edited face: its crops at the model's size, what it was estimated to be, and what it was asked to be."""

    index: int  # position in the detected faces (left to right)
    face: Face
    before: Image.Image  # aligned input crop
    after: Image.Image  # the same crop after the edit (what was pasted back)
    attributes: dict[str, float]  # label -> probability, i.e. c_org by name
    c_org: torch.Tensor  # (cls_dim,)
    c_trg: torch.Tensor  # (cls_dim,)


@dataclass
class Result:
    image: Image.Image  # the edited photo: the input's size, and its mode when the input was a PIL image or file
    faces: list[FaceEdit]


class StarGANPipeline:
    """Edit the faces in photos with a StarGAN generator (and its discriminator, to estimate attributes)."""

    def __init__(self, G: Generator, config: ModelConfig, D: Discriminator | None = None,
                 detector: FaceDetector | None = None, dtype: torch.dtype | None = None) -> None:
        self.G, self.D, self.config, self.schema = G.eval(), D.eval() if D else None, config, config.schema
        self.detector, self.status = detector, ""
        self.dtype = dtype or best_dtype(next(G.parameters()).device)  # bf16 where the hardware has it
        fit_threads()  # no more threads than the container's CPU quota

    @classmethod
    def from_pretrained(cls, source: str | None = None, revision: str | None = None, **kwargs) -> StarGANPipeline:
        """A pipeline for ``hub.load_model(source, revision)``; ``.status`` says what was loaded, in a sentence."""
        from .hub import load_model
        loaded = load_model(source, revision)
        pipe = cls(loaded.G, loaded.config, loaded.D, **kwargs)
        pipe.status = loaded.status
        return pipe

    def detect(self, image: Image.Image | str | Path | bytes) -> list[Face]:
        """Every face in the photo, left to right (pass them back as ``faces=`` to edit again without detecting)."""
        self.detector = self.detector or FaceDetector()
        return self.detector.detect(load_image(image), crop_size=self.config.image_size)

    @torch.inference_mode()
    def __call__(self, image: Image.Image | str | Path | bytes, choices: Choices,
                 strength: float | Mapping[str, float] = 1.0, *, current: Choices | None = None,
                 faces: Sequence[Face] | None = None, select: Sequence[int] | None = None, detail: bool = True,
                 whole_image: bool = False) -> Result:
        """Edit the faces (all, or those at ``select``) towards ``choices``; see the module docstring."""
        rgb, faces, index = self._faces(image, faces, select, whole_image)
        x_real = align(rgb, faces, self.config.image_size)  # (N, 3, S, S) in [-1, 1]
        c_org = self.estimate(x_real, current)  # (N, cls_dim)
        c_trg, datasets = self.schema.target(c_org, choices, strength), self.schema.changed_datasets(choices)
        x_fake, x_ref = self._translate(x_real, c_org, c_trg, datasets, detail)
        out = paste_back(rgb, faces, x_fake, x_ref, detail=detail) if datasets else rgb  # nothing asked: the photo
        x_after = crops_after(x_real, x_fake, x_ref, faces) if detail else x_fake  # as pasted
        crops = zip(index, faces, _to_pil(x_real), _to_pil(x_after), c_org, c_trg, strict=True)
        edits = [FaceEdit(i, f, b, a, dict(zip(self.schema.labels, co.tolist(), strict=True)), co, ct)
                 for i, f, b, a, co, ct in crops]
        return Result(_restore(out, image), edits)

    def estimate(self, x_real: torch.Tensor, current: Choices | None = None) -> torch.Tensor:
        """Each face's own labels (N, cls_dim) as probabilities: D's classifier, or neutral; ``current`` wins."""
        c_org = torch.full((x_real.shape[0], self.schema.cls_dim), 0.5)
        for g in self.schema.groups:
            if g.kind != "binary":
                c_org[:, self.schema.group_slice(g.name)] = 1 / len(g.labels)
        if self.D is not None:
            logits = classify(self.D, x_real).float().cpu()  # out_cls (N, cls_dim)
            c_org = torch.sigmoid(logits)
            for g in (g for g in self.schema.groups if g.kind == "categorical"):
                c_org[:, self.schema.group_slice(g.name)] = logits[:, self.schema.group_slice(g.name)].softmax(1)
        return self.schema.target(c_org, current) if current else c_org

    def _faces(self, image, faces, select, whole_image) -> tuple[Image.Image, list[Face], list[int]]:
        rgb = load_image(image)
        if whole_image:
            faces = [FaceDetector.whole_image(rgb, self.config.image_size)]
        faces = list(self.detect(rgb) if faces is None else faces)
        if not faces:
            raise NoFaceError(NO_FACE)
        index = list(range(len(faces))) if select is None else list(select)
        if not index or any(not 0 <= i < len(faces) for i in index):
            raise ImageError(f"Choose faces between 1 and {len(faces)}: this photo has {len(faces)} face(s).")
        return rgb, [faces[i] for i in index], index

    def _translate(self, x_real: torch.Tensor, c_org: torch.Tensor, c_trg: torch.Tensor, datasets: list[str],
                   detail: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """x_fake and x_ref (N, 3, S, S): one forward per changed dataset (joint models), x_ref batched along."""
        if not datasets:  # nothing asked: nothing to run
            return x_real, x_real
        n, x = x_real.shape[0], torch.cat([x_real, x_real]) if detail else x_real
        for ds in datasets:  # a joint model conditions on one dataset's labels at a time (schema order)
            c = torch.cat([c_trg, c_org]) if detail else c_trg
            x = generate(self.G, x, self.schema.condition(c, ds), self.dtype).cpu()
        return (x[:n], x[n:]) if detail else (x, x_real)

    @torch.inference_mode()
    def cycle(self, x_real: torch.Tensor, c_org: torch.Tensor, c_trg: torch.Tensor,
              dataset: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The paper's cycle on crops (N, 3, S, S): x_fake = G(x, c_trg), x_rec = G(x_fake, c_org).

        Labels are (N, cls_dim); a joint model runs in one ``dataset``'s label space (default: the first).
        """
        dataset = dataset or self.schema.datasets[0].name
        x_fake = generate(self.G, x_real, self.schema.condition(c_trg, dataset), self.dtype)
        x_rec = generate(self.G, x_fake, self.schema.condition(c_org, dataset), self.dtype)
        return x_fake, x_rec

    @torch.inference_mode()
    def all_domains(self, image: Image.Image | str | Path | bytes, *, current: Choices | None = None,
                    faces: Sequence[Face] | None = None, select: Sequence[int] | None = None,
                    whole_image: bool = False) -> Image.Image:
        """The paper's figure for one photo: a row per face, the input crop then one column per domain."""
        rgb, faces, _ = self._faces(image, faces, select, whole_image)
        x_real = align(rgb, faces, self.config.image_size)
        device = next(self.G.parameters()).device
        with autocast(device, self.dtype):
            columns = translate_domains(self.G, x_real.to(device), self.estimate(x_real, current).to(device),
                                        self.schema)
        return _grid(["Input", *(name for name, _ in columns)], [x_real, *(x.float().cpu() for _, x in columns)])


@torch.inference_mode()
def translate_domains(G: Generator, x_real: torch.Tensor, c_org: torch.Tensor,
                      schema: DomainSchema) -> list[tuple[str, torch.Tensor]]:
    """The paper's figure as tensors: ``x_real`` (N, 3, H, W) translated to every domain, one batched forward.

    ``c_org`` is (N, cls_dim); returns [(domain name, x_fake (N, 3, H, W))] in schema order.
    """
    names, conds = [], []
    for ds in schema.datasets:
        for name, c_trg in schema.paper_targets(c_org, ds.name):
            names.append(name)
            conds.append(schema.condition(c_trg, ds.name))  # (N, c_dim)
    x_fake = G(x_real.repeat(len(conds), 1, 1, 1), torch.cat(conds))  # (D*N, 3, H, W)
    return list(zip(names, x_fake.chunk(len(conds)), strict=True))


def _to_pil(x: torch.Tensor) -> list[Image.Image]:
    """(N, 3, H, W) in [-1, 1] -> N RGB images."""
    a = ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(im) for im in a]


def _restore(rgb: Image.Image, image: object) -> Image.Image:
    """The result in the upload's mode (L stays L, alpha comes back) when the upload's mode is known."""
    if isinstance(image, str | Path | bytes | bytearray):  # reads the header only, unless the mode is not RGB
        with Image.open(io.BytesIO(image) if isinstance(image, bytes | bytearray) else image) as like:
            return _restore(rgb, like)
    if not isinstance(image, Image.Image) or (image.mode == "RGB" and "transparency" not in image.info):
        return rgb
    return restore_mode(rgb, image)


def _grid(names: list[str], columns: list[torch.Tensor], label_h: int = 14) -> Image.Image:
    """Columns of crops (each (N, 3, S, S)) side by side, one row per face, under a row of column names."""
    rows = np.concatenate([np.concatenate([np.asarray(im) for im in _to_pil(c)], 0) for c in columns], 1)
    grid = Image.new("RGB", (rows.shape[1], rows.shape[0] + label_h), "white")
    grid.paste(Image.fromarray(rows), (0, label_h))
    draw, s = ImageDraw.Draw(grid), columns[0].shape[-1]
    for j, name in enumerate(names):
        draw.text((j * s + 3, 1), name, fill="black")
    return grid
