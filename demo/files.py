"""Files in Gradio's cache: uploads in (checked), results out (written once, as PNG), and the cache swept.

Events run with ``preprocess=False`` so that ``images.load_image``, not Gradio, decodes every upload; raw payloads
skip Gradio's own checks, so ``upload_path`` refuses what is not an upload. Result images are written once, as PNG
in a mode browsers show, so the before/after slider and the download button serve the same lossless file; Gradio's
``delete_cache`` (see ``demo/ui.py``) and ``sweep_cache`` remove them when they expire.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder, is_in_or_equal
from PIL import Image

from stargan_core.edit.images import browser_ready

BAD_PHOTO = "The photo must be an uploaded image file (from Python: photo=handle_file(\"photo.jpg\"))."
NOT_UPLOADED = "This photo is not a file uploaded to this app; send the image itself, with handle_file in Python."
EXPIRED = "This photo is no longer on the server (uploads expire after a while); upload it again."
BAD_WEBCAM = "The webcam picture could not be read; take it again or upload a photo."


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
