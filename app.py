"""StarGAN studio in a browser (also the Hugging Face Space entry point): load the model once, build the page, serve.

The model is ``$STARGAN_MODEL``, else the release shipped in ``checkpoints/``; the page's picker offers the Hub's
models too (``demo/models.py``) and says which is loaded in one sentence. Host and port come from Gradio's usual
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT.
"""
from demo.models import ModelShelf, model_options
from demo.ui import MAX_UPLOAD, build_demo
from stargan_core.edit.pipeline import StarGANPipeline
from stargan_core.weights.formats import CheckpointError
from stargan_core.weights.hub import load_model


def load_pipeline() -> tuple[StarGANPipeline | None, str]:
    """The default pipeline and the page's status sentence; (None, why) when no model can be loaded at all."""
    try:
        m = load_model()
    except CheckpointError as e:  # the page still opens and says what to do
        return None, str(e)
    return StarGANPipeline(m.G, m.config, D=m.D), m.status


if __name__ == "__main__":
    pipeline, status = load_pipeline()
    options = model_options()
    shelf = ModelShelf(options, {options[0].label: (pipeline, status)} if pipeline and options else None)
    build_demo(pipeline, status, shelf=shelf if pipeline else None).launch(max_file_size=MAX_UPLOAD)
