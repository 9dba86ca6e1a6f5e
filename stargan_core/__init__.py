"""StarGAN studio: one generator, many domains (Choi et al., CVPR 2018), from training to a browser demo.

The folders are the layers, in data-flow order: ``config`` and ``domains`` (what the label vector means) ->
``nets/`` (G, D, the losses) -> ``weights/`` (files, surgery, the Hub) -> ``data/`` -> ``training/`` -> ``edit/``
(a person's photo: faces, blend, the pipeline) -> ``evaluation/`` -> ``classroom/``; ``cli`` and ``demo/`` sit on
top. A module imports its own layer and those below, never one above (docs/ARCHITECTURE.md).
"""
__version__ = "0.1.0"
