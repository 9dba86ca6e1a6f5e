"""``from stargan_core.pipeline import StarGANPipeline`` (the README, notebooks, model cards): the pipeline lives in
``edit/pipeline.py``; this name stays so that code written against it keeps working."""
from .edit.pipeline import FaceEdit, NoFaceError, Result, StarGANPipeline

__all__ = ["FaceEdit", "NoFaceError", "Result", "StarGANPipeline"]
