"""The watch-it-learn tab: a button trains a small StarGAN on the shapes world while the class watches.

All the work is ``stargan_core.classroom.learn.Lesson`` (the same code as notebook 03); this file lays out the knobs
and the views and refreshes them every couple of seconds with a ``gr.Timer``. One ``Lesson`` serves the whole server: a
second visitor pressing *Train* while a class trains is told how long to wait, and sees the same run.
"""
from __future__ import annotations

import gradio as gr
import pandas as pd

from stargan_core.classroom.learn import KNOB_HELP, Knobs, Lesson

REFRESH = 2.0  # s between two refreshes of the page's views


def progress_views(lesson: Lesson) -> tuple:
    """The current run as (status line, loss curves, figure, accuracy per domain)."""
    p = lesson.progress()
    if p.state == "idle":
        return "Press **Train** to start.", None, None, None
    line = f"**{p.state}** · step {p.step} of {p.steps} · {p.seconds:.0f} s"
    if p.accuracy:
        line += f" · checker accuracy {p.mean_accuracy:.0%} (all domains)"
    if p.reached_90:
        line += f" · reached 90% after {p.reached_90[0]:.0f} s (step {p.reached_90[1]})"
    if p.state == "failed":
        line += f" · {p.message}"
    curves = pd.DataFrame(p.losses) if p.losses else None
    return line, curves, p.figure, dict(p.accuracy) or None


def start(lesson: Lesson, lambda_cls: float, lambda_rec: float, n_critic: float, steps: float, seed: float) -> None:
    refused = lesson.start(Knobs(float(lambda_cls), float(lambda_rec), int(n_critic), int(steps), int(seed)))
    if refused:
        gr.Warning(refused)


def build_learn_tab(lesson: Lesson) -> None:
    """Lay out the tab (inside a ``gr.Tab``) for the server's one ``lesson``."""
    d = Knobs()
    gr.Markdown("Train one generator on two small datasets of shapes (colour and size of squares; form of "
                "shapes), joined by the mask vector, and watch it learn every domain. A checker reads each "
                "translation back from its pixels. One class trains at a time; everyone sees the same run.")
    with gr.Row():
        with gr.Column(scale=1):
            knobs = [gr.Slider(0, 5, value=d.lambda_cls, step=0.1, label="lambda_cls", info=KNOB_HELP["lambda_cls"]),
                     gr.Slider(0, 30, value=d.lambda_rec, step=1, label="lambda_rec", info=KNOB_HELP["lambda_rec"]),
                     gr.Slider(1, 5, value=d.n_critic, step=1, label="n_critic", info=KNOB_HELP["n_critic"]),
                     gr.Slider(20, 3000, value=d.steps, step=10, label="steps", info=KNOB_HELP["steps"]),
                     gr.Number(d.seed, precision=0, label="seed", info="Another seed draws other initial weights.")]
            with gr.Row():
                train = gr.Button("Train", variant="primary", elem_id="learn-train")
                stop = gr.Button("Stop", elem_id="learn-stop")
        with gr.Column(scale=2):
            status = gr.Markdown("Press **Train** to start.", elem_id="learn-status")
            curves = gr.LinePlot(x="step", y="value", color="loss", label="G's three losses", height=220,
                                 elem_id="learn-curves")
            figure = gr.Image(label="The paper's figure: input, then every domain", interactive=False,
                              elem_id="learn-figure")
            accuracy = gr.Label(label="Checker accuracy per domain", num_top_classes=7, elem_id="learn-accuracy")
    views = [status, curves, figure, accuracy]
    refresh = dict(fn=lambda: progress_views(lesson), outputs=views, queue=False, api_visibility="private",
                   show_progress="hidden")
    train.click(lambda *k: start(lesson, *k), knobs, None, queue=False, api_visibility="private").then(**refresh)
    stop.click(lesson.stop, None, None, queue=False, api_visibility="private")
    gr.Timer(REFRESH).tick(**refresh)
