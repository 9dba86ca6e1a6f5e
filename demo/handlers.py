"""What the demo's events do, apart from the layout: open a photo once, edit it, explain the result.

Every function takes the loaded ``StarGANPipeline`` (shared by all visitors, only read) and the visitor's own
``Session`` (kept in ``gr.State``, never in a global). A photo is decoded and its faces are detected once, when it
arrives; each control change then only re-runs the generator on those faces. Every error a person can cause
becomes a one-sentence ``gr.Error``, and so does every value a program can send to the ``edit`` endpoint that the
page itself never sends (a colour that does not exist, a strength of 100, a path on the server). Result images are
written once, as PNG in a mode browsers show, into Gradio's cache, so the before/after slider and the download
button serve the same lossless file; Gradio's ``delete_cache`` (see ``demo/ui.py``) removes them when they expire.
"""
from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import hashlib
import io
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import torch
from gradio.utils import get_upload_folder, is_in_or_equal
from PIL import Image

from stargan_core.domains import KEEP, DomainSchema, Group, pretty
from stargan_core.edit.images import ImageError, browser_ready, load_image, to_pil, to_tensor
from stargan_core.edit.pipeline import NO_FACE
from stargan_core.weights.formats import CheckpointError

NO_MODEL = "No model is loaded, so photos cannot be edited; the line at the top of the page says why."
NO_PHOTO = "Upload a photo, take one with the webcam or pick an example first."
NOT_SURE = "Not sure"  # the "what the face is now" choice that leaves the estimate alone
LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if hasattr(ctypes.CDLL(None), "malloc_trim") else None  # glibc
MAX_STRENGTH = 1.5  # the strength sliders' range is 0..MAX_STRENGTH
BAD_PHOTO = "The photo must be an uploaded image file (from Python: photo=handle_file(\"photo.jpg\"))."
NOT_UPLOADED = "This photo is not a file uploaded to this app; send the image itself, with handle_file in Python."
EXPIRED = "This photo is no longer on the server (uploads expire after a while); upload it again."
BAD_WEBCAM = "The webcam picture could not be read; take it again or upload a photo."
BAD_FACES = "The faces to edit must be a list of face names such as [\"Face 2\"], or empty for every face."
BAD_WHOLE = "whole_image must be true or false."


@dataclass
class Session:
    """One visitor's current photo: decoded once, faces found once, the latest edit kept for the classroom."""

    key: str  # the upload's path in Gradio's cache (named by content, so the same path means the same photo)
    whole_image: bool  # the visitor said the whole photo is one face (no detection)
    source: Image.Image | str  # what the pipeline edits: the decoded photo, or its path when its mode is not RGB
    faces: list  # faces.Face from pipeline.detect, re-used by every edit of this photo (one with whole_image)
    before: str  # the photo as a PNG in Gradio's cache, the left side of the before/after slider
    last: dict = field(default_factory=dict)  # the latest edit: "face" (a FaceEdit) and "choices"


def bound_memory(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (by default up to 8 per core, one per thread that ever ran an edit, each keeping
    the freed images and tensors of its last request) so the server's memory stays flat under many users."""
    if LIBC is not None:
        LIBC.mallopt(-8, arenas)  # M_ARENA_MAX


def release_memory() -> None:
    """Give the freed pages of a finished request back to the system (glibc keeps them otherwise)."""
    if LIBC is not None:
        LIBC.malloc_trim(0)


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


def upload_path(payload: object) -> str | None:
    """The file behind an image input's raw payload (events run with ``preprocess=False``, so that
    ``images.load_image``, not Gradio, decodes every upload); a webcam ``data:`` URL is written to the cache.

    Raw payloads skip Gradio's own checks, so this is where a program's bad values are refused: anything that is
    not an upload, and any path outside Gradio's upload folder (no file on the server is read for a visitor).
    """
    if payload is None or payload == "":
        return None
    if isinstance(payload, Mapping) and not payload.get("path"):
        return _webcam_file(str(payload.get("url") or ""))
    path = payload.get("path") if isinstance(payload, Mapping) else payload
    if not isinstance(path, str):
        raise gr.Error(BAD_PHOTO, print_exception=False)
    if not is_in_or_equal(path, get_upload_folder()):
        raise gr.Error(NOT_UPLOADED, print_exception=False)
    if not os.path.isfile(path):
        raise gr.Error(EXPIRED, print_exception=False)
    return path


def _webcam_file(url: str) -> str:
    """A webcam ``data:image/...;base64,...`` URL, decoded into Gradio's cache; its path."""
    if not (url.startswith("data:") and "," in url):
        raise gr.Error(BAD_PHOTO, print_exception=False)
    try:
        data = base64.b64decode(url.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise gr.Error(BAD_WEBCAM, print_exception=False) from None
    return save_bytes(data, "webcam.bin")


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


def pick(shelf, label: object) -> object:
    """The pipeline of the model called ``label`` (None: the page's default), or a one-sentence error."""
    if shelf is None or not shelf.options:
        raise gr.Error(NO_MODEL, print_exception=False)
    if label is not None and not isinstance(label, str):
        raise gr.Error(f"model must be one of: {', '.join(shelf.options)}.", print_exception=False)
    with friendly_errors():
        return shelf.get(label)[0]


def switch_model(shelf, page_controls: list, label: str, previous: str | None) -> list:
    """The picker moved: load the model (or refuse it and go back), say what it is, show the controls it has."""
    try:
        pipeline, status = shelf.get(label)
    except CheckpointError as e:
        gr.Warning(str(e))
        label = previous or shelf.default
        pipeline, status = shelf.get(label)
    names = {g.name for g in pipeline.config.schema.groups}
    shown = [gr.update(visible=True) if g.name in names else gr.update(visible=False, value=hidden)
             for g, *cs in page_controls for hidden in ("Keep", 1.0)[:len(cs)]]
    return [label, label, f"**Model:** {status}", gr.update(visible=not any(
        g.kind == "categorical" for g in pipeline.config.schema.groups)), gr.update(visible=pipeline.D is not None),
        *shown]


def open_event(shelf, photo: Mapping | None, whole_image: bool = False, model: str | None = None) -> tuple:
    """A new photo (or the whole-photo box ticked): open it, then offer its faces, all ticked."""
    if photo is None:
        return None, gr.update(choices=[], value=[], visible=False)
    session = open_photo(pick(shelf, model), upload_path(photo), whole_image)
    names = face_names(session)
    return session, gr.update(choices=names, value=names, visible=len(names) > 1)


def edit_event(shelf, photo: Mapping | None, whole_image: bool, session: Session | None,
               faces: list[str] | None, expiry: tuple[int, int] | None = None, model: str | None = None,
               quiet: bool = False, **values) -> tuple:
    """The ``edit`` endpoint: (session, (before, after), download, crops, verdict, info) for the page.
    ``quiet``: an edit the page starts by itself (a new model picked) does nothing until there is a photo."""
    if expiry:
        sweep_cache(*expiry)
    pipeline = pick(shelf, model)
    whole_image = False if whole_image is None else whole_image
    if not isinstance(whole_image, bool):
        raise gr.Error(BAD_WHOLE, print_exception=False)
    path = upload_path(photo)
    if quiet and path is None:
        return (gr.skip(),) * 6
    if session is None or (session.key, session.whole_image) != (path, whole_image):
        session = open_photo(pipeline, path, whole_image)  # an API call, or a photo not opened yet
    out = edit(pipeline, session, faces, values)
    return session, out["slider"], out["download"], out["crops"], out["verdict"], out["info"]


def face_names(session: Session) -> list[str]:
    return [f"Face {i + 1}" for i in range(len(session.faces) or 1)]


def picked_faces(session: Session, picked: object) -> list[int] | None:
    """Indices of the ticked faces; nothing ticked means every face. A name that is not a face is refused."""
    if picked is None:
        return None
    if not isinstance(picked, list | tuple) or not all(isinstance(p, str) for p in picked):
        raise gr.Error(BAD_FACES, print_exception=False)
    names = face_names(session)
    if any(p not in names for p in picked):
        n = len(names)
        raise gr.Error(f"This photo has {n} face{'s' * (n != 1)}; pick faces from \"Face 1\" to \"Face {n}\" "
                       "or none for every face.", print_exception=False)
    return [names.index(p) for p in picked] or None


def read_controls(schema: DomainSchema, values: Mapping[str, object]) -> tuple[dict, dict, dict]:
    """Control values keyed by API name (``hair``, ``hair_strength``, ``now_hair``, ...) -> the pipeline's
    ``choices``, ``strength`` and ``current`` (what a person says a face is now, for models without D).

    A value the page cannot send (an unknown option, a strength that is not a number from 0 to 1.5) is refused
    with a sentence that says what is allowed."""
    choices, strength, current = {}, {}, {}
    for g in schema.groups:
        name, title = api_name(g), group_title(g)
        choices[g.name] = _option(values.get(name), ["Keep", *g.options()], title) or KEEP
        strength[g.name] = _strength(values.get(f"{name}_strength"), title)
        now = _option(values.get(f"now_{name}"), [NOT_SURE, *g.options()], f"What the face is now ({title})")
        if now not in (None, NOT_SURE):
            current[g.name] = now
    return choices, strength, current


def _option(value: object, allowed: list[str], title: str) -> str | None:
    """``value`` if it is one of ``allowed`` (any letter case), None when not given; else a one-sentence error."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value.lower() not in {a.lower() for a in allowed}:
        raise gr.Error(f"{title} must be one of {', '.join(allowed)}.", print_exception=False)
    return value


def _strength(value: object, title: str) -> float:
    """A strength from 0 to MAX_STRENGTH (1.0 when not given); anything else is a one-sentence error."""
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_STRENGTH \
            or math.isnan(value):
        raise gr.Error(f"{title} strength must be a number from 0 to {MAX_STRENGTH}.", print_exception=False)
    return float(value)


def edit(pipeline, session: Session, picked: list[str] | None, values: Mapping[str, object]) -> dict:
    """Edit the session's photo with the controls' values; returns what the page shows."""
    schema = pipeline.config.schema
    lacking = [k for k, v in values.items() if k not in {api_name(g) for g in schema.groups} and k.isidentifier()
               and not k.endswith("_strength") and not k.startswith("now_") and v not in (None, "", "Keep", "keep")]
    if lacking:
        raise gr.Error(f"This model has no {', '.join(lacking)} control; it has: "
                       f"{', '.join(api_name(g) for g in schema.groups)}.", print_exception=False)
    choices, strength, current = read_controls(schema, values)
    start = time.perf_counter()
    with friendly_errors():
        result = pipeline(session.source, choices, strength, current=current or None,
                          faces=session.faces or None, select=picked_faces(session, picked),
                          whole_image=session.whole_image)
    seconds = time.perf_counter() - start
    session.last = {"face": result.faces[0], "choices": choices}
    if not os.path.isfile(session.before):  # expired from the cache while the visitor kept editing
        session.before = save_png(load_image(session.source), "before")
    crops = [(save_png(img, f"face-{f.index + 1}-{when}"), f"Face {f.index + 1} {when}") for f in result.faces
             for img, when in ((f.before, "before"), (f.after, "after"))]  # as files: see save_bytes
    after = save_png(result.image, "stargan-edit")
    n, verdict = len(result.faces), discriminator_view(result.faces[0]) if pipeline.D is not None else None
    del result  # the edited photo at full size: freed now, and its pages handed back
    release_memory()
    return {"slider": (session.before, after), "download": after, "crops": crops, "verdict": verdict,
            "info": f"Edited {n} face{'s' * (n != 1)} in {seconds:.2f} s."}


def discriminator_view(face) -> dict[str, float] | None:
    """The face's attribute probabilities as gr.Label wants them (friendly names, highest first)."""
    return {pretty(name, alone=True): float(p) for name, p in face.attributes.items()} or None


def all_domains(pipeline, session: Session | None) -> str:
    """The paper's figure for the session's photo (input + one column per domain), as a PNG path."""
    if session is None:
        raise gr.Error(NO_PHOTO, print_exception=False)
    with friendly_errors():
        grid = pipeline.all_domains(session.source, faces=session.faces or None,
                                    whole_image=session.whole_image)
    return save_png(grid, "all-domains")


def all_domains_event(shelf, session: Session | None, model: str | None = None) -> str:
    return all_domains(pick(shelf, model), session)


# ----- the classroom: the cycle of the paper ----------------------------------------------------------------
def cycle_event(shelf, session: Session | None, is_open: bool = True, model: str | None = None) -> list:
    """The classroom's cycle images, when the classroom is open and there is an edit to explain."""
    if not (is_open and session is not None and session.last):
        return [gr.skip()] * 4
    *images, text = cycle(pick(shelf, model), session)
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
    x_real = to_tensor(face.before.resize((size, size), Image.BICUBIC))[None] / 127.5 - 1  # (1, 3, S, S) in [-1, 1]
    x_fake, x_rec = pipeline.cycle(x_real, c_org, c_trg, dataset)  # the generator as the pipeline runs it
    err = (x_real - x_rec).abs().mean().item() * 127.5  # mean absolute error in 0..255 pixel steps
    text = (f"**Reconstruction error** |x - G(G(x, c_trg), c_org)| = **{err:.1f} / 255** per pixel on average. "
            "Small means the generator kept who the person is while changing only the chosen attributes.")
    return (*to_pil(torch.cat([x_real, x_fake, x_rec])), text)


def save_png(image: Image.Image, name: str) -> str:
    """Write ``image`` once as PNG into Gradio's cache (a folder named by content) and return its path."""
    buf = io.BytesIO()
    browser_ready(image).save(buf, format="PNG", compress_level=1)  # lossless; the fastest zlib level (~0.2 s for 2 MP)
    return save_bytes(buf.getvalue(), f"{name}.png")


def save_bytes(data: bytes, filename: str) -> str:
    """Write ``data`` into Gradio's cache, in a folder named by its hash as Gradio does; returns the path.

    Concurrent requests often produce the same file (the same photo's "before"): it is written to a temporary
    name and renamed into place, so a file being served is never truncated by a second write.
    """
    folder = Path(get_upload_folder()) / hashlib.sha256(data).hexdigest()[:40]
    path = folder / filename
    if path.is_file():  # handed out again: Gradio's delete_cache ages files by ctime, so restart the clock
        os.utime(path)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{filename}.{os.getpid()}.{threading.get_ident()}"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return str(path)


_SWEEP = {"lock": threading.Lock(), "last": 0.0}


def sweep_cache(every: float, age: float) -> None:
    """At most once per ``every`` seconds, delete files older than ``age`` seconds from Gradio's cache folder.

    A backstop for Gradio's ``delete_cache``, whose scheduled task iterates its set of files while requests add to
    it: the first "set changed size during iteration" ends the task for good and the cache grows without bound.
    """
    now = time.time()
    if now - _SWEEP["last"] < every or not _SWEEP["lock"].acquire(blocking=False):
        return
    try:
        _SWEEP["last"] = now
        for folder in Path(get_upload_folder()).glob("*"):
            for f in (f for f in folder.rglob("*") if f.is_file()):
                if now - f.stat().st_ctime > age:
                    f.unlink(missing_ok=True)
    except OSError:  # a file taken by a concurrent sweep or by Gradio's own: the next sweep tries again
        pass
    finally:
        _SWEEP["lock"].release()
