"""Weights on disk and on the Hub: ``formats`` (every file layout read safely, releases written), ``surgery`` (a
release's weights made to fit another architecture), ``hub`` (the one lookup order), ``card`` (the model card) and
``space`` (the app published as a Space)."""
