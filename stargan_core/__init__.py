"""StarGAN studio: one generator, many domains (Choi et al., CVPR 2018), from training to a browser demo.

Data flow, one module per concept: ``config`` -> ``domains`` -> ``model`` -> ``losses`` -> ``data`` -> ``train``
-> ``checkpoint``/``hub`` -> ``faces`` -> ``pipeline`` -> ``evaluate``; ``cli`` and ``demo/`` sit on top.
"""
__version__ = "0.1.0"
