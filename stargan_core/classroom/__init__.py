"""The classroom's live training: ``shapes`` (a toy world of two datasets with an analytic checker) and ``learn``
(a small StarGAN trained on it in minutes, watched while it learns)."""
