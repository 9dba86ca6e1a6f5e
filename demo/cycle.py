"""The classroom panel's cycle: x -> G(x, c_trg) -> G(G(x, c_trg), c_org) for the first face of the latest edit.

It shows the paper's reconstruction loss at work on the visitor's own face, with the generator the pipeline runs.
"""
from __future__ import annotations

import gradio as gr
import torch
from PIL import Image

from stargan_core.edit.images import to_pil, to_tensor

from .handlers import Session, pick


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
