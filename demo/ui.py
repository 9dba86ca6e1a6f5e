"""The page: ``build_demo(pipeline, status)`` lays out the widgets and wires their events, nothing else.

The controls come from the models' domain schemas, so any trained model gets the right page: one choice and one
strength slider per group (hair colour, gender, age, expression, any custom attribute). A picker switches between
the models of a ``ModelShelf`` (``demo/models.py``) and shows the controls the chosen one has. What the events do
lives in ``demo/handlers.py`` (and ``controls``, ``files``, ``cycle``, ``memory``); per-visitor data lives in
``gr.State``.
"""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import gradio as gr

from stargan_core.classroom.learn import Lesson
from stargan_core.domains import CELEBA5
from stargan_core.weights.hub import shipped_release

from . import handlers
from .controls import MAX_STRENGTH, NOT_SURE, api_name, group_title
from .cycle import cycle_event
from .learn_tab import build_learn_tab
from .memory import bound_memory
from .mirror import build_mirror_tab
from .models import ModelOption, ModelShelf, shipped_groups

EXAMPLES = Path(__file__).resolve().parent / "examples"
CLASSROOM = (Path(__file__).resolve().parent / "classroom.md").read_text()
MAX_UPLOAD = "20mb"  # launch(max_file_size=...): bigger files are refused before they reach the model
EDIT_API = ("Edit the faces in `photo` (all of them, or those named in `faces`, e.g. [\"Face 2\"]) towards the "
            "chosen values; each strength goes from 0 (no change) through 1 (as trained) to 1.5. Returns the "
            "before/after PNGs, the download, each face's crops, what the discriminator thinks and the timing.")
MODEL_WORK = dict(concurrency_id="model", concurrency_limit=2)  # at most 2 jobs on the model at once (2 vCPUs)
CACHE_EXPIRY = (900, 7200)  # delete_cache: every 15 min, delete uploads and results older than 2 h (> session TTL)


def _readme_link(section: str) -> str:
    """A link to a README section: the Space's README page on Hugging Face, else the README.md file's name."""
    space = os.environ.get("SPACE_ID")
    return (f"[the README](https://huggingface.co/spaces/{space}/blob/main/README.md#{section})" if space
            else "README.md")


def _group_controls(groups) -> dict:
    """One choice + strength slider per group; returns {api name: component}, the edit endpoint's parameters."""
    controls = {}
    for g in groups:
        name = api_name(g)
        with gr.Row(equal_height=True):
            controls[name] = gr.Radio(["Keep", *g.options()], value="Keep", label=group_title(g),
                                      scale=3, elem_id=f"control-{name}")
            controls[f"{name}_strength"] = gr.Slider(0, MAX_STRENGTH, value=1.0, step=0.05,
                                                     label="Strength", scale=2)
    return controls


def _page_groups(shelf: ModelShelf, schema) -> list:
    """The groups the page has controls for: the default model's, then any other the shipped release has (when
    the picker offers it)."""
    groups, names = list(schema.groups), {g.name for g in schema.groups}
    shipped = shipped_release()
    if shipped is not None and str(shipped) in {o.source for o in shelf.options.values()}:
        groups += [g for g in shipped_groups() if g.name not in names]
    return groups


def _current_controls(groups) -> dict:
    """For models without a discriminator: what each face is now, per group ({"now_hair": radio, ...})."""
    return {f"now_{api_name(g)}": gr.Radio([NOT_SURE, *g.options()], value=NOT_SURE,
                                                    label=group_title(g)) for g in groups}


def build_demo(pipeline, status: str = "", cache_expiry: tuple[int, int] = CACHE_EXPIRY,
               shelf: ModelShelf | None = None) -> gr.Blocks:
    """The StarGAN studio page for ``pipeline`` (None when no model could be loaded: ``status`` says why).

    ``shelf`` holds the models a visitor may pick (``pipeline`` is its default); without one the page serves
    ``pipeline`` alone. ``cache_expiry`` is Gradio's ``delete_cache`` (frequency, age) in seconds: uploads and
    results older than ``age`` are deleted every ``frequency``, so a Space that runs for weeks does not fill its
    disk."""
    bound_memory()  # process-wide: few malloc arenas, so memory stays flat under concurrent users
    if shelf is None:
        only = ModelOption("This server's model", "", status)
        shelf = ModelShelf([only] if pipeline is not None else [], {only.label: (pipeline, status)})
    schema = pipeline.config.schema if pipeline is not None else CELEBA5
    has_d = pipeline is not None and pipeline.D is not None
    groups = _page_groups(shelf, schema)
    face_groups = [g for g in groups if g.kind != "categorical"]
    expression_groups = [g for g in groups if g.kind == "categorical"]
    no_expressions = ("*Expressions:* this model was not trained with facial expressions; to get them, train a "
                      "joint model (CelebA + the London set or RaFD) as the *Training* section of "
                      f"{_readme_link('training')} explains and load it with STARGAN_MODEL.")

    with gr.Blocks(title="StarGAN studio", delete_cache=cache_expiry) as demo:
        session = gr.State(None, time_to_live=1800)  # this visitor's photo and faces (handlers.Session)
        classroom_open = gr.State(False)
        gr.Markdown("# StarGAN studio\nChange hair colour, gender, age or expression on your own photo with one "
                    "generator ([StarGAN](https://arxiv.org/abs/1711.09020), Choi et al., CVPR 2018).")
        status_line = gr.Markdown(("**Model:** " if pipeline is not None else "**No model:** ") + status,
                                  elem_id="status")
        chosen = gr.State(shelf.default)  # this visitor's model: the picker goes back to it when one is refused
        with gr.Accordion("Choose a model", open=False, visible=len(shelf.options) > 1):
            model = gr.Dropdown(list(shelf.options), value=shelf.default, label="Model", elem_id="model")
            gr.Markdown(shelf.describe())
        with gr.Row():
            with gr.Column(scale=2):
                photo = gr.Image(label="Your photo", sources=["upload", "webcam", "clipboard"], type="filepath",
                                 image_mode=None, height=320, elem_id="photo")
                gr.Examples([str(EXAMPLES / f) for f in ("astronaut.jpg", "camera.jpg", "chelsea.jpg")],
                            inputs=photo, label="Example photos (public domain / CC0)")
                whole = gr.Checkbox(False, label="The whole photo is one face (a close-up portrait)")
                picker = gr.CheckboxGroup([], label="Faces to edit", visible=False,
                                          info="Untick a face to leave it as it is.")
                gr.Markdown("Pick a change; its strength goes from 0 (none) through 1 (as trained) to 1.5.")
                controls = _group_controls(face_groups)
                with gr.Group():
                    controls |= _group_controls(expression_groups)
                    note = gr.Markdown(no_expressions, elem_id="no-expressions",
                                       visible=not any(g.kind == "categorical" for g in schema.groups))
                if pipeline is not None and not has_d:
                    with gr.Accordion("What the face is now (this model cannot tell by itself)", open=True):
                        controls |= _current_controls(schema.groups)
            with gr.Column(scale=3):
                slider = gr.ImageSlider(label="Before / after (drag the bar)", type="filepath", format="png",
                                        buttons=["download", "fullscreen"], elem_id="result")
                info = gr.Markdown(label="Timing", elem_id="info")
                download = gr.DownloadButton("Download the edited photo (PNG)")
                crops = gr.Gallery(label="Each face, before and after", columns=6, fit_columns=False, height=200,
                                   object_fit="contain")
                verdict = gr.Label(label="What the discriminator thinks of the first face (before the edit)",
                                   show_heading=False, visible=has_d)
        with gr.Accordion("All domains at once (the paper's figure for your photo)", open=False):
            grid_button = gr.Button("Show every domain")
            grid = gr.Image(label="Input, then one column per domain", type="filepath", format="png",
                            interactive=False, height=260, elem_id="all-domains")
        with gr.Accordion("Classroom: how StarGAN works", open=False) as classroom:
            gr.Markdown("**The cycle for the first face of your latest edit:** "
                        "x -> G(x, c_trg) -> G(G(x, c_trg), c_org)")
            with gr.Row():
                x_real = gr.Image(label="x: your face", interactive=False, height=200)
                x_fake = gr.Image(label="G(x, c_trg): the edit", interactive=False, height=200)
                x_rec = gr.Image(label="G(G(x, c_trg), c_org): and back", interactive=False, height=200)
            rec_error = gr.Markdown()
            gr.Markdown(CLASSROOM)
        with gr.Tabs():  # live in the classroom: the webcam mirror, and one StarGAN learning for the whole server
            with gr.Tab("Webcam mirror", id="mirror"):
                build_mirror_tab(shelf, groups, model)
            with gr.Tab("Watch it learn", id="learn"):
                build_learn_tab(Lesson())

        # ----- events: a new photo is opened (decoded, faces found) once; every control change then edits -----
        private = dict(api_visibility="private", **MODEL_WORK)
        edit_io = dict(fn=partial(handlers.edit_event, shelf, expiry=cache_expiry),
                       inputs=[photo, whole, session, picker],
                       outputs=[session, slider, download, crops, verdict, info],
                       inputs_kwargs={"model": model, **controls},
                       preprocess=False)  # the raw upload goes to images.load_image, not to Gradio's decoder
        cycle = partial(cycle_event, shelf)
        cycle_io = [x_real, x_fake, x_rec, rec_error]
        opened = gr.on([photo.change, whole.input], partial(handlers.open_event, shelf), [photo, whole, model],
                       [session, picker], preprocess=False, **private)
        edited = gr.on([picker.input, *(c.input for c in controls.values() if isinstance(c, gr.Radio)),
                        *(c.release for c in controls.values() if isinstance(c, gr.Slider))],
                       api_name="edit", api_description=EDIT_API, trigger_mode="always_last", **edit_io,
                       **MODEL_WORK)
        for done in (opened.success(**edit_io, **private), edited):  # the classroom follows edits while open
            done.success(cycle, [session, classroom_open, model], cycle_io, **private)
        classroom.expand(lambda: True, None, classroom_open, queue=False, api_visibility="private").then(
            cycle, [session, classroom_open, model], cycle_io, **private)
        classroom.collapse(lambda: False, None, classroom_open, queue=False, api_visibility="private")
        grid_button.click(partial(handlers.all_domains_event, shelf), [session, model], grid, **private)
        page_controls = [(g, controls[api_name(g)], controls[f"{api_name(g)}_strength"])
                         for g in groups]
        shown = [c for _, *cs in page_controls for c in cs]  # each group's choice and strength
        switched = model.input(partial(handlers.switch_model, shelf, page_controls), [model, chosen],
                               [model, chosen, status_line, note, verdict, *shown], **private)
        switched.success(**(edit_io | {"fn": partial(handlers.edit_event, shelf, expiry=cache_expiry, quiet=True)}),
                         **private)
    return demo.queue(max_size=64)
