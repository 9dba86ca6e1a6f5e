"""The inference API: one call from a photo and a person's choices to the edited photo (and the paper's figure).

``StarGANPipeline(image, choices)`` detects and aligns every face, estimates each face's own labels ``c_org``,
builds ``c_trg`` from the choices (``keep`` groups keep ``c_org``; ``strength`` scales each change), translates all
faces in one batched forward per dataset, and pastes them back. In detail mode it also translates each face to
its own labels (``x_ref = G(x_real, c_org)``) and adds only ``x_fake - x_ref`` to the full-resolution photo, so
"no change" is exactly the photo and the face keeps its sharpness. Images in, images out: nothing is written.

What does not depend on the choices is computed once per face and kept in ``Face.memo``: the aligned crop, D's
estimate and x_ref (per label vector and datasets), computed by ``detect`` when the photo arrives. Passing the
faces back (``faces=``) makes a re-edit cost one generator forward per face. G runs on the path that
``inference.choose_path`` measured fastest at load time (``path=``), within 2/255 of fp32.

``c_org`` comes from D's classifier when the model ships one (sigmoid per CelebA attribute, softmax within a
categorical group such as RaFD's expressions); without D every binary label starts at 0.5 and every exclusive or
categorical group is uniform. ``current=`` (what a person says a face is now) overrides either, per group.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..config import ModelConfig
from ..nets.model import Discriminator, Generator
from ..nets.translate import translate_domains
from .blend import crops_after, paste_back
from .classify import classify
from .faces import FaceDetector
from .geometry import Face, align
from .images import ImageError, grid, load_image, restore_mode, to_pil
from .inference import Choice, choose_path
from .threads import fit_threads

Choices = Mapping[str, object]  # group name -> "keep" | an option | a bool (binary groups)


class NoFaceError(ImageError):
    """The photo has no face the detector is sure of."""


# One sentence, in the words of the page's checkbox (the pipeline's whole_image, the command line's --whole-image).
NO_FACE = ("No face was found in this photo; try a clearer, front-facing one, or tick \"The whole photo is one "
           "face\" for a close-up portrait.")


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
                 detector: FaceDetector | None = None, path: str = "auto") -> None:
        self.G, self.D, self.config, self.schema = G.eval(), D.eval() if D else None, config, config.schema
        self.detector, self.status = detector, ""
        fit_threads()  # no more threads than the container's CPU quota (before paths size their thread pools)
        names = None if path == "auto" else ["fp32", path]  # a named path is still checked against fp32
        self.path: Choice = choose_path(G, config.image_size, names, budget_s=2.0 if path == "auto" else 60)
        self.generate = self.path.run  # (x, c) -> x_fake on the CPU; every G forward of the pipeline goes here
        self._token = object()  # names this pipeline's entries in Face.memo (faces may meet another pipeline)

    @classmethod
    def from_pretrained(cls, source: str | None = None, revision: str | None = None, **kwargs) -> StarGANPipeline:
        """A pipeline for ``hub.load_model(source, revision)``; ``.status`` says what was loaded, in a sentence."""
        from ..weights.hub import load_model
        loaded = load_model(source, revision)
        pipe = cls(loaded.G, loaded.config, loaded.D, **kwargs)
        pipe.status = loaded.status
        return pipe

    def detect(self, image: Image.Image | str | Path | bytes, whole_image: bool = False) -> list[Face]:
        """Every face in the photo, left to right, with what edits need of it computed once (crop, D's estimate,
        x_ref); pass them back as ``faces=`` to edit again without detecting. ``whole_image``: the photo is a face."""
        rgb = load_image(image)
        if whole_image:
            faces = [FaceDetector.whole_image(rgb, self.config.image_size)]
        else:
            self.detector = self.detector or FaceDetector()
            faces = self.detector.detect(rgb, crop_size=self.config.image_size)
        if faces:
            x_real, c_org = self._prepare(rgb, faces)
            for ds in self.schema.datasets:  # x_ref for an edit of one dataset's labels, the usual case
                self._reference(x_real, c_org, [ds.name], faces)
        return faces

    @torch.inference_mode()
    def __call__(self, image: Image.Image | str | Path | bytes, choices: Choices,
                 strength: float | Mapping[str, float] = 1.0, *, current: Choices | None = None,
                 faces: Sequence[Face] | None = None, select: Sequence[int] | None = None, detail: bool = True,
                 whole_image: bool = False) -> Result:
        """Edit the faces (all, or those at ``select``) towards ``choices``; see the module docstring."""
        rgb, faces, index = self._faces(image, faces, select, whole_image)
        x_real, c_est = self._prepare(rgb, faces)  # (N, 3, S, S) in [-1, 1], (N, cls_dim): kept in Face.memo
        c_org = self.schema.target(c_est, current) if current else c_est
        c_trg, datasets = self.schema.target(c_org, choices, strength), self.schema.changed_datasets(choices)
        x_fake, x_ref = self._translate(x_real, c_org, c_trg, datasets, detail, faces)
        changed = self.schema.changed_groups(choices)
        hair = [g.is_hair_colour for g in changed]
        # blend.region_mask: a hair colour through the hair region, anything else through the head as shade; both
        # at once (blond and old): the hair region takes the hair colour, the rest of the head the shade
        regions = ["hair"] if hair and all(hair) else ["hair", "rest"] if any(hair) and detail else ["head"]
        out, x_after = rgb, x_real if detail else x_fake
        for region in regions if datasets else []:
            out = paste_back(out, faces, x_fake, x_ref, detail=detail, region=region)
            x_after = x_after + crops_after(x_real, x_fake, x_ref, faces, region) - x_real if detail else x_fake
        crops = zip(index, faces, to_pil(x_real), to_pil(x_after), c_org, c_trg, strict=True)
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

    def _prepare(self, rgb: Image.Image, faces: list[Face]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each face's aligned crop (N, 3, S, S) and D's estimate (N, cls_dim), computed once and kept in memo."""
        memos = [self._memo(f) for f in faces]
        new = [i for i, m in enumerate(memos) if "x_real" not in m]
        if new:
            x_new = align(rgb, [faces[i] for i in new], self.config.image_size)
            for i, x, c in zip(new, x_new, self.estimate(x_new), strict=True):
                memos[i]["x_real"], memos[i]["c_est"] = x.clone(), c.clone()
        return torch.stack([m["x_real"] for m in memos]), torch.stack([m["c_est"] for m in memos])

    def _memo(self, face: Face) -> dict:
        """This pipeline's results for ``face``: "x_real", "c_est", "x_ref" ({(datasets, c_org bytes): x_ref})."""
        return face.memo.setdefault(self._token, {})

    def _reference(self, x_real: torch.Tensor, c_org: torch.Tensor, datasets: list[str],
                   faces: list[Face], x_more: torch.Tensor | None = None, c_more: torch.Tensor | None = None):
        """x_ref (N, 3, S, S): each face translated to its own labels c_org, from memo or computed now.

        With ``x_more`` (M, 3, S, S) and ``c_more`` (M, cls_dim) (x_real and c_trg), their translation rides in
        the same batched forward and is returned too: (x_ref, x_fake)."""
        keys = [(tuple(datasets), c.numpy().tobytes()) for c in c_org]
        refs = [self._memo(f).setdefault("x_ref", {}) for f in faces]
        need = [i for i, (r, k) in enumerate(zip(refs, keys, strict=True)) if k not in r]
        x_more = x_real[:0] if x_more is None else x_more
        x = torch.cat([x_more, x_real[need]])  # (M + len(need), 3, S, S)
        c = torch.cat([c_org[:0] if c_more is None else c_more, c_org[need]])
        for ds in datasets if len(x) else []:  # a joint model: one dataset's labels at a time (schema order)
            x = self.generate(x, self.schema.condition(c, ds))
        for j, i in enumerate(need):
            if len(refs[i]) >= 8:  # keep x_ref for a few label vectors per face (``current`` changes them)
                del refs[i][next(iter(refs[i]))]
            refs[i][keys[i]] = x[len(x_more) + j].clone()  # not a view that would keep the whole batch alive
        x_ref = torch.stack([r[k] for r, k in zip(refs, keys, strict=True)])
        return x_ref if c_more is None else (x_ref, x[:len(x_more)])

    def _faces(self, image, faces, select, whole_image) -> tuple[Image.Image, list[Face], list[int]]:
        rgb = load_image(image)
        if whole_image and faces is None:
            faces = [FaceDetector.whole_image(rgb, self.config.image_size)]
        faces = list(self.detect(rgb) if faces is None else faces)
        if not faces:
            raise NoFaceError(NO_FACE)
        index = list(range(len(faces))) if select is None else list(select)
        if not index or any(not 0 <= i < len(faces) for i in index):
            raise ImageError(f"Choose faces between 1 and {len(faces)}: this photo has {len(faces)} face(s).")
        return rgb, [faces[i] for i in index], index

    def _translate(self, x_real: torch.Tensor, c_org: torch.Tensor, c_trg: torch.Tensor, datasets: list[str],
                   detail: bool, faces: list[Face]) -> tuple[torch.Tensor, torch.Tensor]:
        """x_fake and x_ref (N, 3, S, S): one forward per changed dataset (joint models); x_ref from the faces'
        memo, or batched along with x_fake when a face has none yet for these labels."""
        if not datasets:  # nothing asked: nothing to run
            return x_real, x_real
        if detail:
            x_ref, x_fake = self._reference(x_real, c_org, datasets, faces, x_real, c_trg)
            return x_fake, x_ref
        x = x_real
        for ds in datasets:
            x = self.generate(x, self.schema.condition(c_trg, ds))
        return x, x_real

    @torch.inference_mode()
    def cycle(self, x_real: torch.Tensor, c_org: torch.Tensor, c_trg: torch.Tensor,
              dataset: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The paper's cycle on crops (N, 3, S, S): x_fake = G(x, c_trg), x_rec = G(x_fake, c_org).

        Labels are (N, cls_dim); a joint model runs in one ``dataset``'s label space (default: the first).
        """
        dataset = dataset or self.schema.datasets[0].name
        x_fake = self.generate(x_real, self.schema.condition(c_trg, dataset))
        x_rec = self.generate(x_fake, self.schema.condition(c_org, dataset))
        return x_fake, x_rec

    @torch.inference_mode()
    def all_domains(self, image: Image.Image | str | Path | bytes, *, current: Choices | None = None,
                    faces: Sequence[Face] | None = None, select: Sequence[int] | None = None,
                    whole_image: bool = False) -> Image.Image:
        """The paper's figure for one photo: a row per face, the input crop then one column per domain."""
        rgb, faces, _ = self._faces(image, faces, select, whole_image)
        x_real, c_est = self._prepare(rgb, faces)
        c_org = self.schema.target(c_est, current) if current else c_est
        columns = translate_domains(self.generate, x_real, c_org, self.schema)
        return grid(["Input", *(name for name, _ in columns)], [x_real, *(x.float().cpu() for _, x in columns)])


def _restore(rgb: Image.Image, image: object) -> Image.Image:
    """The result in the upload's mode (L stays L, alpha comes back) when the upload's mode is known."""
    if isinstance(image, str | Path | bytes | bytearray):  # reads the header only, unless the mode is not RGB
        with Image.open(io.BytesIO(image) if isinstance(image, bytes | bytearray) else image) as like:
            return _restore(rgb, like)
    if not isinstance(image, Image.Image) or (image.mode == "RGB" and "transparency" not in image.info):
        return rgb
    return restore_mode(rgb, image)
