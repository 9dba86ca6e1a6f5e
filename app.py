"""StarGAN studio in a browser (also the Hugging Face Space entry point): load the model once, build the page, serve.

The model is ``$STARGAN_MODEL`` or the default Hub model, else the release shipped in ``checkpoints/``; the page
says which in one sentence, and its picker offers the others (``demo/models.py``). Host and port come from Gradio's
usual GRADIO_SERVER_NAME / GRADIO_SERVER_PORT.
"""
from stargan_core.edit.inference import preload_exporters

preload_exporters()  # ONNX's imports overlap Gradio's below, not the start-up race's 2 s budget

from demo.models import ModelShelf, label_of, model_options  # noqa: E402
from demo.ui import MAX_UPLOAD, build_demo  # noqa: E402
from stargan_core.edit.pipeline import StarGANPipeline  # noqa: E402
from stargan_core.weights.formats import CheckpointError  # noqa: E402
from stargan_core.weights.hub import load_model  # noqa: E402


def load_pipeline() -> tuple[StarGANPipeline | None, str, ModelShelf | None]:
    """The pipeline, the page's status sentence and the model picker's shelf; (None, why, None) when no model can
    be loaded at all."""
    try:
        m = load_model()
    except CheckpointError as e:  # the page still opens and says what to do
        return None, str(e), None
    pipeline, options = StarGANPipeline(m.G, m.config, D=m.D), model_options()
    print(f"generator: {pipeline.path.summary()}", flush=True)  # the start-up race, for whoever hosts it
    label = label_of(options, m.source, m.fallback)
    return pipeline, m.status, ModelShelf(options, {label: (pipeline, m.status)}) if label else None


if __name__ == "__main__":
    pipeline, status, shelf = load_pipeline()
    build_demo(pipeline, status, shelf=shelf).launch(max_file_size=MAX_UPLOAD)
