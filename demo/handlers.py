"""What the demo's events do, apart from the layout: open a photo once, edit it, explain the result.

Every function takes the loaded ``StarGANPipeline`` (shared by all visitors, only read) and the visitor's own
``Session`` (kept in ``gr.State``, never in a global). A photo is decoded and its faces are detected once, when it
arrives; each control change then only re-runs the generator on those faces. Every error a person can cause
becomes a one-sentence ``gr.Error``. Result images are written once, as PNG, into Gradio's cache, so the
before/after slider and the download button serve the same lossless file.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import torch
from gradio.utils import get_upload_folder
from PIL import Image

from stargan_core.checkpoint import CheckpointError
from stargan_core.domains import KEEP, DomainSchema, Group
from stargan_core.images import ImageError, load_image

NO_MODEL = "No model is loaded, so photos cannot be edited; the line at the top of the page says why."
NO_PHOTO = "Upload a photo, take one with the webcam or pick an example first."
NO_FACE = ("No face was found in this photo; try a clearer, front-facing one, or tick \"The whole photo is one "
           "face\" for a close-up portrait.")
NOT_SURE = "Not sure"  # the "what the face is now" choice that leaves the estimate alone


@dataclass
class Session:
    """One visitor's current photo: decoded once, faces found once, the latest edit kept for the classroom."""

    key: str  # the upload's path in Gradio's cache (named by content, so the same path means the same photo)
    whole_image: bool  # the visitor said the whole photo is one face (no detection)
    source: Image.Image | str  # what the pipeline edits: the decoded photo, or its path when its mode is not RGB
    faces: list  # faces.Face from pipeline.detect, re-used by every edit of this photo (one with whole_image)
    before: str  # the photo as a PNG in Gradio's cache, the left side of the before/after slider
    last: dict = field(default_factory=dict)  # the latest edit: "face" (a FaceEdit) and "choices"


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn the errors a person can cause into a one-sentence pop-up instead of a traceback."""
    try:
        yield
    except ImageError as e:  # not an image, too large, no face: images.py and pipeline.py word these for people
        raise gr.Error(str(e), print_exception=False) from None
    except CheckpointError as e:
        raise gr.Error(f"The model could not be used: {e}", print_exception=False) from None


def group_title(g: Group) -> str:
    """The label of a group's control: 'hair' -> 'Hair colour', 'eyeglasses' -> 'Eyeglasses'."""
    return {"hair": "Hair colour"}.get(g.name, g.name.replace("_", " ").capitalize())


def api_name(g: Group) -> str:
    """A Python-identifier name for a group's parameter in the API ('Mouth_Slightly_Open' -> 'mouth_slightly_open')."""
    return "".join(ch if ch.isalnum() else "_" for ch in g.name.lower())


def upload_path(payload: Mapping | str | None) -> str | None:
    """The file behind an image input's raw payload (events run with ``preprocess=False``, so that
    ``images.load_image``, not Gradio, decodes every upload); a webcam ``data:`` URL is written to the cache."""
    if not payload or isinstance(payload, str):
        return payload or None
    if payload.get("path"):
        return payload["path"]
    url = payload.get("url") or ""
    if url.startswith("data:") and "," in url:
        return save_bytes(base64.b64decode(url.split(",", 1)[1]), "webcam.bin")
    return None


def open_photo(pipeline, path: str | None, whole_image: bool = False) -> Session:
    """Decode an uploaded file safely and find its faces (once per photo)."""
    if pipeline is None:
        raise gr.Error(NO_MODEL, print_exception=False)
    if not path:
        raise gr.Error(NO_PHOTO, print_exception=False)
    with friendly_errors():
        image = load_image(path)  # upright RGB; too large or not an image -> ImageError
        found = pipeline.detect(image, whole_image)  # with each face's crop, estimate and x_ref, once
    if not (found or whole_image):
        raise gr.Error(NO_FACE, print_exception=False)
    with Image.open(path) as im:  # grayscale or transparent uploads: let the pipeline give the result that mode
        source = image if im.mode == "RGB" else path
    return Session(path, whole_image, source, found, save_png(image, "before"))


def open_event(pipeline, photo: Mapping | None, whole_image: bool = False) -> tuple:
    """A new photo (or the whole-photo box ticked): open it, then offer its faces, all ticked."""
    if photo is None:
        return None, gr.update(choices=[], value=[], visible=False)
    session = open_photo(pipeline, upload_path(photo), whole_image)
    names = face_names(session)
    return session, gr.update(choices=names, value=names, visible=len(names) > 1)


def edit_event(pipeline, photo: Mapping | None, whole_image: bool, session: Session | None,
               faces: list[str] | None, **values) -> tuple:
    """The ``edit`` endpoint: (session, (before, after), download, crops, verdict, info) for the page."""
    if photo is None:
        return None, None, None, [], None, ""
    path = upload_path(photo)
    if session is None or (session.key, session.whole_image) != (path, bool(whole_image)):
        session = open_photo(pipeline, path, bool(whole_image))  # an API call, or a photo not opened yet
    out = edit(pipeline, session, faces, values)
    return session, out["slider"], out["download"], out["crops"], out["verdict"], out["info"]


def face_names(session: Session) -> list[str]:
    return [f"Face {i + 1}" for i in range(len(session.faces) or 1)]


def picked_faces(session: Session, picked: list[str] | None) -> list[int] | None:
    """Indices of the ticked faces; nothing ticked (or a name that is not a face) means every face."""
    names = face_names(session)
    chosen = [names.index(p) for p in picked or [] if p in names]
    return chosen or None


def read_controls(schema: DomainSchema, values: Mapping[str, object]) -> tuple[dict, dict, dict]:
    """Control values keyed by API name (``hair``, ``hair_strength``, ``now_hair``, ...) -> the pipeline's
    ``choices``, ``strength`` and ``current`` (what a person says a face is now, for models without D)."""
    choices, strength, current = {}, {}, {}
    for g in schema.groups:
        name = api_name(g)
        choices[g.name] = values.get(name) or KEEP
        strength[g.name] = float(values.get(f"{name}_strength", 1.0) or 0.0)
        if values.get(f"now_{name}") not in (None, "", NOT_SURE):
            current[g.name] = values[f"now_{name}"]
    return choices, strength, current


def edit(pipeline, session: Session, picked: list[str] | None, values: Mapping[str, object]) -> dict:
    """Edit the session's photo with the controls' values; returns what the page shows."""
    choices, strength, current = read_controls(pipeline.config.schema, values)
    start = time.perf_counter()
    with friendly_errors():
        result = pipeline(session.source, choices, strength, current=current or None,
                          faces=session.faces or None, select=picked_faces(session, picked),
                          whole_image=session.whole_image)
    seconds = time.perf_counter() - start
    session.last = {"face": result.faces[0], "choices": choices}
    crops = [(save_png(img, f"face-{f.index + 1}-{when}"), f"Face {f.index + 1} {when}") for f in result.faces
             for img, when in ((f.before, "before"), (f.after, "after"))]  # as files: see save_bytes
    after = save_png(result.image, "stargan-edit")
    n = len(result.faces)
    return {"slider": (session.before, after), "download": after, "crops": crops,
            "verdict": discriminator_view(result.faces[0]) if pipeline.D is not None else None,
            "info": f"Edited {n} face{'s' * (n != 1)} in {seconds:.2f} s."}


def discriminator_view(face) -> dict[str, float] | None:
    """The face's attribute probabilities as gr.Label wants them (friendly names, highest first)."""
    return {pretty_label(name): float(p) for name, p in face.attributes.items()} or None


def pretty_label(label: str) -> str:
    """'Black_Hair' -> 'Black hair', 'happy' -> 'Happy'."""
    words = label.replace("_", " ")
    return words[:1].upper() + words[1:].lower()


def all_domains(pipeline, session: Session | None) -> str:
    """The paper's figure for the session's photo (input + one column per domain), as a PNG path."""
    if session is None:
        raise gr.Error(NO_PHOTO, print_exception=False)
    with friendly_errors():
        grid = pipeline.all_domains(session.source, faces=session.faces or None,
                                    whole_image=session.whole_image)
    return save_png(grid, "all-domains")


# ----- the classroom: the cycle of the paper ----------------------------------------------------------------
def _to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """PIL crop -> (1, 3, size, size) in [-1, 1], the generator's input."""
    img = image.convert("RGB").resize((size, size), Image.BICUBIC)
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size, size, 3)
    return x.permute(2, 0, 1).float().div(127.5).sub(1).unsqueeze(0)


def _to_image(x: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [-1, 1] -> PIL."""
    arr = x[0].clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(arr)


def cycle_event(pipeline, session: Session | None, is_open: bool = True) -> list:
    """The classroom's cycle images, when the classroom is open and there is an edit to explain."""
    if not (is_open and session is not None and session.last):
        return [gr.skip()] * 4
    *images, text = cycle(pipeline, session)
    scale = -(-256 // images[0].width)  # shown at least 256 px wide, each model pixel a sharp square
    return [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images] + [text]


@torch.inference_mode()
def cycle(pipeline, session: Session | None) -> tuple[Image.Image, Image.Image, Image.Image, str]:
    """x -> G(x, c_trg) -> G(G(x, c_trg), c_org) for the first edited face, with the reconstruction error.

    A joint model's cycle runs in one dataset's label space (the paper's): the first one the edit changed.
    """
    face = (session.last or {}).get("face") if session else None
    if face is None:
        raise gr.Error("Edit a photo first: the cycle is shown for the first face of your latest edit.",
                       print_exception=False)
    schema, size = pipeline.config.schema, pipeline.config.image_size
    dataset = (schema.changed_datasets(session.last["choices"]) or [schema.datasets[0].name])[0]
    c_org = torch.as_tensor(face.c_org).float().view(1, -1)[:, :schema.cls_dim]
    c_trg = torch.as_tensor(face.c_trg).float().view(1, -1)[:, :schema.cls_dim]
    x_real = _to_tensor(face.before, size)  # (1, 3, H, W)
    x_fake, x_rec = pipeline.cycle(x_real, c_org, c_trg, dataset)  # the generator as the pipeline runs it
    err = (x_real - x_rec).abs().mean().item() * 127.5  # mean absolute error in 0..255 pixel steps
    text = (f"**Reconstruction error** |x - G(G(x, c_trg), c_org)| = **{err:.1f} / 255** per pixel on average. "
            "Small means the generator kept who the person is while changing only the chosen attributes.")
    return _to_image(x_real), _to_image(x_fake), _to_image(x_rec), text


def save_png(image: Image.Image, name: str) -> str:
    """Write ``image`` once as PNG into Gradio's cache (a folder named by content) and return its path."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # lossless; the fastest zlib level (~0.2 s for 2 MP)
    return save_bytes(buf.getvalue(), f"{name}.png")


def save_bytes(data: bytes, filename: str) -> str:
    """Write ``data`` into Gradio's cache, in a folder named by its hash as Gradio does; returns the path.

    Concurrent requests often produce the same file (the same photo's "before"): it is written to a temporary
    name and renamed into place, so a file being served is never truncated by a second write.
    """
    folder = Path(get_upload_folder()) / hashlib.sha256(data).hexdigest()[:40]
    path = folder / filename
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{filename}.{os.getpid()}.{threading.get_ident()}"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return str(path)
