"""What the editor's events do, apart from the layout: open a photo once, edit it, show the paper's figure.

Every function takes the loaded ``StarGANPipeline`` (shared by all visitors, only read) and the visitor's own
``Session`` (kept in ``gr.State``, never in a global). A photo is decoded and its faces are detected once, when it
arrives; each control change then only re-runs the generator on those faces. Every error a person can cause
becomes a one-sentence ``gr.Error``, and so does every value a program can send to the ``edit`` endpoint that the
page itself never sends (``controls.py``, ``files.py``). The classroom's cycle is ``cycle.py``; the server's
memory, ``memory.py``.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import gradio as gr
from PIL import Image

from stargan_core.domains import pretty
from stargan_core.edit.images import ImageError, load_image
from stargan_core.edit.pipeline import NO_FACE
from stargan_core.weights.formats import CheckpointError

from .controls import api_name, read_controls
from .files import save_png, sweep_cache, upload_path
from .memory import release_memory

NO_MODEL = "No model is loaded, so photos cannot be edited; the line at the top of the page says why."
NO_PHOTO = "Upload a photo, take one with the webcam or pick an example first."
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


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn the errors a person can cause into a one-sentence pop-up instead of a traceback."""
    try:
        yield
    except ImageError as e:  # not an image, too large, no face: images.py and pipeline.py word these for people
        raise gr.Error(str(e), print_exception=False) from None
    except CheckpointError as e:
        raise gr.Error(f"The model could not be used: {e}", print_exception=False) from None


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


