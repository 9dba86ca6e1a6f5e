"""The webcam mirror tab: every face in each webcam frame edited live with the tab's controls.

The webcam streams frames to ``.stream``; Gradio keeps only the newest frame while one is being edited, so frames
that arrive faster than the model works are dropped, never queued. Each visitor's ``MirrorSession`` (in
``gr.State``) holds a ``FaceTracker``: MTCNN runs every few frames and the faces are followed in between, so the
frame rate is bounded by the generator. The controls are read at every frame, so changing them changes the live
edit without restarting the stream; a stream ends by itself after ``TIME_LIMIT`` seconds.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial

import gradio as gr
from PIL import Image

from stargan_core.domains import KEEP
from stargan_core.edit.tracking import FaceTracker

from . import handlers

TIME_LIMIT = 60  # s: one visitor cannot hold a free Space's CPU for longer
STREAM_EVERY = 0.1  # s between frames the browser sends (at most 10 fps asked; the model sets the real rate)
DETECT_EVERY = 10  # frames between two face detections


@dataclass
class MirrorSession:
    """One visitor's stream: the face tracker and when the last frames were shown (for the frame rate)."""

    tracker: FaceTracker
    shown: deque = field(default_factory=lambda: deque(maxlen=20))


def mirror_frame(shelf, frame: Image.Image | None, session: MirrorSession | None, group: str, choice: str,
                 strength: float, model: str | None = None) -> tuple[Image.Image | None, str, MirrorSession | None]:
    """Edit every face of one webcam frame; returns the mirror image, the frame-rate line and the session."""
    pipeline = handlers.pick(shelf, model)
    if frame is None:
        return None, "Start the webcam to see the mirror.", session
    if session is None:
        session = MirrorSession(FaceTracker(partial(pipeline.detect), every=DETECT_EVERY))
    t0 = time.perf_counter()
    frame = frame.convert("RGB")
    faces = session.tracker(frame)
    out, has = frame, group in {g.name for g in pipeline.config.schema.groups}
    if faces and choice and choice != KEEP and has:
        out = pipeline(frame, {group: choice}, {group: float(strength)}, faces=faces, detail=False).image
    session.shown.append(time.perf_counter())
    seconds = len(session.shown) > 1 and (session.shown[-1] - session.shown[0]) / (len(session.shown) - 1)
    fps = f"{1 / seconds:.1f} frames per second" if seconds else "measuring the frame rate..."
    info = (f"**{fps}** · {len(faces)} face(s) · {frame.width}x{frame.height} · this frame "
            f"{1000 * (time.perf_counter() - t0):.0f} ms · faces detected {session.tracker.detections} times"
            + ("" if has else f" · the chosen model has no {group} control"))
    return out, info, session


def build_mirror_tab(shelf, groups: list, model: gr.Dropdown) -> None:
    """Lay out the mirror (inside a ``gr.Tab``) and wire its stream: ``groups`` are the page's, ``model`` its
    picker."""
    gr.Markdown("Point the webcam at the class: every face is edited as it moves. Faces are found every "
                f"{DETECT_EVERY} frames and followed in between; a stream stops after {TIME_LIMIT} s (press "
                "record again).")
    with gr.Row():
        with gr.Column():
            cam = gr.Image(sources=["webcam"], streaming=True, type="pil", label="Webcam", elem_id="mirror-cam")
            group = gr.Radio([g.name for g in groups], value=groups[0].name if groups else None,
                             label="What to change", elem_id="mirror-group")
            choice = gr.Radio(["Keep", *(groups[0].options() if groups else [])], value="Keep",
                              label="Change it to", elem_id="mirror-choice")
            strength = gr.Slider(0, 1.5, value=1.0, step=0.05, label="Strength")
        with gr.Column():
            mirror = gr.Image(label="Mirror", interactive=False, elem_id="mirror-out")
            info = gr.Markdown(elem_id="mirror-info")
    session = gr.State(None, time_to_live=TIME_LIMIT * 2)
    options = {g.name: ["Keep", *g.options()] for g in groups}
    group.change(lambda g: gr.Radio(choices=options.get(g, ["Keep"]), value="Keep"), group, choice, queue=False,
                 api_visibility="private")
    cam.stream(partial(mirror_frame, shelf), [cam, session, group, choice, strength, model], [mirror, info, session],
               stream_every=STREAM_EVERY, time_limit=TIME_LIMIT, concurrency_limit=1, concurrency_id="mirror",
               api_visibility="private", show_progress="hidden")
